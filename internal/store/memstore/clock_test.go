package memstore_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/memstore"
	"github.com/sagacoord/sagacoord/transport"
)

// requireAt checks that got is the clock's reading as a timestamptz holds it: to the microsecond.
func requireAt(t *testing.T, clock time.Time, got time.Time, what string) {
	t.Helper()
	require.True(t, clock.Truncate(time.Microsecond).Equal(got), "%s: want %v, got %v", what, clock.Truncate(time.Microsecond), got)
}

// TestClockIsTheDatabaseTime: Build and mutate functions receive the clock's time, and rows are
// stamped with it.
func TestClockIsTheDatabaseTime(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	requireAt(t, f.clock.Now(), f.def.CreatedAt, "a definition's CreatedAt")

	var built time.Time
	sg := f.createSaga(t, nil, func(now time.Time, _ *store.Saga) { built = now })
	requireAt(t, f.clock.Now(), built, "the time Build receives")
	requireAt(t, f.clock.Now(), sg.CreatedAt, "a new saga's CreatedAt")

	f.clock.Advance(time.Minute)
	var mutated time.Time
	_, err := f.s.Mutate(f.ctx, []uuid.UUID{sg.ID}, func(now time.Time, got []*store.Saga) ([]store.Change, error) {
		mutated = now
		return []store.Change{{Row: got[0]}}, nil
	})
	require.NoError(t, err)
	requireAt(t, f.clock.Now(), mutated, "the time a mutate function receives")
	got, err := f.s.GetSaga(f.ctx, sg.ID)
	require.NoError(t, err)
	requireAt(t, f.clock.Now(), got.UpdatedAt, "UpdatedAt after a mutation")
	requireAt(t, built, got.CreatedAt, "CreatedAt does not move")

	f.clock.Advance(time.Hour)
	tx := f.createTx(t, nil, func(now time.Time, _ *store.Tx) { built = now })
	requireAt(t, f.clock.Now(), built, "the time a transaction's build receives")
	requireAt(t, f.clock.Now(), tx.CreatedAt, "a new transaction's CreatedAt")
}

// TestClockMakesTimersFallDue: a row is due once the clock reaches its wake_at, not before.
func TestClockMakesTimersFallDue(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	sg := f.createSaga(t, nil, func(now time.Time, sg *store.Saga) { sg.WakeAt = now.Add(10 * time.Second) })
	tx := f.createTx(t, nil, func(now time.Time, tx *store.Tx) { tx.WakeAt = now.Add(10 * time.Second) })
	claim := func() (sagas, txs []uuid.UUID) {
		_, _, err := f.s.MutateDue(f.ctx, 10, func(_ time.Time, got []*store.Saga) ([]store.Change, error) {
			for _, g := range got {
				sagas = append(sagas, g.ID)
			}
			return nil, nil
		})
		require.NoError(t, err)
		_, _, err = f.s.MutateDueTx(f.ctx, 10, func(_ time.Time, got []*store.Tx) ([]store.TxChange, error) {
			for _, g := range got {
				txs = append(txs, g.ID)
			}
			return nil, nil
		})
		require.NoError(t, err)
		return sagas, txs
	}
	f.clock.Advance(10*time.Second - time.Microsecond)
	sagas, txs := claim()
	require.Empty(t, sagas, "a saga is not due before its wake_at")
	require.Empty(t, txs, "a transaction is not due before its wake_at")
	f.clock.Advance(time.Microsecond)
	sagas, txs = claim()
	require.Equal(t, []uuid.UUID{sg.ID}, sagas, "a saga is due at its wake_at")
	require.Equal(t, []uuid.UUID{tx.ID}, txs, "a transaction is due at its wake_at")
}

// TestClockMakesOutboxLeasesLapse: a row written or claimed is leased for OutboxLease by the
// clock, and the backlog's age is by the clock.
func TestClockMakesOutboxLeasesLapse(t *testing.T) {
	t.Parallel()
	const lease = 5 * time.Second
	f := setup(t, memstore.Config{OutboxLease: lease})
	ob := f.s.Outbox()
	require.Equal(t, lease, ob.Lease())
	f.createTx(t, []transport.Outgoing{message("a"), message("b")}, nil)
	claim := func() []store.OutboxRow {
		rows, err := ob.ClaimExpired(f.ctx, 10)
		require.NoError(t, err)
		return rows
	}

	f.clock.Advance(lease)
	require.Empty(t, claim(), "a row is leased to its writer until its lease has passed")
	f.clock.Advance(time.Microsecond)
	rows := claim()
	require.Len(t, rows, 2, "rows are claimed once their lease has passed")
	for _, r := range rows {
		require.Equal(t, 1, r.Attempts)
	}
	n, age, err := ob.Backlog(f.ctx)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, lease+time.Microsecond, age, "the backlog's age is by the clock")

	f.clock.Advance(lease)
	require.Empty(t, claim(), "a claim leases the rows again")
	f.clock.Advance(time.Microsecond)
	rows = claim()
	require.Len(t, rows, 2)
	for _, r := range rows {
		require.Equal(t, 2, r.Attempts, "a second claim counts a second attempt")
	}
}

// TestClockDrivesRetentionAndStats: rows finish and age by the clock.
func TestClockDrivesRetentionAndStats(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	f.createSaga(t, nil, nil)
	f.createSaga(t, nil, func(now time.Time, sg *store.Saga) { sg.FinishedAt = now })
	f.clock.Advance(time.Hour)
	n, err := f.s.DeleteFinished(f.ctx, time.Hour, 10, nil)
	require.NoError(t, err)
	require.Zero(t, n, "a row that finished exactly olderThan ago is kept")
	f.clock.Advance(time.Microsecond)
	n, err = f.s.DeleteFinished(f.ctx, time.Hour, 10, nil)
	require.NoError(t, err)
	require.Equal(t, 1, n, "a row that finished longer ago is deleted")

	st, err := f.s.Stats(f.ctx)
	require.NoError(t, err)
	require.Len(t, st.Sagas, 1)
	for _, p := range st.Sagas {
		require.Equal(t, 1, p.Count)
		require.Equal(t, time.Hour+time.Microsecond, p.OldestAge, "the age is by the clock")
	}
}
