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
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// isFinal reports whether p's barrier holds gid as final.
func (e *env) isFinal(p *testParticipant, gid string) bool {
	var ok bool
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT EXISTS (SELECT 1 FROM `+p.schema+`.finals WHERE gid = $1)`, gid).Scan(&ok))
	return ok
}

// awaitForgotten waits until the coordinator deleted saga id and every participant of ps deleted
// its barrier rows.
func (e *env) awaitForgotten(id string, ps ...*testParticipant) {
	e.t.Helper()
	eventually(e.t, 30*time.Second, func() (bool, string) {
		if _, err := e.client.GetSaga(e.ctx, &pb.GetSagaRequest{SagaId: id}); status.Code(err) != codes.NotFound {
			return false, "the coordinator still has saga " + id
		}
		for _, p := range ps {
			if !e.isFinal(p, id) || len(e.barrierRows(p, id)) > 0 {
				return false, p.name + " still keeps barrier rows of saga " + id
			}
		}
		return true, ""
	})
}

// TestBarrierRetentionForgetsOnlyFinalSagas: the coordinator's retention deletes a COMPLETED saga
// and announces it; its participants delete its barrier rows after their grace, and a late copy of
// its action or compensation is then acknowledged without effect or reply. A FAILED saga is never
// announced: its rows stay, and retried long after, it is compensated exactly once, and only then
// forgotten.
func TestBarrierRetentionForgetsOnlyFinalSagas(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	e.coord = e.runCoordinator(func(c *coordinator.Config) {
		c.Retention, c.RetentionInterval = time.Second, 50*time.Millisecond
	})
	e.client = e.dial(e.coord.Addr())

	var refundDown atomic.Bool
	refundDown.Store(true)
	var calls counter
	fast := participantOpts{barrierGrace: time.Nanosecond, sweepInterval: 50 * time.Millisecond}
	pa := fast
	pa.name = "pa"
	pa.behave = func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		calls.inc(cmd.SagaID + "/" + cmd.Step + "/" + string(cmd.Kind))
		if cmd.Kind == protocol.KindCompensate && refundDown.Load() {
			return nil, errors.New("refund service down")
		}
		return nil, nil
	}
	pbOpts := fast
	pbOpts.name = "pb"
	pbOpts.behave = func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction && string(cmd.Input) == `{"fail":true}` {
			return nil, participant.Failf("declined")
		}
		return nil, nil
	}
	pA, pB := e.startParticipant(pa), e.startParticipant(pbOpts)
	e.register(chain("retained", compAttempts(step("a", "pa"), 2), step("b", "pb")))

	failed := e.start("retained", `{"fail":true}`)
	e.waitStatus(failed, 30*time.Second, pb.SagaStatus_SAGA_STATUS_FAILED)
	done := e.start("retained", `{}`)
	e.awaitForgotten(done, pA, pB)
	require.Equal(t, []string{"a/action", "b/action"}, e.ledgerKeys(done))

	// The FAILED saga was kept by the coordinator, so it was never announced: its rows stay.
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_FAILED, e.get(failed).GetStatus())
	require.False(t, e.isFinal(pA, failed))
	require.Contains(t, e.barrierRows(pA, failed), "a/action", "a FAILED saga keeps its barrier rows")

	// Late copies of the completed saga's commands, after its rows are gone.
	late := []*protocol.StepCommand{
		{SagaID: done, Step: "a", StepIndex: 0, Kind: protocol.KindAction, Participant: "pa", Action: "do_a", Attempt: 1, Input: json.RawMessage(`{}`)},
		{SagaID: done, Step: "a", StepIndex: 0, Kind: protocol.KindCompensate, Participant: "pa", Action: "undo_a", Attempt: 1},
	}
	for _, cmd := range late {
		e.publish(toParticipant("pa", encodeCommand(t, cmd)))
	}
	for _, cmd := range late {
		id := protocol.CommandRef{SagaID: done, StepIndex: 0, Kind: cmd.Kind, Attempt: 1}.ID()
		pA.tap.awaitSettled(t, id, "ack", 2-boolInt(cmd.Kind == protocol.KindCompensate), 20*time.Second)
		require.Equal(t, boolInt(cmd.Kind == protocol.KindAction), pA.tap.publishedCount("reply:"+id), "%s: only the original got a reply", cmd.Kind)
	}
	require.Equal(t, 1, calls.get(done+"/a/action"), "the late action did not run again")
	require.Zero(t, calls.get(done+"/a/compensate"), "the late compensation did not run")
	require.Equal(t, []string{"a/action", "b/action"}, e.ledgerKeys(done))
	require.Empty(t, e.barrierRows(pA, done), "they claimed no row")

	// Retried long after its failure, the FAILED saga is compensated once, then forgotten.
	refundDown.Store(false)
	_, err := e.client.RetrySaga(e.ctx, &pb.RetrySagaRequest{SagaId: failed})
	require.NoError(t, err)
	e.awaitForgotten(failed, pA, pB)
	require.Equal(t, []string{"a/action", "a/compensate"}, e.ledgerKeys(failed))
	require.Empty(t, e.duplicates())
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// get returns the count of key.
func (c *counter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}
