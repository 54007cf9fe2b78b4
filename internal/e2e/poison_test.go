package e2e_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// garbage returns a message with the given id, type, correlation id and body.
func garbage(id, typ, corr, body string) protocol.Message {
	return protocol.Message{MessageID: id, Type: typ, CorrelationID: corr, ContentType: protocol.ContentType, Body: []byte(body)}
}

// TestGarbageIsDeadLettered (fault 16): malformed messages on a participant's queue and on the
// reply queue end in the dead-letter queue, and the consumers go on: a saga started afterwards
// completes, and a saga that was running when the garbage arrived completes too.
func TestGarbageIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := e.consumeDeadLetters()
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "pb"})
	e.register(chain("after-garbage", step("a", "pa"), step("b", "pb")))

	sagaID := uuid.NewString()
	validCmd := func(mut func(*protocol.StepCommand)) string {
		c := protocol.StepCommand{SagaID: sagaID, Step: "a", Kind: protocol.KindAction, Participant: "pa", Action: "do_a", Attempt: 1}
		mut(&c)
		b, err := json.Marshal(c)
		require.NoError(t, err)
		return string(b)
	}
	corr := protocol.CommandRef{SagaID: uuid.NewString(), StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID()
	toPA := map[string]protocol.Message{
		"cmd-not-json":         garbage("cmd-not-json", protocol.TypeSagaAction, "", "this is not JSON"),
		"cmd-empty-body":       garbage("cmd-empty-body", protocol.TypeSagaAction, "", ""),
		"cmd-missing-fields":   garbage("cmd-missing-fields", protocol.TypeSagaAction, "", `{"saga_id":"`+sagaID+`"}`),
		"cmd-wrong-json-type":  garbage("cmd-wrong-json-type", protocol.TypeSagaAction, "", `{"saga_id":42,"step":["a"],"kind":"action","attempt":"1"}`),
		"cmd-json-array":       garbage("cmd-json-array", protocol.TypeSagaAction, "", `[1,2,3]`),
		"cmd-trailing-data":    garbage("cmd-trailing-data", protocol.TypeSagaAction, "", validCmd(func(*protocol.StepCommand) {})+`{}`),
		"cmd-wrong-amqp-type":  garbage("cmd-wrong-amqp-type", "twopc.prepare", "", validCmd(func(*protocol.StepCommand) {})),
		"cmd-no-type":          garbage("cmd-no-type", "", "", validCmd(func(*protocol.StepCommand) {})),
		"cmd-bad-kind":         garbage("cmd-bad-kind", protocol.TypeSagaAction, "", validCmd(func(c *protocol.StepCommand) { c.Kind = "explode" })),
		"cmd-zero-attempt":     garbage("cmd-zero-attempt", protocol.TypeSagaAction, "", validCmd(func(c *protocol.StepCommand) { c.Attempt = 0 })),
		"cmd-other-recipient":  garbage(protocol.CommandRef{SagaID: sagaID, StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID(), protocol.TypeSagaAction, "", validCmd(func(c *protocol.StepCommand) { c.Participant = "someone-else" })),
		"cmd-id-body-mismatch": garbage("saga:"+uuid.NewString()+":0:action:1", protocol.TypeSagaAction, "", validCmd(func(*protocol.StepCommand) {})),
	}
	toCoord := map[string]protocol.Message{
		"reply-not-json":        garbage("reply-not-json", protocol.TypeReply, corr, "}{"),
		"reply-wrong-json-type": garbage("reply-wrong-json-type", protocol.TypeReply, corr, `{"outcome":7}`),
		"reply-bad-outcome":     garbage("reply-bad-outcome", protocol.TypeReply, corr, `{"outcome":"maybe"}`),
		"reply-missing-outcome": garbage("reply-missing-outcome", protocol.TypeReply, corr, `{}`),
		"reply-no-correlation":  garbage("reply-no-correlation", protocol.TypeReply, "", `{"outcome":"succeeded"}`),
		"reply-bad-correlation": garbage("reply-bad-correlation", protocol.TypeReply, "saga:x:y:z", `{"outcome":"succeeded"}`),
		"reply-not-uuid":        garbage("reply-not-uuid", protocol.TypeReply, "saga:not-a-uuid:0:action:1", `{"outcome":"succeeded"}`),
		"reply-wrong-amqp-type": garbage("reply-wrong-amqp-type", protocol.TypeSagaAction, corr, `{"outcome":"succeeded"}`),
		"reply-unknown-saga":    garbage("reply-unknown-saga", protocol.TypeReply, corr, `{"outcome":"succeeded"}`),
	}
	var msgs []protocol.Message
	var ids []string
	for _, m := range toPA {
		msgs = append(msgs, m)
		ids = append(ids, m.MessageID)
		e.publish(toParticipant("pa", m))
	}
	for _, m := range toCoord {
		ids = append(ids, m.MessageID)
		e.publish(toCoordinator(m))
	}
	dead.await(t, 20*time.Second, ids...)
	for _, m := range msgs {
		got, _ := dead.get(m.MessageID)
		require.Equal(t, string(m.Body), string(got.Body), "dead letter %s keeps its body for inspection", m.MessageID)
	}
	require.Empty(t, e.ledgerRows(sagaID), "no garbage reached a handler")

	// The consumers went on.
	for range 3 {
		id := e.start("after-garbage", `{}`)
		sg := e.waitStatus(id, 30*time.Second)
		require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(), "reason %q", sg.GetReason())
		require.Len(t, e.ledgerRows(id), 2)
	}
	e.awaitQueueAcked(protocol.ParticipantQueue("pa"), 3, 20*time.Second)
	e.awaitQueueAcked(protocol.QueueReplies, 6, 20*time.Second)
}

// TestReplyTheDatabaseRejectsIsDeadLettered (fault 16): a reply that decodes (valid JSON, known
// saga, the attempt in flight) but that PostgreSQL cannot store, because its output or its error
// text holds a \u0000 (jsonb refuses it) or its output is not UTF-8 (json.Valid accepts that, the
// database does not), is poison for the coordinator. Workers in other languages
// can send one (the Go SDK strips NULs from error texts, not from outputs). It must be
// dead-lettered without holding up the replies of other sagas, and the step's real reply must
// still be applied.
//
// It fails today: the engine requeues the whole batch on any store error (after a short
// backoff), so each poison reply cycles between the queue and the engine for ever, logging an
// error each time and dragging every reply that shares its batch along; see the report.
func TestReplyTheDatabaseRejectsIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := e.consumeDeadLetters()
	e.startParticipant(participantOpts{name: "pa"})
	held := e.startParticipant(participantOpts{name: "pb", hold: func(d *transport.Delivery) bool {
		return d.Type == protocol.TypeSagaAction
	}})
	e.startParticipant(participantOpts{name: "other"})
	e.register(chain("victim", slowStep("a", "pa"), slowStep("b", "pb")))
	e.register(chain("bystander", step("x", "other"), step("y", "other")))

	victims := []string{e.start("victim", `{}`), e.start("victim", `{}`), e.start("victim", `{}`)}
	held.tap.awaitHeld(t, 3, 20*time.Second)
	replyTo := func(id string, r protocol.StepReply, msgID string) protocol.Message {
		cmd := &protocol.StepCommand{SagaID: id, Step: "b", StepIndex: 1, Kind: protocol.KindAction, Participant: "pb", Action: "do_b", Attempt: 1}
		m := encodeReply(t, cmd, r)
		m.MessageID = msgID
		return m
	}
	e.publish(
		toCoordinator(replyTo(victims[0], protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"note":"\u0000"}`)}, "poison-output")),
		toCoordinator(replyTo(victims[1], protocol.StepReply{Outcome: protocol.OutcomeRetry, Error: "disk \x00 error"}, "poison-error")),
		toCoordinator(replyTo(victims[2], protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage("{\"a\":\"\xff\"}")}, "poison-utf8")),
	)

	// Other sagas' replies are not held up behind the poison.
	for range 3 {
		other := e.start("bystander", `{}`)
		sg := e.waitStatus(other, 20*time.Second)
		require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus())
	}
	dead.await(t, 10*time.Second, "poison-output", "poison-error", "poison-utf8")

	held.tap.releaseHeld()
	for _, id := range victims {
		sg := e.waitStatus(id, 20*time.Second)
		require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(), "reason %q", sg.GetReason())
		b := stepOf(t, sg, "b")
		require.JSONEq(t, `{"by":"pb"}`, string(b.GetOutput()), "the real reply was applied, not the poison")
		require.EqualValues(t, 1, b.GetAttempt())
	}
}

// TestHandlerOutputTheDatabaseRejectsIsDeadLettered: a handler whose output is valid JSON that
// PostgreSQL's jsonb cannot hold (a \u0000 escape) cannot have its reply stored in the barrier. Its
// effect is rolled back and the command is dead-lettered for an operator, once per attempt; the
// coordinator sees silence, times the attempts out and compensates. Nothing is applied.
func TestHandlerOutputTheDatabaseRejectsIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := e.consumeDeadLetters()
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "nul", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			return json.Marshal(map[string]string{"name": "a\x00b"}) // encodes as "a\u0000b"
		}
		return nil, nil
	}})
	e.register(chain("nul-output", step("a", "pa"), compAttempts(attempts(timeout(step("b", "nul"), 300*time.Millisecond), 2), 5)))
	id := e.start("nul-output", `{}`)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "steps %s", describeSteps(sg))
	dead.await(t, 10*time.Second, protocol.CommandRef{SagaID: id, StepIndex: 1, Kind: protocol.KindAction, Attempt: 1}.ID(), protocol.CommandRef{SagaID: id, StepIndex: 1, Kind: protocol.KindAction, Attempt: 2}.ID())
	require.Equal(t, []string{"a/action", "a/compensate"}, e.ledgerKeys(id), "b's effect was rolled back")
}

// TestReplyForAStepTheSagaLacksIsDeadLettered: a well-formed reply for an existing saga that
// names a step index its definition does not have is garbage, not a stale reply: it is
// dead-lettered, and the saga goes on.
func TestReplyForAStepTheSagaLacksIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := e.consumeDeadLetters()
	e.startParticipant(participantOpts{name: "pa"})
	e.register(chain("one-step", step("a", "pa")))
	id := e.start("one-step", `{}`)
	m := garbage("reply-step-99", protocol.TypeReply, protocol.CommandRef{SagaID: id, StepIndex: 99, Kind: protocol.KindAction, Attempt: 1}.ID(), `{"outcome":"succeeded"}`)
	e.publish(toCoordinator(m))
	dead.await(t, 20*time.Second, m.MessageID)
	got, _ := dead.get(m.MessageID)
	require.Equal(t, string(m.Body), string(got.Body), "the dead letter keeps its body for inspection")
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(), "reason %q", sg.GetReason())
}
