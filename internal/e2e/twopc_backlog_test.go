package e2e_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/protocol"
)

// TestTwoPCIsNotQueuedBehindASagaBacklog: a participant has hundreds of saga steps queued, seconds
// of work for its two handler goroutines, when a transaction with a 1.5 s prepare timeout names
// it. Its PREPARE travels on the participant's two-phase-commit queue and is taken before the
// queued steps, so the transaction commits while most of the sagas still run. With one queue
// for both, the PREPARE waited behind the backlog and the transaction aborted.
func TestTwoPCIsNotQueuedBehindASagaBacklog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	client := e.twoPCClient(e.coord.Addr())
	p := e.startTxParticipant(txParticipantOpts{name: "bank-a", concurrency: 2})
	// A step is 25 ms of work: 400 of them keep two goroutines busy for 5 s.
	p.HandleDefault(func(ctx context.Context, _ pgx.Tx, _ *protocol.StepCommand) (json.RawMessage, error) {
		timer := time.NewTimer(25 * time.Millisecond)
		defer timer.Stop()
		select {
		case <-timer.C:
			return json.RawMessage(`{}`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	e.register(chain("backlog", slowStep("work", "bank-a")))
	const n = 400
	for i, err := range e.startAll(e.client, "backlog", newIDs(n), 32) {
		require.NoError(t, err, "start saga %d", i)
	}
	require.Greater(t, e.statusCounts()["RUNNING"], n/2, "a backlog of steps waits in the queue")

	id := e.beginTx(client, 1500*time.Millisecond, txParts("bank-a"))
	e.requireOutcome(client, id, pb.TransactionState_TRANSACTION_STATE_COMMITTED, 30*time.Second)
	running := e.statusCounts()["RUNNING"]
	require.Positive(t, running, "the transaction committed before the backlog drained")
	t.Logf("committed with %d of %d sagas still running", running, n)
}
