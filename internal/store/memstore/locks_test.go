package memstore_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/memstore"
)

// holdRows starts a Mutate of ids whose function blocks, so that it holds their locks until the
// returned function is called (also at cleanup). The Mutate changes every row it is given.
func holdRows(t *testing.T, f *fixture, ids ...uuid.UUID) (release func()) {
	t.Helper()
	held, unblock, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_, err := f.s.Mutate(f.ctx, ids, func(_ time.Time, got []*store.Saga) ([]store.Change, error) {
			close(held)
			<-unblock
			changes := make([]store.Change, len(got))
			for i, sg := range got {
				sg.State.Reason = "changed by the holder"
				changes[i] = store.Change{Row: sg}
			}
			return changes, nil
		})
		if err != nil {
			t.Errorf("the Mutate holding the rows: %v", err)
		}
	}()
	waitDone(t, held, "the rows to be locked")
	var once sync.Once
	release = func() {
		once.Do(func() { close(unblock) })
		waitDone(t, done, "the Mutate holding the rows to return")
	}
	t.Cleanup(release)
	return release
}

// TestMutateWaitsForRowsAnotherHolds: a Mutate of a row another Mutate holds waits for it (and
// gives up when its context ends, without running its function), then sees the other's change;
// a Mutate of other rows does not wait.
func TestMutateWaitsForRowsAnotherHolds(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	x, y, z := f.createSaga(t, nil, nil).ID, f.createSaga(t, nil, nil).ID, f.createSaga(t, nil, nil).ID
	release := holdRows(t, f, x, y)

	_, err := f.s.Mutate(withTimeout(t, shortWait), []uuid.UUID{z, y}, func(time.Time, []*store.Saga) ([]store.Change, error) {
		t.Error("a mutate function ran while another held one of its rows")
		return nil, nil
	})
	require.ErrorIs(t, err, context.DeadlineExceeded, "a Mutate of a held row waits until its context ends")

	_, err = f.s.Mutate(f.ctx, []uuid.UUID{z}, func(_ time.Time, got []*store.Saga) ([]store.Change, error) {
		return []store.Change{{Row: got[0]}}, nil
	})
	require.NoError(t, err, "a Mutate of a row no one holds does not wait")
	require.Equal(t, int64(2), sagaVersion(t, f, z))

	var seen []*store.Saga
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		_, err := f.s.Mutate(f.ctx, []uuid.UUID{y}, func(_ time.Time, got []*store.Saga) ([]store.Change, error) {
			seen = got
			return nil, nil
		})
		if err != nil {
			t.Errorf("the waiting Mutate: %v", err)
		}
	}()
	release()
	waitDone(t, waited, "the waiting Mutate")
	require.Len(t, seen, 1)
	require.Equal(t, int64(2), seen[0].Version, "the waiting Mutate sees the holder's committed change")
	require.Equal(t, "changed by the holder", seen[0].State.Reason)
}

// TestMutateLocksInIDOrder: Mutate locks its rows in id order whatever the order it is given
// them in, as pgstore's ORDER BY id FOR UPDATE does, so that two mutations of the same rows never
// wait for each other in a cycle. While the higher id is held, a Mutate of both holds the lower
// one as it waits: MutateDue, which skips locked rows, finds neither.
func TestMutateLocksInIDOrder(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	due := func(now time.Time, sg *store.Saga) { sg.WakeAt = now.Add(-time.Second) }
	lo, hi := f.createSaga(t, nil, due).ID, f.createSaga(t, nil, due).ID
	if bytes.Compare(lo[:], hi[:]) > 0 {
		lo, hi = hi, lo
	}
	release := holdRows(t, f, hi)
	waiting := make(chan struct{})
	go func() {
		defer close(waiting)
		_, err := f.s.Mutate(f.ctx, []uuid.UUID{hi, lo}, func(time.Time, []*store.Saga) ([]store.Change, error) { return nil, nil })
		if err != nil {
			t.Errorf("the Mutate of both rows: %v", err)
		}
	}()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		n, _, err := f.s.MutateDue(f.ctx, 10, func(time.Time, []*store.Saga) ([]store.Change, error) { return nil, nil })
		require.NoError(t, err)
		if n == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the Mutate waiting for %s never locked %s, which comes first", hi, lo)
		<-tick.C
	}
	release()
	waitDone(t, waiting, "the Mutate of both rows")
}

// TestDeleteFinishedSkipsLockedRows: retention leaves alone a finished row a mutation holds.
func TestDeleteFinishedSkipsLockedRows(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	old := f.createSaga(t, nil, func(now time.Time, sg *store.Saga) { sg.FinishedAt = now.Add(-2 * time.Hour) })
	release := holdRows(t, f, old.ID)
	n, err := f.s.DeleteFinished(f.ctx, time.Hour, 10, nil)
	require.NoError(t, err)
	require.Zero(t, n, "a locked row is skipped, without waiting")
	release()
	n, err = f.s.DeleteFinished(f.ctx, time.Hour, 10, nil)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the row is deleted once it is unlocked")
}

// TestMutateConflictIsRetriedThenReturned: a change of a row fn was not given at that version
// is store.ErrConflict; like pgstore, the mutation runs again, six times in all, and writes
// nothing.
func TestMutateConflictIsRetriedThenReturned(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	sg := f.createSaga(t, nil, nil)
	calls := 0
	rows, err := f.s.Mutate(f.ctx, []uuid.UUID{sg.ID}, func(_ time.Time, got []*store.Saga) ([]store.Change, error) {
		calls++
		got[0].Version = 7
		return []store.Change{{Row: got[0], Messages: nil}}, nil
	})
	require.ErrorIs(t, err, store.ErrConflict)
	require.Empty(t, rows)
	require.Equal(t, 6, calls, "the mutation runs once and is retried five times")
	require.Equal(t, int64(1), sagaVersion(t, f, sg.ID), "nothing is written")

	calls = 0
	_, err = f.s.Mutate(f.ctx, []uuid.UUID{sg.ID}, func(_ time.Time, got []*store.Saga) ([]store.Change, error) {
		calls++
		if calls < 3 {
			return nil, fmt.Errorf("stale: %w", store.ErrConflict)
		}
		return []store.Change{{Row: got[0]}}, nil
	})
	require.NoError(t, err, "a conflict the function reports is retried too")
	require.Equal(t, 3, calls)
	require.Equal(t, int64(2), sagaVersion(t, f, sg.ID))
}
