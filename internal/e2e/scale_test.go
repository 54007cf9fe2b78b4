package e2e_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// startMany starts n sagas of def with at most conc calls in flight, spreading them over the
// clients in turn, and returns their ids. A call that fails is retried with the same id (StartSaga
// is idempotent) on the next client, up to retries times.
func (e *env) startMany(def string, n, conc int, clients ...pb.SagaServiceClient) []string {
	e.t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	errs := make([]error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
			defer cancel()
			_, errs[i] = clients[i%len(clients)].StartSaga(ctx, &pb.StartSagaRequest{SagaId: ids[i], Definition: def, Input: []byte(fmt.Sprintf(`{"n":%d}`, i))})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(e.t, err, "start saga %d", i)
	}
	return ids
}

// awaitAllTerminal waits until n sagas exist and none is RUNNING, COMPENSATING or FAILED.
func (e *env) awaitAllTerminal(n int, timeout time.Duration) map[string]int {
	e.t.Helper()
	var counts map[string]int
	eventually(e.t, timeout, func() (bool, string) {
		counts = e.statusCounts()
		if counts["FAILED"] > 0 {
			e.t.Fatalf("sagas by status: %v; some FAILED: %v", counts, e.sampleReasons("FAILED", 5))
		}
		return counts["COMPLETED"]+counts["COMPENSATED"] == n, fmt.Sprintf("sagas by status: %v (want %d terminal)", counts, n)
	})
	return counts
}

// sampleReasons returns the reasons of a few sagas in a status, for failure messages.
func (e *env) sampleReasons(status string, n int) []string {
	rows, err := e.pool.Query(e.ctx, `SELECT id::text || ': ' || coalesce(state->>'reason', '') || ' ' || (state->'steps')::text FROM sagas WHERE status = $1 LIMIT $2`, status, n)
	require.NoError(e.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(e.t, err)
	return out
}

// TestTwoCoordinatorsShareTheWork: two coordinator instances on one database and one vhost run
// 500 three-step sagas started alternately through both. Every saga completes and every effect
// is applied exactly once (G1, G2, G4); the outbox drains (G5).
func TestTwoCoordinatorsShareTheWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, second := e.startCoordinator()
	for _, p := range []string{"orders", "payments", "shipping"} {
		e.startParticipant(participantOpts{name: p, prefetch: 32, concurrency: 5, poolSize: 5})
	}
	e.register(chain("order", slowStep("create", "orders"), slowStep("charge", "payments"), slowStep("ship", "shipping")))

	const n = 500
	began := time.Now()
	ids := e.startMany("order", n, 32, e.client, second)
	counts := e.awaitAllTerminal(n, 120*time.Second)
	elapsed := time.Since(began)
	t.Logf("%d sagas of 3 steps through 2 coordinators in %s: %.0f sagas/s", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())

	require.Equal(t, n, counts["COMPLETED"], "every saga completes: %v", counts)
	require.Empty(t, e.duplicates(), "no effect applied twice")
	require.Equal(t, 3*n, e.actionRows())
	var compensations int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM `+e.ledger+`.ledger WHERE kind <> 'action'`).Scan(&compensations))
	require.Zero(t, compensations)
	// Each saga's three effects are its own.
	var perSaga int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(DISTINCT gid) FROM `+e.ledger+`.ledger WHERE gid = ANY($1)`, ids).Scan(&perSaga))
	require.Equal(t, n, perSaga)
	eventually(t, 20*time.Second, func() (bool, string) {
		n := e.outboxLen()
		return n == 0, fmt.Sprintf("%d outbox rows left", n)
	})
}
