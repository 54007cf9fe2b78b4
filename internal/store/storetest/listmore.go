package storetest

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// testListSagasByVersionTimeAndAge lists sagas of two versions of one definition, created in
// three batches, by version, by a creation-time range and oldest first, in pages of two.
func testListSagasByVersionTimeAndAge(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	v2, created, err := f.s.RegisterDefinition(f.ctx, definition(t, f.def.Name, 3))
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, 2, v2.Version)
	var batches [][]*store.Saga
	for range 3 {
		var batch []store.NewSaga
		for i := range 3 {
			id, def := uuid.New(), f.def
			if i == 2 {
				def = v2
			}
			m := saga.NewMachine(&def)
			batch = append(batch, store.NewSaga{ID: id, Build: func(now time.Time) (store.Change, error) {
				state, _ := m.Start(id.String(), []byte(`{}`), time.Time{}, now)
				return store.Change{Row: &store.Saga{ID: id, DefinitionName: def.Name, DefinitionVersion: def.Version, State: state}}, nil
			}})
		}
		sagas, _ := f.createSagas(t, batch...)
		batches = append(batches, sagas)
	}
	list := func(lf store.ListFilter) []*store.Saga {
		var out []*store.Saga
		for page := 0; page < 10; page++ {
			lf.Limit = 2
			got, err := f.s.ListSagas(f.ctx, lf)
			require.NoError(t, err)
			out = append(out, got...)
			if len(got) < 2 {
				return out
			}
			lf.AfterCreatedAt, lf.AfterID = got[len(got)-1].CreatedAt, got[len(got)-1].ID
		}
		t.Fatal("the listing does not end")
		return nil
	}
	v2Only := list(store.ListFilter{Definition: f.def.Name, DefinitionVersion: 2})
	require.Len(t, v2Only, 3)
	for _, sg := range v2Only {
		require.Equal(t, 2, sg.DefinitionVersion)
	}
	oldest := list(store.ListFilter{OldestFirst: true})
	require.Len(t, oldest, 9, "oldest first lists every saga once")
	for i := 1; i < len(oldest); i++ {
		a, b := oldest[i-1], oldest[i]
		require.False(t, a.CreatedAt.After(b.CreatedAt), "not oldest first")
		require.NotEqual(t, a.ID, b.ID)
	}
	newest := list(store.ListFilter{})
	for i := range newest {
		require.Equal(t, newest[i].ID, oldest[len(oldest)-1-i].ID, "oldest first is newest first reversed")
	}
	from, before := batches[1][0].CreatedAt, batches[2][0].CreatedAt
	if from.Equal(before) {
		t.Skip("two batches share a creation time: no range to test")
	}
	middle := list(store.ListFilter{CreatedFrom: from, CreatedBefore: before})
	require.Len(t, middle, 3, "the range holds the middle batch only")
	for _, sg := range middle {
		require.False(t, sg.CreatedAt.Before(from))
		require.True(t, sg.CreatedAt.Before(before))
	}
}

// testCountUnfinished counts a definition's RUNNING, COMPENSATING and FAILED sagas by version
// and status, and nothing finished nor of another definition.
func testCountUnfinished(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	v2, _, err := f.s.RegisterDefinition(f.ctx, definition(t, f.def.Name, 3))
	require.NoError(t, err)
	other, _, err := f.s.RegisterDefinition(f.ctx, definition(t, "refund", 1))
	require.NoError(t, err)
	var batch []store.NewSaga
	for _, s := range []struct {
		def    saga.Definition
		status saga.Status
	}{
		{f.def, saga.StatusRunning}, {f.def, saga.StatusRunning}, {f.def, saga.StatusFailed}, {f.def, saga.StatusCompleted},
		{v2, saga.StatusCompensating}, {v2, saga.StatusCompensated}, {other, saga.StatusRunning},
	} {
		id, def, st := uuid.New(), s.def, s.status
		m := saga.NewMachine(&def)
		batch = append(batch, store.NewSaga{ID: id, Build: func(now time.Time) (store.Change, error) {
			state, _ := m.Start(id.String(), []byte(`{}`), time.Time{}, now)
			state.Status = st
			return store.Change{Row: &store.Saga{ID: id, DefinitionName: def.Name, DefinitionVersion: def.Version, State: state}}, nil
		}})
	}
	f.createSagas(t, batch...)
	got, err := f.s.CountUnfinished(f.ctx, f.def.Name)
	require.NoError(t, err)
	require.Equal(t, map[int]map[saga.Status]int{
		1: {saga.StatusRunning: 2, saga.StatusFailed: 1},
		2: {saga.StatusCompensating: 1},
	}, got)
	none, err := f.s.CountUnfinished(f.ctx, "nosuch")
	require.NoError(t, err)
	require.Empty(t, none)
}
