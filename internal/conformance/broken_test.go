package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
)

// startReapplyingWorker runs a worker without a barrier: it answers every command succeeded,
// counting its effect in memory on every delivery, duplicates included.
func startReapplyingWorker(t *testing.T, amqpURL string) {
	t.Helper()
	applied := map[string]int{}
	startWireWorker(t, amqpURL, func(cmd *protocol.StepCommand) protocol.StepReply {
		applied[cmd.SagaID+"/"+cmd.Step]++ // the bug: a duplicate applies its effect again
		out := fmt.Sprintf(`{"applied":%d}`, applied[cmd.SagaID+"/"+cmd.Step])
		if cmd.Action == actionEcho {
			out = fmt.Sprintf(`{"input":%s,"applied":%d}`, cmd.Input, applied[cmd.SagaID+"/"+cmd.Step])
		}
		return protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(out)}
	})
}

// startNeverReopeningWorker runs a worker whose barrier (in memory) replays the first decision of
// a (saga, step, kind) to every later command, later attempts included: a business failure is
// never reopened, as in a worker that left out protocol.md §8's reopen.
func startNeverReopeningWorker(t *testing.T, amqpURL string) {
	t.Helper()
	stored := map[string]protocol.StepReply{}
	startWireWorker(t, amqpURL, func(cmd *protocol.StepCommand) protocol.StepReply {
		key := cmd.SagaID + "/" + cmd.Step + "/" + string(cmd.Kind)
		if r, ok := stored[key]; ok {
			return r // the bug: attempt 2 of a failed step gets attempt 1's failure
		}
		r := protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"applied":1}`)}
		if cmd.Action == actionFail || cmd.Action == actionFailFirst && cmd.Attempt == 1 {
			r = protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "failed as asked"}
		}
		stored[key] = r
		return r
	})
}

// startWireWorker runs a worker written against the wire directly, for the kit to find broken:
// it dead-letters what does not decode and answers every other command with decide's reply, on
// one goroutine. It runs no 2PC queue.
func startWireWorker(t *testing.T, amqpURL string, decide func(*protocol.StepCommand) protocol.StepReply) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(protocol.ExchangeCommands, "direct", true, false, false, false, nil))
	q := protocol.ParticipantQueue(checked)
	_, err = ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-dead-letter-exchange": protocol.ExchangeDead})
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(q, checked, protocol.ExchangeCommands, false, nil))
	ds, err := ch.Consume(q, "", false, false, false, false, nil)
	require.NoError(t, err)
	go func() {
		for d := range ds {
			cmd, err := protocol.DecodeStepCommand(protocol.Message{MessageID: d.MessageId, Type: d.Type, Body: d.Body})
			if err != nil {
				_ = d.Reject(false)
				continue
			}
			m, _ := protocol.EncodeStepReply(cmd, decide(cmd))
			headers := amqp.Table{}
			for k, v := range m.Headers {
				headers[k] = v
			}
			_ = ch.PublishWithContext(context.Background(), protocol.ExchangeReplies, protocol.RoutingKeyReplies, false, false, amqp.Publishing{
				MessageId: m.MessageID, CorrelationId: m.CorrelationID, Type: m.Type, ContentType: m.ContentType,
				DeliveryMode: amqp.Persistent, Headers: headers, Body: m.Body,
			})
			_ = d.Ack(false)
		}
	}()
}

// TestReapplyingWorkerFails runs the kit against a worker whose duplicates apply their effect
// again: the duplicates case must fail and say so, while the happy path passes.
func TestReapplyingWorkerFails(t *testing.T) {
	amqpURL := testenv.VHost(t)
	startReapplyingWorker(t, amqpURL)
	var out strings.Builder
	results, err := Run(context.Background(), Config{AMQPURL: amqpURL, Participant: checked, CaseTimeout: 2 * time.Second, QueryTimeout: time.Second}, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())
	byName := map[string]Result{}
	for _, r := range results {
		byName[r.Name] = r
	}
	require.True(t, byName["happy-path"].Passed, byName["happy-path"].Why)
	dup := byName["duplicates"]
	require.False(t, dup.Passed)
	require.Contains(t, dup.Why, "copy 2 of one command: the effect was applied 2 times, want once")
	require.False(t, byName["compensate-first"].Passed, "a worker without a barrier cannot refuse a late action")
	require.False(t, byName["twopc-commit"].Passed)
	require.Contains(t, byName["twopc-commit"].Why, "is the worker running on this vhost?")
	require.Contains(t, out.String(), "FAIL  duplicates")
}

// TestNeverReopeningWorkerFails runs the kit against a worker that replays a stored business
// failure to a later attempt: failure-reopened must fail and say why, while duplicates pass.
func TestNeverReopeningWorkerFails(t *testing.T) {
	amqpURL := testenv.VHost(t)
	startNeverReopeningWorker(t, amqpURL)
	var out strings.Builder
	results, err := Run(context.Background(), Config{AMQPURL: amqpURL, Participant: checked, CaseTimeout: 2 * time.Second, QueryTimeout: time.Second}, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())
	byName := map[string]Result{}
	for _, r := range results {
		byName[r.Name] = r
	}
	require.True(t, byName["duplicates"].Passed, byName["duplicates"].Why)
	reopened := byName["failure-reopened"]
	require.False(t, reopened.Passed)
	require.Contains(t, reopened.Why, "attempt 2 (a later attempt reopens a business failure)")
	require.Contains(t, out.String(), "FAIL  failure-reopened")
}
