package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// TestAbortRunningSagaCompensates: AbortSaga on a saga whose second step is in its handler
// starts compensation at once (the later step is skipped); the step in flight is compensated
// once its action commits, then the first; everything nets to zero.
func TestAbortRunningSagaCompensates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := e.newGate()
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "pb", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			return nil, release.wait(ctx)
		}
		return nil, nil
	}})
	e.startParticipant(participantOpts{name: "pc"})
	e.register(chain("abortable", slowStep("a", "pa"), slowStep("b", "pb"), slowStep("c", "pc")))
	id := e.start("abortable", `{}`)
	e.waitFor(id, 30*time.Second, "b running", func(sg *pb.Saga) bool {
		return stepOf(t, sg, "b").GetStatus() == pb.StepStatus_STEP_STATUS_RUNNING
	})
	resp, err := e.client.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: id, Reason: "customer cancelled"})
	require.NoError(t, err)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATING, resp.GetSaga().GetStatus())
	require.Equal(t, "customer cancelled", resp.GetSaga().GetReason())
	require.Equal(t, pb.StepStatus_STEP_STATUS_SKIPPED, stepOf(t, resp.GetSaga(), "c").GetStatus())

	_, err = e.client.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: id})
	requireCode(t, err, codes.FailedPrecondition, "COMPENSATING")

	release.open()
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "steps %s", describeSteps(sg))
	require.Equal(t, "customer cancelled", sg.GetReason())
	require.Equal(t, []string{"a/action", "b/action", "b/compensate", "a/compensate"}, e.ledgerKeys(id))
	require.Equal(t, pb.StepStatus_STEP_STATUS_SKIPPED, stepOf(t, sg, "c").GetStatus())
}

// TestCompensationFailingForeverIsFailedThenRetried (fault 15): a compensation that keeps failing
// exhausts its own retry budget and the saga is FAILED, with the reason in GetSaga and ListSagas;
// once the compensation can succeed, RetrySaga resumes it with a fresh budget and the saga ends
// COMPENSATED with every effect undone once.
func TestCompensationFailingForeverIsFailedThenRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var broken atomic.Bool
	broken.Store(true)
	e.startParticipant(participantOpts{name: "pa", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindCompensate && broken.Load() {
			return nil, errors.New("refund service down")
		}
		return nil, nil
	}})
	e.startParticipant(participantOpts{name: "pb", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			return nil, participant.Failf("insufficient funds")
		}
		return nil, nil
	}})
	e.register(chain("stuck", compAttempts(step("a", "pa"), 2), step("b", "pb")))
	id := e.start("stuck", `{}`)
	sg := e.waitStatus(id, 30*time.Second, pb.SagaStatus_SAGA_STATUS_FAILED)
	require.Contains(t, sg.GetReason(), `compensation of step "a" exhausted 2 attempts`)
	require.Contains(t, sg.GetReason(), "refund service down")
	a := stepOf(t, sg, "a")
	require.Equal(t, pb.StepStatus_STEP_STATUS_COMPENSATING, a.GetStatus())
	require.EqualValues(t, 2, a.GetCompensationAttempt())
	require.Contains(t, a.GetLastError(), "refund service down")
	require.Equal(t, []string{"a/action"}, e.ledgerKeys(id), "a failed compensation leaves no row")

	list, err := e.client.ListSagas(e.ctx, &pb.ListSagasRequest{Status: pb.SagaStatus_SAGA_STATUS_FAILED})
	require.NoError(t, err)
	require.Len(t, list.GetSagas(), 1)
	require.Equal(t, id, list.GetSagas()[0].GetId())
	require.Contains(t, list.GetSagas()[0].GetReason(), "refund service down", "operators see the reason in the list")

	// Only RetrySaga resumes a FAILED saga; AbortSaga is for RUNNING ones.
	version := e.sagaVersion(id)
	_, err = e.client.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: id})
	requireCode(t, err, codes.FailedPrecondition, "FAILED")

	broken.Store(false)
	resp, err := e.client.RetrySaga(e.ctx, &pb.RetrySagaRequest{SagaId: id})
	require.NoError(t, err)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATING, resp.GetSaga().GetStatus())
	require.Greater(t, resp.GetSaga().GetVersion(), version)
	sg = e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "steps %s", describeSteps(sg))
	require.EqualValues(t, 3, stepOf(t, sg, "a").GetCompensationAttempt())
	require.Equal(t, []string{"a/action", "a/compensate"}, e.ledgerKeys(id))
	_, err = e.client.RetrySaga(e.ctx, &pb.RetrySagaRequest{SagaId: id})
	requireCode(t, err, codes.FailedPrecondition, "COMPENSATED")
}

// TestListSagasFiltersAndPages: ListSagas filters by status and by definition, and its page
// tokens walk every saga exactly once, newest first.
func TestListSagasFiltersAndPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startParticipant(participantOpts{name: "ok"})
	e.startParticipant(participantOpts{name: "no", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			return nil, participant.Failf("no")
		}
		return nil, nil
	}})
	e.register(chain("good", step("a", "ok")))
	e.register(chain("bad", step("a", "ok"), step("b", "no")))
	var good, bad []string
	for range 7 {
		good = append(good, e.start("good", `{}`))
	}
	for range 4 {
		bad = append(bad, e.start("bad", `{}`))
	}
	for _, id := range append(append([]string(nil), good...), bad...) {
		e.waitStatus(id, 30*time.Second)
	}

	walk := func(req *pb.ListSagasRequest) (ids []string, pages int) {
		t.Helper()
		req.PageSize = 3
		for {
			resp, err := e.client.ListSagas(e.ctx, req)
			require.NoError(t, err)
			pages++
			require.LessOrEqual(t, len(resp.GetSagas()), 3)
			for _, sg := range resp.GetSagas() {
				if req.GetStatus() != pb.SagaStatus_SAGA_STATUS_UNSPECIFIED {
					require.Equal(t, req.GetStatus(), sg.GetStatus())
				}
				if req.GetDefinition() != "" {
					require.Equal(t, req.GetDefinition(), sg.GetDefinition())
				}
				ids = append(ids, sg.GetId())
			}
			if resp.GetNextPageToken() == "" {
				return ids, pages
			}
			require.Len(t, resp.GetSagas(), 3, "only the last page may be short")
			req.PageToken = resp.GetNextPageToken()
			require.Less(t, pages, 20, "page tokens do not end")
		}
	}
	reverse := func(s []string) []string {
		out := make([]string, len(s))
		for i, v := range s {
			out[len(s)-1-i] = v
		}
		return out
	}

	ids, pages := walk(&pb.ListSagasRequest{Definition: "good"})
	require.Equal(t, reverse(good), ids, "newest first, each once")
	require.Equal(t, 3, pages)

	ids, _ = walk(&pb.ListSagasRequest{Status: pb.SagaStatus_SAGA_STATUS_COMPENSATED})
	require.Equal(t, reverse(bad), ids)

	ids, _ = walk(&pb.ListSagasRequest{Status: pb.SagaStatus_SAGA_STATUS_COMPLETED, Definition: "bad"})
	require.Empty(t, ids)

	ids, pages = walk(&pb.ListSagasRequest{})
	require.Len(t, ids, 11)
	require.ElementsMatch(t, append(append([]string(nil), good...), bad...), ids)
	require.Equal(t, 4, pages)

	ids, _ = walk(&pb.ListSagasRequest{Status: pb.SagaStatus_SAGA_STATUS_RUNNING})
	require.Empty(t, ids)
}
