package storetest

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// testStats checks the counts behind the gauges: unfinished sagas and transactions by state, with
// the age of the oldest, and nothing for finished ones.
func testStats(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	st, err := f.s.Stats(f.ctx)
	require.NoError(t, err, "Stats on an empty store")
	require.Empty(t, st.Sagas)
	require.Empty(t, st.Transactions)

	for range 2 {
		f.createSagas(t, f.newSaga(uuid.New(), "h", nil, nil)) // RUNNING
	}
	f.createSagas(t, f.newSaga(uuid.New(), "h", nil, func(_ time.Time, sg *store.Saga) { sg.State.Status = saga.StatusFailed }))
	f.createSagas(t, f.newSaga(uuid.New(), "h", nil, func(now time.Time, sg *store.Saga) {
		sg.State.Status, sg.FinishedAt = saga.StatusCompleted, now
	}))
	f.createTx(t, uuid.New(), "h", nil, nil) // PREPARING
	f.createTx(t, uuid.New(), "h", nil, func(_ time.Time, tx *store.Tx) { tx.Tx.State = twopc.StateCommitting })
	f.createTx(t, uuid.New(), "h", nil, func(now time.Time, tx *store.Tx) { tx.Tx.State, tx.FinishedAt = twopc.StateAborted, now })

	st, err = f.s.Stats(f.ctx)
	require.NoError(t, err, "Stats")
	require.Equal(t, 2, st.Sagas[saga.StatusRunning].Count, "RUNNING sagas")
	require.Equal(t, 1, st.Sagas[saga.StatusFailed].Count, "FAILED sagas")
	require.NotContains(t, st.Sagas, saga.StatusCompleted, "finished sagas are not counted")
	require.Equal(t, 1, st.Transactions[twopc.StatePreparing].Count, "PREPARING transactions")
	require.Equal(t, 1, st.Transactions[twopc.StateCommitting].Count, "COMMITTING transactions")
	require.Len(t, st.Transactions, 2, "finished transactions are not counted")
	for s, p := range st.Sagas {
		require.GreaterOrEqual(t, p.OldestAge, time.Duration(0), "age of the oldest %s saga", s)
		require.Less(t, p.OldestAge, Timeout, "age of the oldest %s saga", s)
	}
}
