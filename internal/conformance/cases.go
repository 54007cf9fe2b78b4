package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/protocol"
)

// A case checks one rule of docs/protocol.md. run returns what it checked, or why it failed.
type testCase struct {
	name string
	run  func(ctx context.Context, k *kit) (string, error)
	// asks marks the case that waits for a decision query: it gets Config.QueryTimeout more.
	asks bool
}

// cases run in this order; each uses sagas of its own.
var cases = []testCase{
	{"happy-path", happyPath, false},
	{"duplicates", duplicates, false},
	{"compensate-first", compensateFirst, false},
	{"failure-reopened", failureReopened, false},
	{"malformed", malformedCommands, false},
	{"unknown-action", unknownAction, false},
	{"retry-stores-nothing", retryStoresNothing, false},
	{"twopc-commit", twoPCCommit, false},
	{"twopc-abort", twoPCAbort, false},
	{"twopc-abort-first", twoPCAbortFirst, false},
	{"twopc-decision-query", twoPCDecisionQuery, true},
}

// Action names of the test contract (docs/conformance.md).
const (
	actionOK        = "check.ok"
	actionFail      = "check.fail"
	actionFailFirst = "check.fail-first"
	actionRetryOnce = "check.retry-once"
	actionEcho      = "check.echo"
	actionUndo      = "check.undo"
)

// command is a step command of a new saga for the worker under test.
func (k *kit) command(kind protocol.Kind, action string, attempt int) *protocol.StepCommand {
	return &protocol.StepCommand{
		SagaID: uuid.NewString(), Step: "check", StepIndex: 0, Kind: kind,
		Participant: k.cfg.Participant, Action: action, Attempt: attempt,
		Input: json.RawMessage(`{"probe":"conformance"}`), TimeoutMillis: k.cfg.CaseTimeout.Milliseconds(),
	}
}

// send publishes cmd and waits for its reply, checked against §4 and §6.
func (k *kit) send(ctx context.Context, cmd *protocol.StepCommand) (protocol.StepReply, []byte, error) {
	m, err := cmd.Encode()
	if err != nil {
		return protocol.StepReply{}, nil, err
	}
	if err := k.publish(ctx, m, k.cfg.Participant); err != nil {
		return protocol.StepReply{}, nil, err
	}
	d, err := k.reply(ctx, m.MessageID)
	if err != nil {
		return protocol.StepReply{}, nil, err
	}
	if err := checkReplyEnvelope(d, m.MessageID); err != nil {
		return protocol.StepReply{}, nil, err
	}
	var r protocol.StepReply
	if err := json.Unmarshal(d.Body, &r); err != nil {
		return r, d.Body, fmt.Errorf("reply to %s is not a JSON object: %v", m.MessageID, err)
	}
	if !r.Outcome.Answers(cmd.Kind) {
		return r, d.Body, fmt.Errorf("reply to %s has outcome %q, which does not answer a %s", m.MessageID, r.Outcome, cmd.Kind)
	}
	return r, d.Body, nil
}

// checkReplyEnvelope checks a reply's properties and version header (§4).
func checkReplyEnvelope(d amqp.Delivery, commandID string) error {
	var bad []string
	want := func(what, got, exp string) {
		if got != exp {
			bad = append(bad, fmt.Sprintf("%s is %q, want %q", what, got, exp))
		}
	}
	want("type", d.Type, protocol.TypeReply)
	want("message_id", d.MessageId, "reply:"+commandID)
	want("correlation_id", d.CorrelationId, commandID)
	want("content_type", d.ContentType, protocol.ContentType)
	want("routing key", d.RoutingKey, protocol.RoutingKeyReplies)
	v, _ := d.Headers[protocol.HeaderVersion].(string)
	want("header "+protocol.HeaderVersion, v, protocol.Version)
	if d.DeliveryMode != amqp.Persistent {
		bad = append(bad, fmt.Sprintf("delivery_mode is %d, want 2 (persistent)", d.DeliveryMode))
	}
	if len(bad) > 0 {
		return fmt.Errorf("reply to %s: %s", commandID, strings.Join(bad, "; "))
	}
	return nil
}

// applied reads the contract's effect counter from an output: {"applied": n, ...}.
func applied(r protocol.StepReply) (int, error) {
	var out struct {
		Applied *int `json:"applied"`
	}
	if err := json.Unmarshal(r.Output, &out); err != nil || out.Applied == nil {
		return 0, fmt.Errorf("output %s has no integer \"applied\" (docs/conformance.md)", r.Output)
	}
	return *out.Applied, nil
}

func wantOutcome(r protocol.StepReply, want protocol.Outcome, what string) error {
	if r.Outcome != want {
		return fmt.Errorf("%s: outcome %q (error %q), want %q", what, r.Outcome, r.Error, want)
	}
	return nil
}

func happyPath(ctx context.Context, k *kit) (string, error) {
	cmd := k.command(protocol.KindAction, actionEcho, 1)
	r, _, err := k.send(ctx, cmd)
	if err != nil {
		return "", err
	}
	if err := wantOutcome(r, protocol.OutcomeSucceeded, actionEcho); err != nil {
		return "", err
	}
	var out struct {
		Input   json.RawMessage `json:"input"`
		Applied int             `json:"applied"`
	}
	if err := json.Unmarshal(r.Output, &out); err != nil || !jsonEqual(out.Input, cmd.Input) || out.Applied != 1 {
		return "", fmt.Errorf("%s output %s, want {\"input\":%s,\"applied\":1}", actionEcho, r.Output, cmd.Input)
	}
	return "reply type, ids, content type, persistence, version header and echoed input as specified", nil
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func duplicates(ctx context.Context, k *kit) (string, error) {
	cmd := k.command(protocol.KindAction, actionOK, 1)
	var first []byte
	for i := 1; i <= 3; i++ {
		r, body, err := k.send(ctx, cmd)
		if err != nil {
			return "", fmt.Errorf("copy %d: %w", i, err)
		}
		if err := wantOutcome(r, protocol.OutcomeSucceeded, fmt.Sprintf("copy %d of %s", i, actionOK)); err != nil {
			return "", err
		}
		n, err := applied(r)
		if err != nil {
			return "", err
		}
		if n != 1 {
			return "", fmt.Errorf("copy %d of one command: the effect was applied %d times, want once (the duplicate ran the handler again instead of answering with the stored reply)", i, n)
		}
		if i == 1 {
			first = body
		} else if !bytes.Equal(body, first) {
			return "", fmt.Errorf("copy %d got reply body %s, the first got %s: a duplicate must get the stored reply", i, body, first)
		}
	}
	return "3 copies of one command: the same reply body, the effect applied once", nil
}

func compensateFirst(ctx context.Context, k *kit) (string, error) {
	comp := k.command(protocol.KindCompensate, actionUndo, 1)
	r, _, err := k.send(ctx, comp)
	if err != nil {
		return "", err
	}
	if err := wantOutcome(r, protocol.OutcomeSucceeded, "compensation before its action"); err != nil {
		return "", err
	}
	if len(r.Output) > 0 && string(r.Output) != "null" {
		return "", fmt.Errorf("compensation before its action answered output %s; it must be a no-op without output", r.Output)
	}
	act := *comp
	act.Kind, act.Action = protocol.KindAction, actionOK
	r, _, err = k.send(ctx, &act)
	if err != nil {
		return "", err
	}
	if r.Outcome != protocol.OutcomeFailed || r.Error != "compensated before action" {
		return "", fmt.Errorf("late action after its compensation: outcome %q error %q, want failed \"compensated before action\"", r.Outcome, r.Error)
	}
	return "no-op compensation, then the late action refused", nil
}

func failureReopened(ctx context.Context, k *kit) (string, error) {
	cmd := k.command(protocol.KindAction, actionFail, 1)
	r, _, err := k.send(ctx, cmd)
	if err != nil {
		return "", err
	}
	if err := wantOutcome(r, protocol.OutcomeFailed, actionFail); err != nil {
		return "", err
	}
	cmd = k.command(protocol.KindAction, actionFailFirst, 1)
	if r, _, err = k.send(ctx, cmd); err != nil {
		return "", err
	}
	if err := wantOutcome(r, protocol.OutcomeFailed, actionFailFirst+" attempt 1"); err != nil {
		return "", err
	}
	if r, _, err = k.send(ctx, cmd); err != nil {
		return "", err
	}
	if err := wantOutcome(r, protocol.OutcomeFailed, "duplicate of "+actionFailFirst+" attempt 1"); err != nil {
		return "", err
	}
	cmd.Attempt = 2
	if r, _, err = k.send(ctx, cmd); err != nil {
		return "", err
	}
	if err := wantOutcome(r, protocol.OutcomeSucceeded, actionFailFirst+" attempt 2 (a later attempt reopens a business failure)"); err != nil {
		return "", err
	}
	if n, err := applied(r); err != nil || n != 1 {
		return "", fmt.Errorf("attempt 2 after a business failure: applied %d (%v), want 1: the failed attempt's effect was not rolled back", n, err)
	}
	return "failed stored, duplicate answered failed, attempt 2 reopened and applied once", nil
}

func malformedCommands(ctx context.Context, k *kit) (string, error) {
	good := k.command(protocol.KindAction, actionOK, 1)
	notJSON, _ := good.Encode()
	notJSON.MessageID = protocol.CommandRef{SagaID: uuid.NewString(), StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID()
	notJSON.Body = []byte("this is not JSON")
	huge, _ := k.command(protocol.KindAction, actionOK, 1).Encode()
	huge.Body = append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), protocol.MaxBodyBytes)...), `"}`...)
	for _, m := range []protocol.Message{notJSON, huge} {
		if err := k.publish(ctx, m, k.cfg.Participant); err != nil {
			return "", err
		}
		if err := k.deadLetter(ctx, m.MessageID); err != nil {
			return "", err
		}
	}
	r, _, err := k.send(ctx, good)
	if err != nil {
		return "", fmt.Errorf("after the malformed commands: %w", err)
	}
	if err := wantOutcome(r, protocol.OutcomeSucceeded, "the command after the malformed ones"); err != nil {
		return "", err
	}
	for _, m := range []protocol.Message{notJSON, huge} {
		if err := k.noReply(m.MessageID); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("a body that is not JSON and one over %d bytes dead-lettered unanswered; the next command answered", protocol.MaxBodyBytes), nil
}

func unknownAction(ctx context.Context, k *kit) (string, error) {
	m, err := k.command(protocol.KindAction, "check.no-such-action", 1).Encode()
	if err != nil {
		return "", err
	}
	if err := k.publish(ctx, m, k.cfg.Participant); err != nil {
		return "", err
	}
	if err := k.deadLetter(ctx, m.MessageID); err != nil {
		return "", err
	}
	if err := k.noReply(m.MessageID); err != nil {
		return "", err
	}
	return "a command for an action without a handler dead-lettered unanswered", nil
}

func retryStoresNothing(ctx context.Context, k *kit) (string, error) {
	cmd := k.command(protocol.KindAction, actionRetryOnce, 1)
	r, _, err := k.send(ctx, cmd)
	if err != nil {
		return "", err
	}
	if err := wantOutcome(r, protocol.OutcomeRetry, "first delivery of "+actionRetryOnce); err != nil {
		return "", err
	}
	if r, _, err = k.send(ctx, cmd); err != nil {
		return "", err
	}
	if err := wantOutcome(r, protocol.OutcomeSucceeded, "second delivery of the same attempt of "+actionRetryOnce+" (a retry stores nothing)"); err != nil {
		return "", err
	}
	if n, err := applied(r); err != nil || n != 1 {
		return "", fmt.Errorf("after a retry: applied %d (%v), want 1: the retried delivery left an effect", n, err)
	}
	return "retry answered, nothing stored: the same attempt then succeeded, applied once", nil
}
