package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
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

	announced := map[uuid.UUID][]string{}
	notices := func(gone []store.Finished) ([]transport.Outgoing, error) {
		var out []transport.Outgoing
		for _, g := range gone {
			require.NotContains(t, announced, g.ID, "a row is announced once")
			announced[g.ID] = g.Participants
			out = append(out, message("final-"+g.ID.String()))
		}
		return out, nil
	}
	for i, want := range []struct{ deleted, sagas, txs int }{
		{4, 3, 1}, // 2 sagas and 2 transactions
		{3, 1, 0},
		{1, 0, 0},
		{0, 0, 0},
	} {
		n, err := f.s.DeleteFinished(f.ctx, time.Hour, 2, notices)
		require.NoError(t, err)
		require.Equal(t, want.deleted, n, "call %d: deleted", i)
		require.Equal(t, want.sagas, remaining(oldSagas, getSaga), "call %d: old sagas left", i)
		require.Equal(t, want.txs, remaining(oldTxs, getTx), "call %d: old transactions left", i)
	}
	require.Equal(t, len(keptSagas), remaining(keptSagas, getSaga), "recent, running and FAILED sagas are kept")
	require.Equal(t, len(keptTxs), remaining(keptTxs, getTx), "recent and unfinished transactions are kept")
	n, err := f.s.DeleteFinished(f.ctx, time.Hour, 0, notices)
	require.NoError(t, err)
	require.Zero(t, n, "a limit of 0 deletes nothing")

	requireAnnounced(t, f, announced, oldSagas, oldTxs)
}

// requireAnnounced checks that exactly the deleted rows were announced, with their participants,
// and that their notices are in the outbox.
func requireAnnounced(t *testing.T, f *fixture, announced map[uuid.UUID][]string, oldSagas, oldTxs []uuid.UUID) {
	t.Helper()
	require.Len(t, announced, len(oldSagas)+len(oldTxs), "every deleted row, and only those, is announced")
	for _, id := range oldSagas {
		require.Equal(t, []string{"bank", "shop"}, announced[id], "saga %s: the participants of its definition, once each", id)
	}
	for _, id := range oldTxs {
		require.Equal(t, []string{"bank", "shop"}, announced[id], "transaction %s: its participants", id)
	}
	claimed := map[string]bool{}
	waitFor(t, "the notices' leases to lapse", func() bool {
		rows, err := f.s.Outbox().ClaimExpired(f.ctx, 100)
		require.NoError(t, err)
		for _, r := range rows {
			claimed[r.MessageID] = true
		}
		return len(claimed) >= len(announced)
	})
	for id := range announced {
		require.True(t, claimed[message("final-"+id.String()).MessageID], "the notice of %s is in the outbox", id)
	}
}

// testDeleteFinishedNoticeError checks that a notice that cannot be made keeps the rows: they are
// deleted only with their notices.
func testDeleteFinishedNoticeError(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	sg := sagaKind.create(t, f, uuid.New(), rowOpts{done: true, finished: 2 * time.Hour})
	refused := errors.New("no notice")
	_, err := f.s.DeleteFinished(f.ctx, time.Hour, 10, func([]store.Finished) ([]transport.Outgoing, error) { return nil, refused })
	require.ErrorIs(t, err, refused)
	_, err = f.s.GetSaga(f.ctx, sg.ID)
	require.NoError(t, err, "the saga is kept when its notice failed")
	n, err := f.s.DeleteFinished(f.ctx, time.Hour, 10, nil)
	require.NoError(t, err)
	require.Equal(t, 1, n, "without notices, the saga goes")
}
