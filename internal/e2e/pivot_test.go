package e2e_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

func pivotSaga(name string) *pb.SagaDefinition {
	return chain(name, step("a", "pa"), pivot(step("p", "pp")), attempts(step("c", "pc"), 5))
}

// TestPivotForwardRecovery: after the pivot succeeded, a business failure of a later step is
// retried forward, not compensated: c fails twice and then succeeds, the saga completes and
// nothing is compensated.
//
// It fails today: the participant barrier keeps c's first "failed" reply and answers every later
// attempt with it without running the handler (see the report), so forward recovery can never
// succeed and the saga ends FAILED.
func TestPivotForwardRecovery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var calls counter
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "pp"})
	e.startParticipant(participantOpts{name: "pc", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind != protocol.KindAction {
			return nil, nil
		}
		if n := calls.inc("c"); n <= 2 {
			return nil, participant.Failf("carrier not ready (call %d)", n)
		}
		return json.RawMessage(`{"shipped":true}`), nil
	}})
	e.register(chain("pivot-forward", step("a", "pa"), pivot(step("p", "pp")), attempts(step("c", "pc"), 3)))
	id := e.start("pivot-forward", `{}`)
	sg := e.waitStatus(id, 30*time.Second, pb.SagaStatus_SAGA_STATUS_COMPLETED, pb.SagaStatus_SAGA_STATUS_COMPENSATED, pb.SagaStatus_SAGA_STATUS_FAILED)

	calls.mu.Lock()
	handlerCalls := calls.n["c"]
	calls.mu.Unlock()
	c := stepOf(t, sg, "c")
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(),
		"a business failure after the pivot is retried forward until it succeeds; reason %q; c's handler ran %d times for %d attempts; steps: %s",
		sg.GetReason(), handlerCalls, c.GetAttempt(), describeSteps(sg))
	require.EqualValues(t, 3, c.GetAttempt())
	require.Equal(t, 3, handlerCalls)
	require.Equal(t, []string{"a/action", "p/action", "c/action"}, e.ledgerKeys(id), "no compensation after the pivot")
	require.Empty(t, e.duplicates())
}

// TestPivotFailureCompensates: a failure at the pivot itself is still before the point of no
// return: the steps before it are compensated and the ones after it never run.
func TestPivotFailureCompensates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "pp", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			return nil, participant.Failf("payment declined")
		}
		return nil, nil
	}})
	e.startParticipant(participantOpts{name: "pc"})
	e.register(pivotSaga("pivot-fails"))
	id := e.start("pivot-fails", `{}`)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "reason %q", sg.GetReason())
	require.Contains(t, sg.GetReason(), "payment declined")
	require.Equal(t, []string{"a/action", "a/compensate"}, e.ledgerKeys(id))
	require.Equal(t, pb.StepStatus_STEP_STATUS_COMPENSATED, stepOf(t, sg, "a").GetStatus())
	require.Equal(t, pb.StepStatus_STEP_STATUS_FAILED, stepOf(t, sg, "p").GetStatus())
	require.Equal(t, pb.StepStatus_STEP_STATUS_SKIPPED, stepOf(t, sg, "c").GetStatus())
}

// TestAbortPastPivotIsRefused: once the pivot succeeded the saga can only go forward, so
// AbortSaga is FailedPrecondition naming the pivot, and the saga then completes.
func TestAbortPastPivotIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := e.newGate()
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "pp"})
	e.startParticipant(participantOpts{name: "pc", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return nil, release.wait(ctx)
	}})
	e.register(pivotSaga("pivot-abort"))
	id := e.start("pivot-abort", `{}`)
	e.waitFor(id, 30*time.Second, "c running after the pivot", func(sg *pb.Saga) bool {
		return stepOf(t, sg, "c").GetStatus() == pb.StepStatus_STEP_STATUS_RUNNING
	})
	_, err := e.client.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: id, Reason: "changed my mind"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "err %v", err)
	require.Contains(t, status.Convert(err).Message(), `"p"`, "the message names the pivot step")
	release.open()
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(), "reason %q", sg.GetReason())
	require.Equal(t, []string{"a/action", "p/action", "c/action"}, e.ledgerKeys(id))
}
