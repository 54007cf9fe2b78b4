package storetest

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
)

func testCreateSagas(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	ids := newIDs(3)
	var (
		batch []store.NewSaga
		msgs  []transport.Outgoing
		nows  []time.Time
	)
	for i, id := range ids {
		m := messages(id.String(), 2)
		msgs = append(msgs, m...)
		batch = append(batch, f.newSaga(id, fmt.Sprintf("hash-%d", i), m, func(now time.Time, sg *store.Saga) {
			nows = append(nows, now)
			if i == 1 {
				sg.WakeAt = now.Add(time.Minute)
			}
		}))
	}
	sagas, rows := f.createSagas(t, batch...)
	requireRows(t, msgs, rows)
	require.Equal(t, len(msgs), backlog(t, f.ctx, f.s), "the messages are in the outbox")

	for i, sg := range sagas {
		require.Equal(t, ids[i], sg.ID, "result %d is for its request", i)
		require.Equal(t, int64(1), sg.Version, "a new saga has version 1")
		require.Equal(t, fmt.Sprintf("hash-%d", i), sg.RequestHash)
		requireSameTime(t, nows[i], sg.CreatedAt, "CreatedAt is the database time given to Build")
		requireSameTime(t, nows[i], sg.UpdatedAt, "UpdatedAt of a new saga")
		got, err := f.s.GetSaga(f.ctx, sg.ID)
		require.NoError(t, err, "GetSaga")
		requireSameSaga(t, sg, got)
		require.Equal(t, saga.StatusRunning, got.State.Status)
		require.Len(t, got.State.Steps, 2)
	}
	requireSameTime(t, nows[1].Add(time.Minute), sagas[1].WakeAt, "WakeAt")
}

func testCreateSagasExisting(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	existing := uuid.New()
	olds, _ := f.createSagas(t, f.newSaga(existing, "first", messages("first", 2), nil))
	before := backlog(t, f.ctx, f.s)

	fresh := uuid.New()
	freshMsgs := messages("fresh", 1)
	res, rows, err := f.s.CreateSagas(f.ctx, []store.NewSaga{
		f.newSaga(existing, "second", messages("second", 3), func(_ time.Time, sg *store.Saga) { sg.State.Reason = "second" }),
		f.newSaga(fresh, "fresh", freshMsgs, nil),
	})
	require.NoError(t, err)
	require.Len(t, res, 2)
	require.NoError(t, res[0].Err)
	require.False(t, res[0].Created, "an existing id is not created again")
	require.NotNil(t, res[0].Saga, "the existing saga is returned")
	requireSameSaga(t, olds[0], res[0].Saga)
	require.Equal(t, "first", res[0].Saga.RequestHash, "the existing saga keeps the request that created it")
	require.NoError(t, res[1].Err)
	require.True(t, res[1].Created, "the rest of the batch is created")

	requireRows(t, freshMsgs, rows)
	require.Equal(t, before+len(freshMsgs), backlog(t, f.ctx, f.s), "nothing is written for the existing saga")
	got, err := f.s.GetSaga(f.ctx, existing)
	require.NoError(t, err)
	requireSameSaga(t, olds[0], got)
}

func testCreateSagasSameIDInBatch(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	id := uuid.New()
	firstMsgs := messages("first", 2)
	res, rows, err := f.s.CreateSagas(f.ctx, []store.NewSaga{
		f.newSaga(id, "first", firstMsgs, nil),
		f.newSaga(uuid.New(), "other", nil, nil),
		f.newSaga(id, "second", messages("second", 2), nil),
	})
	require.NoError(t, err)
	require.Len(t, res, 3)
	require.NoError(t, res[0].Err)
	require.True(t, res[0].Created, "the first request of an id creates it")
	require.True(t, res[1].Created)
	require.NoError(t, res[2].Err, "a repeated id in one batch is not an error")
	require.False(t, res[2].Created, "a repeated id in one batch is not created twice")
	require.NotNil(t, res[2].Saga)
	require.Equal(t, id, res[2].Saga.ID)
	require.Equal(t, "first", res[2].Saga.RequestHash, "the repeated id returns the saga its first request created")

	requireRows(t, firstMsgs, rows)
	require.Equal(t, len(firstMsgs), backlog(t, f.ctx, f.s), "only the first request's messages are written")
	got, err := f.s.GetSaga(f.ctx, id)
	require.NoError(t, err)
	require.Equal(t, "first", got.RequestHash)
}

func testCreateSagasBuildError(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	ids := newIDs(3)
	var msgs []transport.Outgoing
	batch := make([]store.NewSaga, 3)
	for i, id := range ids {
		m := messages(id.String(), 1)
		if i != 1 {
			msgs = append(msgs, m...)
		}
		batch[i] = f.newSaga(id, "h", m, nil)
	}
	batch[1].Build = func(time.Time) (store.Change, error) { return store.Change{}, errBuild }

	res, rows, err := f.s.CreateSagas(f.ctx, batch)
	require.NoError(t, err, "a Build error fails only its item")
	require.Len(t, res, 3)
	require.ErrorIs(t, res[1].Err, errBuild, "the failed item carries its Build error")
	require.False(t, res[1].Created)
	for _, i := range []int{0, 2} {
		require.NoError(t, res[i].Err)
		require.True(t, res[i].Created, "item %d is created", i)
	}
	requireRows(t, msgs, rows)
	_, err = f.s.GetSaga(f.ctx, ids[1])
	require.ErrorIs(t, err, store.ErrNotFound, "the failed item is not stored")
}

// testCreateSagasSameIDAfterBuildError: when the first request of an id fails its Build, that
// error belongs to it alone ("an error of one Build fails only that one"); a later request of the
// same id in the batch is built and created on its own.
func testCreateSagasSameIDAfterBuildError(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	id := uuid.New()
	failing := f.newSaga(id, "first", nil, nil)
	failing.Build = func(time.Time) (store.Change, error) { return store.Change{}, errBuild }
	msgs := messages("second", 1)
	res, rows, err := f.s.CreateSagas(f.ctx, []store.NewSaga{failing, f.newSaga(id, "second", msgs, nil)})
	require.NoError(t, err)
	require.Len(t, res, 2)
	require.ErrorIs(t, res[0].Err, errBuild)
	require.NoError(t, res[1].Err, "a Build error of the first request of an id must not fail a later request of that id")
	require.True(t, res[1].Created)
	requireRows(t, msgs, rows)
}

func testCreateSagasEmpty(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	res, rows, err := f.s.CreateSagas(f.ctx, nil)
	require.NoError(t, err)
	require.Empty(t, res)
	require.Empty(t, rows)
}

func testGetSagaNotFound(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	_, err := f.s.GetSaga(f.ctx, uuid.New())
	require.ErrorIs(t, err, store.ErrNotFound)
}

// testListSagas lists 40 sagas of two definitions in three statuses, written in batches so
// that many share a creation time, by every filter and in pages of several sizes.
func testListSagas(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	other, _, err := f.s.RegisterDefinition(f.ctx, definition(t, "refund", 1))
	require.NoError(t, err)
	otherMachine := saga.NewMachine(&other)
	statuses := []saga.Status{saga.StatusRunning, saga.StatusCompleted, saga.StatusFailed}

	type meta struct {
		def    string
		status saga.Status
	}
	all := map[uuid.UUID]meta{}
	n := 0
	for _, size := range []int{16, 1, 13, 1, 9} {
		batch := make([]store.NewSaga, size)
		for i := range batch {
			id := uuid.New()
			def, m := f.def, f.m
			if n%3 == 0 {
				def, m = other, otherMachine
			}
			st := statuses[n%len(statuses)]
			all[id] = meta{def.Name, st}
			batch[i] = store.NewSaga{ID: id, Build: func(now time.Time) (store.Change, error) {
				state, _ := m.Start(id.String(), []byte(`{}`), time.Time{}, now)
				state.Status = st
				return store.Change{Row: &store.Saga{ID: id, DefinitionName: def.Name, DefinitionVersion: def.Version, State: state}}, nil
			}}
			n++
		}
		f.createSagas(t, batch...)
	}

	for _, filter := range []store.ListFilter{
		{},
		{Status: saga.StatusRunning},
		{Status: saga.StatusFailed},
		{Definition: "refund"},
		{Definition: f.def.Name, Status: saga.StatusCompleted},
		{Definition: "nosuch"},
		{Status: saga.StatusCompensated},
	} {
		want := map[uuid.UUID]bool{}
		for id, m := range all {
			if (filter.Status == "" || m.status == filter.Status) && (filter.Definition == "" || m.def == filter.Definition) {
				want[id] = true
			}
		}
		for _, limit := range []int{1, 7, 40, 100} {
			name := fmt.Sprintf("status=%q definition=%q limit=%d", filter.Status, filter.Definition, limit)
			got := listAll(t, name, limit, len(all), func(at time.Time, id uuid.UUID) ([]*store.Saga, error) {
				lf := filter
				lf.Limit, lf.AfterCreatedAt, lf.AfterID = limit, at, id
				return f.s.ListSagas(f.ctx, lf)
			}, func(sg *store.Saga) (time.Time, uuid.UUID) { return sg.CreatedAt, sg.ID })
			seen := map[uuid.UUID]bool{}
			for _, sg := range got {
				require.True(t, want[sg.ID], "%s: saga %s does not match the filter", name, sg.ID)
				seen[sg.ID] = true
				require.Equal(t, all[sg.ID].status, sg.State.Status, "%s: status", name)
				require.Equal(t, all[sg.ID].def, sg.DefinitionName, "%s: definition", name)
			}
			require.Len(t, seen, len(want), "%s: every matching saga is listed once", name)
		}
	}
}

// listAll pages through a listing, each page continuing after the previous page's last element,
// until a page is empty. It checks that pages hold at most limit elements, that a short page is
// the last one with elements, and that elements come newest first by (creation time, id), which
// also rules out duplicates.
func listAll[T any](t *testing.T, name string, limit, most int, list func(afterAt time.Time, afterID uuid.UUID) ([]T, error), key func(T) (time.Time, uuid.UUID)) []T {
	t.Helper()
	var (
		out     []T
		afterAt time.Time
		afterID uuid.UUID
		short   bool
	)
	for page := 0; ; page++ {
		require.LessOrEqual(t, page, most+1, "%s: the listing does not end", name)
		items, err := list(afterAt, afterID)
		require.NoError(t, err, "%s: page %d", name, page)
		require.LessOrEqual(t, len(items), limit, "%s: page %d is longer than the limit", name, page)
		if len(items) == 0 {
			return out
		}
		require.False(t, short, "%s: page %d follows a short page", name, page)
		short = len(items) < limit
		for _, it := range items {
			at, id := key(it)
			if len(out) > 0 {
				prevAt, prevID := key(out[len(out)-1])
				newer := at.After(prevAt) || (at.Equal(prevAt) && bytes.Compare(id[:], prevID[:]) >= 0)
				require.False(t, newer, "%s: %s (%v) is listed after %s (%v): not newest first, or listed twice", name, id, at, prevID, prevAt)
			}
			out = append(out, it)
		}
		afterAt, afterID = key(items[len(items)-1])
	}
}
