package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/protocol"
)

// slowStep is a step with a timeout long enough that no attempt times out while a coordinator is
// down: these tests are about recovery, not about timeouts.
func slowStep(name, participant string) *pb.StepDefinition {
	return timeout(step(name, participant), time.Minute)
}

// latency is a behaviour that takes 20 to 50ms, like a service doing real work.
func latency(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
	t := time.NewTimer(time.Duration(20+rand.IntN(31)) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return json.RawMessage(`{"done":true}`), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startAll starts every saga of ids with at most conc calls in flight and returns the errors; a
// call to a coordinator that dies may fail, and the test starts it again (idempotently) later.
func (e *env) startAll(client pb.SagaServiceClient, def string, ids []string, conc int) []error {
	errs := make([]error, len(ids))
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
			defer cancel()
			_, errs[i] = client.StartSaga(ctx, &pb.StartSagaRequest{SagaId: id, Definition: def, Input: []byte(fmt.Sprintf(`{"n":%d}`, i))})
		}()
	}
	wg.Wait()
	return errs
}

func newIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	return ids
}

// requireAllCompletedOnce checks G1, G2, G4 and G5 for n three-step sagas.
func (e *env) requireAllCompletedOnce(n int) {
	e.t.Helper()
	counts := e.awaitAllTerminal(n, 90*time.Second)
	require.Equal(e.t, n, counts["COMPLETED"], "every saga completes: %v", counts)
	require.Empty(e.t, e.duplicates(), "no effect applied twice (G4)")
	require.Equal(e.t, 3*n, e.actionRows(), "each saga applied its three effects")
	eventually(e.t, 30*time.Second, func() (bool, string) {
		left := e.outboxLen()
		return left == 0, fmt.Sprintf("%d outbox rows left (G5)", left)
	})
}

// TestCoordinatorSIGKILLWithSagasInFlight (fault 1 and its neighbours): a coordinator process is
// killed with SIGKILL while 200 sagas are in flight, some completed and most not. A new process on
// the same database and vhost finishes every one of them: all COMPLETED, every effect exactly once.
func TestCoordinatorSIGKILLWithSagasInFlight(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	var parts []*testParticipant
	for _, p := range []string{"orders", "payments", "shipping"} {
		parts = append(parts, e.startParticipant(participantOpts{name: p, behave: latency, prefetch: 8, concurrency: 4, poolSize: 4}))
	}
	first := e.startCoordinatorProcess()
	e.client = e.dial(first.addr)
	e.register(chain("order", slowStep("create", "orders"), slowStep("charge", "payments"), slowStep("ship", "shipping")))

	const n = 200
	ids := newIDs(n)
	started := make(chan []error, 1)
	go func() { started <- e.startAll(e.client, "order", ids, 16) }()

	var atKill map[string]int
	eventually(t, 60*time.Second, func() (bool, string) {
		atKill = e.statusCounts()
		return atKill["COMPLETED"] >= 50, fmt.Sprintf("sagas by status: %v", atKill)
	})
	first.kill(t)
	atKill = e.statusCounts() // frozen now: only a coordinator changes sagas
	t.Logf("killed the coordinator with sagas by status %v", atKill)
	require.Less(t, atKill["COMPLETED"], n, "the kill must find sagas in flight")
	require.Positive(t, atKill["RUNNING"], "the kill must find sagas in flight")
	errs := <-started
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	t.Logf("%d of %d StartSaga calls failed with the coordinator's death", failed, n)

	second := e.startCoordinatorProcess()
	e.client = e.dial(second.addr)
	// Start again every saga whose start may not have been committed; StartSaga is idempotent.
	for i, err := range e.startAll(e.client, "order", ids, 16) {
		require.NoError(t, err, "start saga %d again", i)
	}
	e.requireAllCompletedOnce(n)
	redelivered := 0
	for _, p := range parts {
		for _, c := range p.tap.deliveries() {
			if c > 1 {
				redelivered++
			}
		}
	}
	t.Logf("%d commands were delivered more than once and deduplicated by the barrier", redelivered)
}

// TestCoordinatorCrashAfterConfirmBeforeDelete (fault 2): the coordinator SIGKILLs itself right
// after the broker confirmed its first publish and before it deleted the outbox row, so the
// next process publishes that command again. The participant receives it twice and applies it
// once; every saga completes and no effect is applied twice.
func TestCoordinatorCrashAfterConfirmBeforeDelete(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	orders := e.startParticipant(participantOpts{name: "orders"})
	e.startParticipant(participantOpts{name: "payments"})
	e.startParticipant(participantOpts{name: "shipping"})
	crashing := e.startCoordinatorProcess("--test-crash-after-confirm")
	e.client = e.dial(crashing.addr)
	e.register(chain("order", slowStep("create", "orders"), slowStep("charge", "payments"), slowStep("ship", "shipping")))

	const n = 30
	ids := newIDs(n)
	_, err := e.client.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: ids[0], Definition: "order", Input: []byte(`{"n":0}`)})
	if err != nil {
		// The process may die before it answers; the saga was committed before the publish.
		require.Equal(t, codes.Unavailable, status.Code(err), "err %v", err)
	}
	crashing.awaitExit(t, 30*time.Second)
	first := protocol.CommandRef{SagaID: ids[0], StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID()
	require.Equal(t, 1, e.outboxLen(), "the confirmed command's outbox row survived the crash")

	restarted := e.startCoordinatorProcess()
	e.client = e.dial(restarted.addr)
	for i, err := range e.startAll(e.client, "order", ids, 8) {
		require.NoError(t, err, "start saga %d", i)
	}
	e.requireAllCompletedOnce(n)
	orders.tap.awaitSettled(t, first, "ack", 2, 30*time.Second)
	require.Equal(t, 2, orders.tap.deliveries()[first], "the confirmed command was published again after the crash")
	require.Empty(t, e.duplicates(), "and applied once")
	require.Len(t, e.ledgerRows(ids[0]), 3)
}
