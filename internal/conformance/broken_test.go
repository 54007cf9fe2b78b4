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

// startReapplyingWorker runs a worker without a barrier, written against the wire directly: it
// dead-letters what does not decode and answers every other command succeeded, counting its
// effect in memory on every delivery, duplicates included. It runs no 2PC queue.
func startReapplyingWorker(t *testing.T, amqpURL string) {
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
		applied := map[string]int{}
		for d := range ds {
			cmd, err := protocol.DecodeStepCommand(protocol.Message{MessageID: d.MessageId, Type: d.Type, Body: d.Body})
			if err != nil {
				_ = d.Reject(false)
				continue
			}
			applied[cmd.SagaID+"/"+cmd.Step]++ // the bug: a duplicate applies its effect again
			out := fmt.Sprintf(`{"applied":%d}`, applied[cmd.SagaID+"/"+cmd.Step])
			if cmd.Action == actionEcho {
				out = fmt.Sprintf(`{"input":%s,"applied":%d}`, cmd.Input, applied[cmd.SagaID+"/"+cmd.Step])
			}
			m, _ := protocol.EncodeStepReply(cmd, protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(out)})
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
