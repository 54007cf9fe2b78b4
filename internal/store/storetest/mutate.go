package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// The tests of this file run once for sagas (Mutate, MutateDue) and once for transactions
// (MutateTx, MutateDueTx), which promise the same.

// fields points into a saga or a transaction at what the tests read and change.
type fields struct {
	id                   uuid.UUID
	version              *int64
	wakeAt, finishedAt   *time.Time
	createdAt, updatedAt *time.Time
	// reason is free text in the state (State.Reason, Tx.Reason) that the tests use as a counter.
	reason *string
}

// rowOpts says how to create a row for a test, relative to the database time of its creation.
type rowOpts struct {
	wakeIn   time.Duration // wake_at = now + wakeIn, when wake
	wake     bool
	msgs     []transport.Outgoing
	finished time.Duration // finished_at = now - finished, when done
	done     bool
}

type mutateFn[T any] = func(now time.Time, rows []T) ([]store.Changed[T], error)

// kind adapts the tests to sagas or to transactions.
type kind[T any] struct {
	name      string
	create    func(t *testing.T, f *fixture, id uuid.UUID, o rowOpts) T
	get       func(ctx context.Context, s store.Store, id uuid.UUID) (T, error)
	mutate    func(ctx context.Context, s store.Store, ids []uuid.UUID, fn mutateFn[T]) ([]store.OutboxRow, error)
	mutateDue func(ctx context.Context, s store.Store, limit int, fn mutateFn[T]) (int, []store.OutboxRow, error)
	fields    func(T) fields
}

var sagaKind = kind[*store.Saga]{
	name: "Sagas",
	create: func(t *testing.T, f *fixture, id uuid.UUID, o rowOpts) *store.Saga {
		sagas, _ := f.createSagas(t, f.newSaga(id, "h", o.msgs, func(now time.Time, sg *store.Saga) {
			if o.wake {
				sg.WakeAt = now.Add(o.wakeIn)
			}
			if o.done {
				sg.FinishedAt = now.Add(-o.finished)
			}
		}))
		return sagas[0]
	},
	get: func(ctx context.Context, s store.Store, id uuid.UUID) (*store.Saga, error) { return s.GetSaga(ctx, id) },
	mutate: func(ctx context.Context, s store.Store, ids []uuid.UUID, fn mutateFn[*store.Saga]) ([]store.OutboxRow, error) {
		return s.Mutate(ctx, ids, fn)
	},
	mutateDue: func(ctx context.Context, s store.Store, limit int, fn mutateFn[*store.Saga]) (int, []store.OutboxRow, error) {
		return s.MutateDue(ctx, limit, fn)
	},
	fields: func(sg *store.Saga) fields {
		return fields{sg.ID, &sg.Version, &sg.WakeAt, &sg.FinishedAt, &sg.CreatedAt, &sg.UpdatedAt, &sg.State.Reason}
	},
}

var txKind = kind[*store.Tx]{
	name: "Transactions",
	create: func(t *testing.T, f *fixture, id uuid.UUID, o rowOpts) *store.Tx {
		tx, _ := f.createTx(t, id, "h", o.msgs, func(now time.Time, tx *store.Tx) {
			if o.wake {
				tx.WakeAt = now.Add(o.wakeIn)
			}
			if o.done {
				tx.FinishedAt = now.Add(-o.finished)
			}
		})
		return tx
	},
	get: func(ctx context.Context, s store.Store, id uuid.UUID) (*store.Tx, error) { return s.GetTx(ctx, id) },
	mutate: func(ctx context.Context, s store.Store, ids []uuid.UUID, fn mutateFn[*store.Tx]) ([]store.OutboxRow, error) {
		return s.MutateTx(ctx, ids, fn)
	},
	mutateDue: func(ctx context.Context, s store.Store, limit int, fn mutateFn[*store.Tx]) (int, []store.OutboxRow, error) {
		return s.MutateDueTx(ctx, limit, fn)
	},
	fields: func(tx *store.Tx) fields {
		return fields{tx.ID, &tx.Version, &tx.WakeAt, &tx.FinishedAt, &tx.CreatedAt, &tx.UpdatedAt, &tx.Tx.Reason}
	},
}

// tests returns the tests of this file for the kind.
func (k kind[T]) tests() []test {
	return []test{
		{k.name + "/MutateWritesChangesAndMessages", k.testMutate},
		{k.name + "/MutateMissingIDsAreAbsent", k.testMutateMissing},
		{k.name + "/MutateErrorRollsBack", k.testMutateError},
		{k.name + "/MutateOfAnotherVersionIsConflict", k.testMutateConflict},
		{k.name + "/MutateRefusedValueIsErrInvalidData", k.testMutateInvalidData},
		{k.name + "/MutateHoldsLocks", k.testMutateLocks},
		{k.name + "/MutateTimeIsNeverBeforeTheRow", k.testMutateTimeAfterLockWait},
		{k.name + "/MutateConcurrentNoLostUpdate", k.testMutateConcurrent},
		{k.name + "/MutateDueClaimsOnlyDue", k.testMutateDue},
		{k.name + "/MutateDueLimit", k.testMutateDueLimit},
		{k.name + "/MutateDueErrorRollsBack", k.testMutateDueError},
		{k.name + "/MutateDueConcurrentClaimsAreDisjoint", k.testMutateDueConcurrent},
	}
}

func (k kind[T]) testMutate(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	a := k.create(t, f, uuid.New(), rowOpts{msgs: messages("a-created", 1)})
	b := k.create(t, f, uuid.New(), rowOpts{wake: true, wakeIn: time.Hour})
	aID, bID := k.fields(a).id, k.fields(b).id
	before := backlog(t, f.ctx, f.s)

	msgs := messages("a-changed", 3)
	var (
		now   time.Time
		calls int
	)
	rows, err := k.mutate(f.ctx, f.s, []uuid.UUID{aID, bID, uuid.New()}, func(n time.Time, got []T) ([]store.Changed[T], error) {
		calls++
		now = n
		ids := make([]uuid.UUID, len(got))
		var changed T
		for i, r := range got {
			fl := k.fields(r)
			ids[i] = fl.id
			require.Equal(t, int64(1), *fl.version, "fn sees the stored version")
			require.False(t, n.Before(*fl.createdAt), "fn's time %v is before the row's creation %v", n, *fl.createdAt)
			if fl.id == aID {
				changed = r
			}
		}
		require.Equal(t, sortedIDs([]uuid.UUID{aID, bID}), sortedIDs(ids), "fn sees the rows that exist, once each")
		fl := k.fields(changed)
		*fl.reason = "changed"
		*fl.wakeAt = n.Add(time.Minute)
		*fl.finishedAt = n
		return []store.Changed[T]{{Row: changed, Messages: msgs}}, nil
	})
	require.NoError(t, err)
	require.GreaterOrEqual(t, calls, 1)
	requireRows(t, msgs, rows)
	require.Equal(t, before+len(msgs), backlog(t, f.ctx, f.s), "the messages are in the outbox")

	gotA, err := k.get(f.ctx, f.s, aID)
	require.NoError(t, err)
	fa := k.fields(gotA)
	require.Equal(t, int64(2), *fa.version, "a change bumps the version")
	require.Equal(t, "changed", *fa.reason, "the change is written")
	requireSameTime(t, now.Add(time.Minute), *fa.wakeAt, "WakeAt")
	requireSameTime(t, now, *fa.finishedAt, "FinishedAt")
	requireSameTime(t, now, *fa.updatedAt, "UpdatedAt is fn's time")
	requireSameTime(t, *k.fields(a).createdAt, *fa.createdAt, "CreatedAt does not change")

	gotB, err := k.get(f.ctx, f.s, bID)
	require.NoError(t, err)
	fb := k.fields(gotB)
	require.Equal(t, int64(1), *fb.version, "a row fn did not return is not written")
	require.Equal(t, "0", *fb.reason)
	requireSameTime(t, *k.fields(b).wakeAt, *fb.wakeAt, "WakeAt of the unchanged row")

	// A change that clears wake_at and finished_at clears them.
	_, err = k.mutate(f.ctx, f.s, []uuid.UUID{aID}, func(_ time.Time, got []T) ([]store.Changed[T], error) {
		fl := k.fields(got[0])
		*fl.wakeAt, *fl.finishedAt = time.Time{}, time.Time{}
		return []store.Changed[T]{{Row: got[0]}}, nil
	})
	require.NoError(t, err)
	gotA, err = k.get(f.ctx, f.s, aID)
	require.NoError(t, err)
	fa = k.fields(gotA)
	require.Equal(t, int64(3), *fa.version)
	require.True(t, fa.wakeAt.IsZero(), "WakeAt cleared")
	require.True(t, fa.finishedAt.IsZero(), "FinishedAt cleared")
	require.Equal(t, before+len(msgs), backlog(t, f.ctx, f.s), "a change without messages writes none")
}

func (k kind[T]) testMutateMissing(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	for _, ids := range [][]uuid.UUID{nil, {uuid.New()}, {uuid.New(), uuid.New()}} {
		rows, err := k.mutate(f.ctx, f.s, ids, func(_ time.Time, got []T) ([]store.Changed[T], error) {
			require.Empty(t, got, "fn sees no rows when none of the ids exists")
			return nil, nil
		})
		require.NoError(t, err, "missing ids are not an error")
		require.Empty(t, rows)
	}
}

func (k kind[T]) testMutateError(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	a := k.create(t, f, uuid.New(), rowOpts{})
	b := k.create(t, f, uuid.New(), rowOpts{})
	ids := []uuid.UUID{k.fields(a).id, k.fields(b).id}
	before := backlog(t, f.ctx, f.s)

	rows, err := k.mutate(f.ctx, f.s, ids, func(_ time.Time, got []T) ([]store.Changed[T], error) {
		changes := make([]store.Changed[T], len(got))
		for i, r := range got {
			*k.fields(r).reason = "changed"
			changes[i] = store.Changed[T]{Row: r, Messages: messages(fmt.Sprint(i), 2)}
		}
		return changes, errBuild
	})
	require.ErrorIs(t, err, errBuild, "Mutate returns fn's error")
	require.Empty(t, rows)
	for _, id := range ids {
		got, err := k.get(f.ctx, f.s, id)
		require.NoError(t, err)
		require.Equal(t, int64(1), *k.fields(got).version, "nothing is written")
		require.Equal(t, "0", *k.fields(got).reason, "nothing is written")
	}
	require.Equal(t, before, backlog(t, f.ctx, f.s), "no message is written")
}

// testMutateConflict returns a row at a version fn was not given: Mutate fails with
// store.ErrConflict (after retrying) and writes neither the row nor its messages.
func (k kind[T]) testMutateConflict(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	a := k.create(t, f, uuid.New(), rowOpts{})
	before := backlog(t, f.ctx, f.s)
	rows, err := k.mutate(f.ctx, f.s, []uuid.UUID{k.fields(a).id}, func(_ time.Time, got []T) ([]store.Changed[T], error) {
		fl := k.fields(got[0])
		*fl.version = 7
		*fl.reason = "changed"
		return []store.Changed[T]{{Row: got[0], Messages: messages("conflict", 2)}}, nil
	})
	require.ErrorIs(t, err, store.ErrConflict)
	require.Empty(t, rows)
	got, err := k.get(f.ctx, f.s, k.fields(a).id)
	require.NoError(t, err)
	require.Equal(t, int64(1), *k.fields(got).version, "the row is not written")
	require.Equal(t, "0", *k.fields(got).reason, "the row is not written")
	require.Equal(t, before, backlog(t, f.ctx, f.s), "no message is written")
}

// testMutateInvalidData writes a value the database refuses (a NUL in the state, which jsonb
// cannot hold): Mutate fails with store.ErrInvalidData, which tells the caller that retrying
// the same write cannot succeed, writes nothing, and the row can be changed afterwards.
func (k kind[T]) testMutateInvalidData(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	row := k.create(t, f, uuid.New(), rowOpts{})
	id := k.fields(row).id
	for _, bad := range []struct {
		reason string
		msgs   []transport.Outgoing
	}{
		{reason: "a NUL \x00 in the state"},
		{reason: "1", msgs: []transport.Outgoing{{Exchange: "x", RoutingKey: "y", Message: protocol.Message{MessageID: "nul", Headers: map[string]string{"h": "\x00"}}}}},
	} {
		rows, err := k.mutate(f.ctx, f.s, []uuid.UUID{id}, func(_ time.Time, got []T) ([]store.Changed[T], error) {
			*k.fields(got[0]).reason = bad.reason
			return []store.Changed[T]{{Row: got[0], Messages: bad.msgs}}, nil
		})
		require.ErrorIs(t, err, store.ErrInvalidData, "reason %q, messages %v", bad.reason, bad.msgs)
		require.Empty(t, rows)
	}
	got, err := k.get(f.ctx, f.s, id)
	require.NoError(t, err)
	require.Equal(t, int64(1), *k.fields(got).version, "nothing is written")
	require.Zero(t, backlog(t, f.ctx, f.s), "no message is written")
	_, err = k.mutate(f.ctx, f.s, []uuid.UUID{id}, func(_ time.Time, got []T) ([]store.Changed[T], error) {
		*k.fields(got[0]).reason = "fine"
		return []store.Changed[T]{{Row: got[0]}}, nil
	})
	require.NoError(t, err, "the row can be changed after a refused write")
}

// testMutateLocks checks that fn holds its rows locked: a MutateDue run from inside fn skips
// the due row fn holds, and claims it once Mutate has committed.
// testMutateTimeAfterLockWait runs a Mutate that waits for the lock of another: the time its
// function receives is never before the row as the other wrote it, so that histories never go
// back in time.
func (k kind[T]) testMutateTimeAfterLockWait(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	id := k.fields(k.create(t, f, uuid.New(), rowOpts{})).id
	entered, release := make(chan struct{}), make(chan struct{})
	var (
		holderErr error
		holderNow time.Time
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, holderErr = k.mutate(f.ctx, f.s, []uuid.UUID{id}, func(n time.Time, got []T) ([]store.Changed[T], error) {
			holderNow = n
			select {
			case <-entered:
			default:
				close(entered)
			}
			<-release
			*k.fields(got[0]).reason = "holder"
			return []store.Changed[T]{{Row: got[0]}}, nil
		})
	}()
	<-entered
	var waiterNow time.Time
	waiterDone := make(chan error, 1)
	go func() {
		_, err := k.mutate(f.ctx, f.s, []uuid.UUID{id}, func(n time.Time, got []T) ([]store.Changed[T], error) {
			waiterNow = n
			return []store.Changed[T]{{Row: got[0]}}, nil
		})
		waiterDone <- err
	}()
	close(release)
	<-done
	require.NoError(t, holderErr)
	require.NoError(t, <-waiterDone)
	got, err := k.get(f.ctx, f.s, id)
	require.NoError(t, err)
	require.Equal(t, int64(3), *k.fields(got).version, "both wrote")
	// The holder wrote the row at its time; the waiter changed the row after, so its time must
	// not be earlier (it may be equal: the waiter ran after the holder's commit).
	require.False(t, waiterNow.Before(holderNow), "the waiter's time %v is before the holder's %v", waiterNow, holderNow)
}

func (k kind[T]) testMutateLocks(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	row := k.create(t, f, uuid.New(), rowOpts{wake: true, wakeIn: -time.Second})
	id := k.fields(row).id
	_, err := k.mutate(f.ctx, f.s, []uuid.UUID{id}, func(_ time.Time, got []T) ([]store.Changed[T], error) {
		n, _, err := k.mutateDue(f.ctx, f.s, 10, func(_ time.Time, due []T) ([]store.Changed[T], error) {
			return nil, fmt.Errorf("MutateDue claimed %d rows that Mutate holds locked", len(due))
		})
		if err != nil {
			return nil, err
		}
		if n != 0 {
			return nil, fmt.Errorf("MutateDue claimed %d rows that Mutate holds locked", n)
		}
		return nil, nil
	})
	require.NoError(t, err)
	n, _, err := k.mutateDue(f.ctx, f.s, 10, func(_ time.Time, due []T) ([]store.Changed[T], error) { return nil, nil })
	require.NoError(t, err)
	require.Equal(t, 1, n, "the row is claimable once Mutate committed")
}

// testMutateConcurrent increments a counter kept in the row's state from 20 goroutines at once:
// concurrent mutations of one row serialize, so none is lost.
func (k kind[T]) testMutateConcurrent(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	row := k.create(t, f, uuid.New(), rowOpts{})
	id := k.fields(row).id
	const n = 20
	errs := make([]error, n)
	parallel(n, func(i int) {
		_, errs[i] = k.mutate(f.ctx, f.s, []uuid.UUID{id}, func(_ time.Time, got []T) ([]store.Changed[T], error) {
			if len(got) != 1 {
				return nil, fmt.Errorf("fn got %d rows, want 1", len(got))
			}
			c, err := strconv.Atoi(*k.fields(got[0]).reason)
			if err != nil {
				return nil, err
			}
			*k.fields(got[0]).reason = strconv.Itoa(c + 1)
			return []store.Changed[T]{{Row: got[0], Messages: messages(fmt.Sprintf("inc-%d-%d", i, c), 1)}}, nil
		})
	})
	for i, err := range errs {
		require.NoError(t, err, "goroutine %d", i)
	}
	got, err := k.get(f.ctx, f.s, id)
	require.NoError(t, err)
	require.Equal(t, n, counter(t, *k.fields(got).reason), "no increment is lost")
	require.Equal(t, int64(1+n), *k.fields(got).version, "each mutation bumps the version once")
	require.Equal(t, n, backlog(t, f.ctx, f.s), "each mutation writes its message once")
}

func (k kind[T]) testMutateDue(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	due := []T{
		k.create(t, f, uuid.New(), rowOpts{wake: true, wakeIn: -time.Second}),
		k.create(t, f, uuid.New(), rowOpts{wake: true, wakeIn: -time.Hour}),
	}
	k.create(t, f, uuid.New(), rowOpts{wake: true, wakeIn: time.Hour})
	k.create(t, f, uuid.New(), rowOpts{})
	dueIDs := []uuid.UUID{k.fields(due[0]).id, k.fields(due[1]).id}

	msgs := messages("fired", 2)
	var now time.Time
	n, rows, err := k.mutateDue(f.ctx, f.s, 10, func(nw time.Time, got []T) ([]store.Changed[T], error) {
		now = nw
		ids := make([]uuid.UUID, len(got))
		changes := make([]store.Changed[T], len(got))
		for i, r := range got {
			fl := k.fields(r)
			ids[i] = fl.id
			if fl.wakeAt.After(nw) {
				return nil, fmt.Errorf("fn got a row that wakes at %v, after now %v", *fl.wakeAt, nw)
			}
			*fl.wakeAt = time.Time{}
			*fl.reason = "fired"
			changes[i] = store.Changed[T]{Row: r}
		}
		changes[0].Messages = msgs
		if want := sortedIDs(dueIDs); fmt.Sprint(sortedIDs(ids)) != fmt.Sprint(want) {
			return nil, fmt.Errorf("fn got rows %v, want the due rows %v", ids, want)
		}
		return changes, nil
	})
	require.NoError(t, err)
	require.Equal(t, len(due), n, "MutateDue returns how many rows it claimed")
	requireRows(t, msgs, rows)
	for _, id := range dueIDs {
		got, err := k.get(f.ctx, f.s, id)
		require.NoError(t, err)
		fl := k.fields(got)
		require.Equal(t, int64(2), *fl.version)
		require.Equal(t, "fired", *fl.reason)
		require.True(t, fl.wakeAt.IsZero())
		requireSameTime(t, now, *fl.updatedAt, "UpdatedAt is fn's time")
	}

	n, rows, err = k.mutateDue(f.ctx, f.s, 10, func(_ time.Time, got []T) ([]store.Changed[T], error) {
		if len(got) > 0 {
			return nil, fmt.Errorf("fn got %d rows, none is due", len(got))
		}
		return nil, nil
	})
	require.NoError(t, err)
	require.Zero(t, n, "nothing else is due")
	require.Empty(t, rows)
}

func (k kind[T]) testMutateDueLimit(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	for range 5 {
		k.create(t, f, uuid.New(), rowOpts{wake: true, wakeIn: -time.Minute})
	}
	seen := map[uuid.UUID]bool{}
	for _, want := range []int{2, 2, 1, 0} {
		n, _, err := k.mutateDue(f.ctx, f.s, 2, func(_ time.Time, got []T) ([]store.Changed[T], error) {
			if len(got) != want {
				return nil, fmt.Errorf("fn got %d rows, want %d", len(got), want)
			}
			changes := make([]store.Changed[T], len(got))
			for i, r := range got {
				fl := k.fields(r)
				if seen[fl.id] {
					return nil, fmt.Errorf("row %s claimed again after its wake_at was cleared", fl.id)
				}
				seen[fl.id] = true
				*fl.wakeAt = time.Time{}
				changes[i] = store.Changed[T]{Row: r}
			}
			return changes, nil
		})
		require.NoError(t, err)
		require.Equal(t, want, n)
	}
	require.Len(t, seen, 5)
}

func (k kind[T]) testMutateDueError(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	row := k.create(t, f, uuid.New(), rowOpts{wake: true, wakeIn: -time.Minute})
	_, rows, err := k.mutateDue(f.ctx, f.s, 10, func(_ time.Time, got []T) ([]store.Changed[T], error) {
		for _, r := range got {
			*k.fields(r).wakeAt = time.Time{}
		}
		return []store.Changed[T]{{Row: got[0], Messages: messages("lost", 1)}}, errBuild
	})
	require.ErrorIs(t, err, errBuild, "MutateDue returns fn's error")
	require.Empty(t, rows)
	got, err := k.get(f.ctx, f.s, k.fields(row).id)
	require.NoError(t, err)
	require.Equal(t, int64(1), *k.fields(got).version, "nothing is written")
	requireSameTime(t, *k.fields(row).wakeAt, *k.fields(got).wakeAt, "the row is still due")
	require.Zero(t, backlog(t, f.ctx, f.s), "no message is written")
}

// testMutateDueConcurrent holds a first MutateDue inside fn while a second one runs: the second
// claims only the due rows the first does not hold, and together they claim each row once.
// claimInto returns a mutate function that records the ids it is given in into and clears their
// wake_at.
func (k kind[T]) claimInto(into map[uuid.UUID]bool) mutateFn[T] {
	return func(_ time.Time, got []T) ([]store.Changed[T], error) {
		clear(into) // fn may run again if the transaction is retried
		changes := make([]store.Changed[T], len(got))
		for i, r := range got {
			fl := k.fields(r)
			into[fl.id] = true
			*fl.wakeAt = time.Time{}
			changes[i] = store.Changed[T]{Row: r}
		}
		return changes, nil
	}
}

func (k kind[T]) testMutateDueConcurrent(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	const rows, firstLimit = 6, 3
	for range rows {
		k.create(t, f, uuid.New(), rowOpts{wake: true, wakeIn: -time.Minute})
	}
	claim := func(into map[uuid.UUID]bool) mutateFn[T] { return k.claimInto(into) }

	first, second := map[uuid.UUID]bool{}, map[uuid.UUID]bool{}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var (
		firstN   int
		firstErr error
		wg       sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		claimFirst := claim(first)
		firstN, _, firstErr = k.mutateDue(f.ctx, f.s, firstLimit, func(now time.Time, got []T) ([]store.Changed[T], error) {
			changes, err := claimFirst(now, got)
			once.Do(func() { close(entered) })
			select {
			case <-release:
			case <-f.ctx.Done():
				return nil, f.ctx.Err()
			}
			return changes, err
		})
		once.Do(func() { close(entered) })
	}()
	defer wg.Wait()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	select {
	case <-entered:
	case <-f.ctx.Done():
		t.Fatal("the first MutateDue never called fn")
	}
	secondN, _, err := k.mutateDue(f.ctx, f.s, rows, claim(second))
	require.NoError(t, err)
	close(release)
	wg.Wait()
	require.NoError(t, firstErr)

	require.Equal(t, firstLimit, firstN)
	require.Equal(t, rows-firstLimit, secondN, "the second claims the due rows the first does not hold")
	for id := range second {
		require.False(t, first[id], "row %s was claimed by both", id)
	}
	require.Len(t, first, firstLimit)
	require.Len(t, second, rows-firstLimit)

	n, _, err := k.mutateDue(f.ctx, f.s, rows, func(_ time.Time, got []T) ([]store.Changed[T], error) {
		if len(got) > 0 {
			return nil, errors.New("a row is still due")
		}
		return nil, nil
	})
	require.NoError(t, err)
	require.Zero(t, n, "both claims were written")
}
