package storetest

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// testDeleteFinished checks retention: only rows that finished before the cutoff go, at most
// limit sagas and limit transactions per call, and never a FAILED saga (which has no finish time)
// or one still running.
func testDeleteFinished(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	var oldSagas, oldTxs []uuid.UUID
	for range 5 {
		sg := sagaKind.create(t, f, uuid.New(), rowOpts{done: true, finished: 2 * time.Hour})
		oldSagas = append(oldSagas, sg.ID)
	}
	for range 3 {
		tx := txKind.create(t, f, uuid.New(), rowOpts{done: true, finished: 2 * time.Hour})
		oldTxs = append(oldTxs, tx.ID)
	}
	keptSagas := []uuid.UUID{
		sagaKind.create(t, f, uuid.New(), rowOpts{done: true, finished: time.Minute}).ID,  // finished recently
		sagaKind.create(t, f, uuid.New(), rowOpts{wake: true, wakeIn: -3 * time.Hour}).ID, // running
	}
	keptTxs := []uuid.UUID{
		txKind.create(t, f, uuid.New(), rowOpts{done: true, finished: time.Minute}).ID,
		txKind.create(t, f, uuid.New(), rowOpts{}).ID,
	}
	failed := uuid.New()
	f.createSagas(t, f.newSaga(failed, "h", nil, func(_ time.Time, sg *store.Saga) {
		sg.State.Status = saga.StatusFailed // FAILED waits for an operator: it has no finish time
	}))
	keptSagas = append(keptSagas, failed)

	remaining := func(ids []uuid.UUID, get func(uuid.UUID) error) int {
		n := 0
		for _, id := range ids {
			err := get(id)
			if err == nil {
				n++
				continue
			}
			require.ErrorIs(t, err, store.ErrNotFound)
		}
		return n
	}
	getSaga := func(id uuid.UUID) error { _, err := f.s.GetSaga(f.ctx, id); return err }
	getTx := func(id uuid.UUID) error { _, err := f.s.GetTx(f.ctx, id); return err }

	for i, want := range []struct{ deleted, sagas, txs int }{
		{4, 3, 1}, // 2 sagas and 2 transactions
		{3, 1, 0},
		{1, 0, 0},
		{0, 0, 0},
	} {
		n, err := f.s.DeleteFinished(f.ctx, time.Hour, 2)
		require.NoError(t, err)
		require.Equal(t, want.deleted, n, "call %d: deleted", i)
		require.Equal(t, want.sagas, remaining(oldSagas, getSaga), "call %d: old sagas left", i)
		require.Equal(t, want.txs, remaining(oldTxs, getTx), "call %d: old transactions left", i)
	}
	require.Equal(t, len(keptSagas), remaining(keptSagas, getSaga), "recent, running and FAILED sagas are kept")
	require.Equal(t, len(keptTxs), remaining(keptTxs, getTx), "recent and unfinished transactions are kept")
	n, err := f.s.DeleteFinished(f.ctx, time.Hour, 0)
	require.NoError(t, err)
	require.Zero(t, n, "a limit of 0 deletes nothing")
}
