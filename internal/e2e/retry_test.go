package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// TestTransientFailureIsRetriedPerPolicy: a participant that answers "retry" twice and then
// succeeds gets a third attempt; the saga completes and the effect is applied once.
func TestTransientFailureIsRetriedPerPolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var calls counter
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "flaky", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			if n := calls.inc(cmd.SagaID); n <= 2 {
				return nil, fmt.Errorf("connection reset (call %d)", n)
			}
		}
		return json.RawMessage(`{"ok":true}`), nil
	}})
	e.register(chain("transient", step("a", "pa"), attempts(step("b", "flaky"), 3)))
	id := e.start("transient", `{}`)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(), "reason %q; steps %s", sg.GetReason(), describeSteps(sg))
	b := stepOf(t, sg, "b")
	require.EqualValues(t, 3, b.GetAttempt())
	require.Empty(t, b.GetLastError(), "a success clears the last error")
	require.JSONEq(t, `{"ok":true}`, string(b.GetOutput()))
	require.Equal(t, []string{"a/action", "b/action"}, e.ledgerKeys(id), "the effect is applied once")
}

// TestExhaustedRetriesCompensate: a step that always answers "retry" is given exactly
// max_attempts attempts; then the saga compensates. A "retry" reply leaves the step uncertain (a
// participant that dies before its ack may still apply a redelivered attempt), so the step's
// compensation is sent too; the barrier records it as a no-op, since nothing was applied, and
// refuses any late attempt.
func TestExhaustedRetriesCompensate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var calls counter
	e.startParticipant(participantOpts{name: "pa"})
	flaky := e.startParticipant(participantOpts{name: "flaky", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		calls.inc(string(cmd.Kind))
		if cmd.Kind == protocol.KindAction {
			return nil, errors.New("service unavailable")
		}
		return nil, nil
	}})
	e.register(chain("exhausted", step("a", "pa"), attempts(step("b", "flaky"), 3)))
	id := e.start("exhausted", `{}`)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "steps %s", describeSteps(sg))
	require.Contains(t, sg.GetReason(), `step "b" exhausted 3 attempts`)
	require.Contains(t, sg.GetReason(), "service unavailable")
	b := stepOf(t, sg, "b")
	require.EqualValues(t, 3, b.GetAttempt())
	require.Equal(t, pb.StepStatus_STEP_STATUS_COMPENSATED, b.GetStatus())
	require.EqualValues(t, 1, b.GetCompensationAttempt())
	require.Equal(t, []string{"a/action", "a/compensate"}, e.ledgerKeys(id), "b applied nothing and undid nothing")
	calls.mu.Lock()
	require.Equal(t, 3, calls.n[string(protocol.KindAction)], "the handler ran once per attempt")
	require.Zero(t, calls.n[string(protocol.KindCompensate)], "the compensation of an action never applied runs no handler")
	calls.mu.Unlock()
	rows := e.barrierRows(flaky, id)
	require.EqualValues(t, protocol.OutcomeSucceeded, rows["b/compensate"].Outcome)
	require.EqualValues(t, protocol.OutcomeFailed, rows["b/action"].Outcome, "a late attempt is refused")

	// The three attempts reached the participant, and nothing more.
	dl := flaky.tap.deliveries()
	for n := 1; n <= 3; n++ {
		require.Equal(t, 1, dl[protocol.CommandRef{SagaID: id, StepIndex: 1, Kind: protocol.KindAction, Attempt: n}.ID()], "attempt %d delivered once", n)
	}
	require.Zero(t, dl[protocol.CommandRef{SagaID: id, StepIndex: 1, Kind: protocol.KindAction, Attempt: 4}.ID()])
}

// TestStepThatNeverAnswersIsCompensated: every attempt of b is swallowed on the way (the
// participant never sees it and never answers). Each attempt times out after 300ms; after
// max_attempts the step is uncertain, so its compensation is sent anyway, and the barrier records
// it as a no-op since the action never arrived. The saga ends COMPENSATED.
func TestStepThatNeverAnswersIsCompensated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startParticipant(participantOpts{name: "pa"})
	silent := e.startParticipant(participantOpts{name: "silent", hold: func(d *transport.Delivery) bool {
		return d.Type == protocol.TypeSagaAction
	}})
	e.register(chain("silent", step("a", "pa"), compAttempts(attempts(timeout(step("b", "silent"), 300*time.Millisecond), 3), 5)))
	id := e.start("silent", `{}`)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "steps %s", describeSteps(sg))
	require.Contains(t, sg.GetReason(), `step "b" exhausted 3 attempts`)
	require.Contains(t, sg.GetReason(), "timed out after 300ms")
	b := stepOf(t, sg, "b")
	require.EqualValues(t, 3, b.GetAttempt())
	require.Equal(t, pb.StepStatus_STEP_STATUS_COMPENSATED, b.GetStatus(), "a timed-out step may have been applied, so it is compensated")
	require.GreaterOrEqual(t, b.GetCompensationAttempt(), int32(1))
	require.Len(t, silent.tap.heldIDs(), 3, "three action attempts were sent and swallowed")

	// The compensation reached the barrier and was recorded as a no-op that refuses the action.
	rows := e.barrierRows(silent, id)
	require.EqualValues(t, protocol.OutcomeSucceeded, rows["b/compensate"].Outcome)
	require.EqualValues(t, protocol.OutcomeFailed, rows["b/action"].Outcome, "the barrier refuses a late action")
	require.Equal(t, []string{"a/action", "a/compensate"}, e.ledgerKeys(id))
}

// TestHandlerHeldPastItsTimeoutIsCompensatedAfterItCommits: the handler of b blocks inside its
// barrier transaction for longer than every attempt's timeout. The later attempts wait on the
// barrier row of the first; after max_attempts the step is compensated, and the compensation
// waits for the held action to commit, then undoes it. The saga ends COMPENSATED with b applied
// once and undone once.
func TestHandlerHeldPastItsTimeoutIsCompensatedAfterItCommits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := e.newGate()
	var calls counter
	e.startParticipant(participantOpts{name: "pa"})
	// The handler outlives its step's timeout: one that does not stop at its context's deadline.
	e.startParticipant(participantOpts{name: "slow", handlerTimeout: -1, behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			calls.inc("action")
			if err := release.wait(ctx); err != nil {
				return nil, err
			}
		}
		return json.RawMessage(`{"slow":true}`), nil
	}})
	e.register(chain("held", step("a", "pa"), compAttempts(attempts(timeout(step("b", "slow"), 300*time.Millisecond), 3), 20)))
	id := e.start("held", `{}`)
	e.waitFor(id, 30*time.Second, "b's compensation sent after 3 timed-out attempts", func(sg *pb.Saga) bool {
		b := stepOf(t, sg, "b")
		return b.GetStatus() == pb.StepStatus_STEP_STATUS_COMPENSATING && b.GetCompensationAttempt() >= 1
	})
	release.open()
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "steps %s", describeSteps(sg))
	b := stepOf(t, sg, "b")
	require.EqualValues(t, 3, b.GetAttempt())
	require.Equal(t, pb.StepStatus_STEP_STATUS_COMPENSATED, b.GetStatus())
	calls.mu.Lock()
	require.Equal(t, 1, calls.n["action"], "later attempts wait on the first one's barrier row and are answered from it")
	calls.mu.Unlock()
	keys := e.ledgerKeys(id)
	require.ElementsMatch(t, []string{"a/action", "b/action", "b/compensate", "a/compensate"}, keys)
	require.Equal(t, "a/compensate", keys[len(keys)-1], "b is undone before a; ledger %v", keys)
	require.Empty(t, e.duplicates())
	for p, sum := range e.ledgerSums(id) {
		require.Zero(t, sum, "participant %s nets to zero", p)
	}
}

// TestCompensationOvertakesDelayedAction (fault 6): b's only attempt is delayed in transit past
// its timeout. The saga compensates; b's compensation arrives first and the barrier records a
// no-op; then the delayed action arrives and is refused without running its handler. Every
// participant nets to zero and the saga does not change.
func TestCompensationOvertakesDelayedAction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var calls counter
	e.startParticipant(participantOpts{name: "pa"})
	delayed := e.startParticipant(participantOpts{
		name: "delayed",
		hold: func(d *transport.Delivery) bool { return d.Type == protocol.TypeSagaAction },
		behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
			calls.inc(string(cmd.Kind))
			return nil, nil
		},
	})
	e.register(chain("overtake", step("a", "pa"), compAttempts(attempts(timeout(step("b", "delayed"), 300*time.Millisecond), 1), 5), step("c", "pa")))
	id := e.start("overtake", `{}`)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "steps %s", describeSteps(sg))
	require.Equal(t, pb.StepStatus_STEP_STATUS_COMPENSATED, stepOf(t, sg, "b").GetStatus())
	require.Equal(t, pb.StepStatus_STEP_STATUS_SKIPPED, stepOf(t, sg, "c").GetStatus())
	rows := e.barrierRows(delayed, id)
	require.EqualValues(t, protocol.OutcomeSucceeded, rows["b/compensate"].Outcome, "the compensation is recorded")
	require.Equal(t, protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "compensated before action"}, rows["b/action"],
		"the compensation plants the refusal of the late action")
	version := e.sagaVersion(id)

	actionID := protocol.CommandRef{SagaID: id, StepIndex: 1, Kind: protocol.KindAction, Attempt: 1}.ID()
	require.Equal(t, []string{actionID}, delayed.tap.heldIDs())
	delayed.tap.releaseHeld()
	delayed.tap.awaitSettled(t, actionID, "ack", 1, 10*time.Second)

	calls.mu.Lock()
	require.Zero(t, calls.n[string(protocol.KindAction)], "the late action is refused without running its handler")
	require.Zero(t, calls.n[string(protocol.KindCompensate)], "there was nothing to undo")
	calls.mu.Unlock()
	require.Equal(t, []string{"a/action", "a/compensate"}, e.ledgerKeys(id), "no ledger row from b")
	for p, sum := range e.ledgerSums(id) {
		require.Zero(t, sum, "participant %s nets to zero (G3)", p)
	}
	// The refusal's reply reaches the coordinator and changes nothing. Replies so far: a's action,
	// one per compensation attempt of a and b (an attempt that timed out still answers), and the
	// refusal.
	e.awaitQueueAcked(protocol.QueueReplies, 2+int(stepOf(t, sg, "a").GetCompensationAttempt()+stepOf(t, sg, "b").GetCompensationAttempt()), 20*time.Second)
	require.Equal(t, version, e.sagaVersion(id), "the late reply changed nothing")
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, e.get(id).GetStatus())
	require.True(t, strings.HasPrefix(rows["b/action"].Error, "compensated before action"))
}

// TestHandlerThatNeverReturnsParksSagaInFailed: a handler that hangs holds its barrier row, and
// a compensation cannot overtake an action that may still commit: each compensation attempt waits
// for the row no longer than its own timeout, then gives up ("retry"), so that it holds no
// goroutine behind the lock. After the compensation's attempts are exhausted the saga is FAILED,
// with the reason visible, rather than COMPENSATED on a guess. Once the handler returns, its
// action commits, and an operator's retry undoes it: COMPENSATED, every effect once.
func TestHandlerThatNeverReturnsParksSagaInFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := e.newGate()
	e.startParticipant(participantOpts{name: "pa"})
	// The handler outlives its step's timeout: one that does not stop at its context's deadline.
	slow := e.startParticipant(participantOpts{name: "hung", handlerTimeout: -1, behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			if err := release.wait(ctx); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}})
	e.register(chain("hung", step("a", "pa"), compAttempts(attempts(timeout(step("b", "hung"), 300*time.Millisecond), 2), 2)))
	id := e.start("hung", `{}`)
	sg := e.waitStatus(id, 30*time.Second, pb.SagaStatus_SAGA_STATUS_FAILED)
	require.Contains(t, sg.GetReason(), `compensation of step "b" exhausted 2 attempts`)
	b := stepOf(t, sg, "b")
	require.Equal(t, pb.StepStatus_STEP_STATUS_COMPENSATING, b.GetStatus())
	require.EqualValues(t, 2, b.GetCompensationAttempt())
	require.Equal(t, pb.StepStatus_STEP_STATUS_SUCCEEDED, stepOf(t, sg, "a").GetStatus(), "a waits until b is undone")
	require.Equal(t, []string{"a/action"}, e.ledgerKeys(id), "nothing was undone on a guess")
	// Each compensation attempt was answered and acknowledged, not left waiting on the row.
	slow.tap.awaitSettled(t, protocol.CommandRef{SagaID: id, StepIndex: 1, Kind: protocol.KindCompensate, Attempt: 2}.ID(), "ack", 1, 10*time.Second)

	release.open()
	eventually(t, 30*time.Second, func() (bool, string) {
		keys := e.ledgerKeys(id)
		return slices.Equal(keys, []string{"a/action", "b/action"}), fmt.Sprintf("ledger: %v; the released action commits", keys)
	})
	_, err := e.client.RetrySaga(e.ctx, &pb.RetrySagaRequest{SagaId: id})
	require.NoError(t, err, "an operator retries the FAILED saga once the handler returned")
	sg = e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "steps %s", describeSteps(sg))
	require.Equal(t, []string{"a/action", "b/action", "b/compensate", "a/compensate"}, e.ledgerKeys(id))
	require.Empty(t, e.duplicates())
	_, err = e.client.RetrySaga(e.ctx, &pb.RetrySagaRequest{SagaId: id})
	requireCode(t, err, codes.FailedPrecondition, "COMPENSATED")
}

// TestHungHandlerIsStoppedAtTheStepTimeout: the first attempt's handler hangs until its context
// ends. The command carries the step's timeout, the SDK cancels the handler after it, the
// coordinator times the attempt out and retries it, and the second attempt completes the saga.
// The hung handler's goroutine and connection are free again: its context ended with the step's
// deadline, not with the test.
func TestHungHandlerIsStoppedAtTheStepTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var calls counter
	stopped := make(chan error, 1)
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "hangs", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction && calls.inc(cmd.SagaID) == 1 {
			if cmd.TimeoutMillis != 500 {
				return nil, fmt.Errorf("the command carries timeout_ms %d, not the step's 500", cmd.TimeoutMillis)
			}
			<-ctx.Done()
			stopped <- ctx.Err()
			return nil, ctx.Err()
		}
		return json.RawMessage(`{"ok":true}`), nil
	}})
	e.register(chain("hung", step("a", "pa"), attempts(timeout(step("b", "hangs"), 500*time.Millisecond), 3)))
	id := e.start("hung", `{}`)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(), "reason %q; steps %s", sg.GetReason(), describeSteps(sg))
	require.EqualValues(t, 2, stepOf(t, sg, "b").GetAttempt())
	// The coordinator's timer starts at dispatch and the handler's at its start, so the retry
	// may complete the saga just before the first handler is stopped.
	select {
	case err := <-stopped:
		require.ErrorIs(t, err, context.DeadlineExceeded, "the handler was stopped by the step's deadline")
	case <-time.After(10 * time.Second):
		t.Fatal("the first attempt's handler was not stopped within 10s")
	}
	require.Equal(t, []string{"a/action", "b/action"}, e.ledgerKeys(id), "the effect is applied once")
}
