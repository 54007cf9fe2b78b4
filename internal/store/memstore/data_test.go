package memstore_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/memstore"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
)

// TestCallersNeverShareStoredState: what a caller wrote, was given or read can be changed
// afterwards without changing what is stored.
func TestCallersNeverShareStoredState(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	msg := message("m")
	sg := f.createSaga(t, []transport.Outgoing{msg}, nil)
	want, err := f.s.GetSaga(f.ctx, sg.ID)
	require.NoError(t, err)
	snapshot := func(sg *store.Saga) string {
		b, err := json.Marshal(sg.State)
		require.NoError(t, err)
		return string(b) + string(sg.State.Input) + sg.RequestHash
	}
	scribble := func(sg *store.Saga) {
		sg.State.Reason, sg.RequestHash = "scribbled", "scribbled"
		sg.State.Steps[0].Status = saga.StepFailed
		sg.State.Input[0] = '['
	}

	scribble(sg) // the row the caller built
	got, err := f.s.GetSaga(f.ctx, sg.ID)
	require.NoError(t, err)
	scribble(got) // a row read
	_, err = f.s.Mutate(f.ctx, []uuid.UUID{sg.ID}, func(_ time.Time, rows []*store.Saga) ([]store.Change, error) {
		scribble(rows[0]) // a row given to fn but not returned
		return nil, nil
	})
	require.NoError(t, err)
	msg.Body[0], msg.Headers["k"] = 'X', "scribbled" // a message written

	got, err = f.s.GetSaga(f.ctx, sg.ID)
	require.NoError(t, err)
	require.Equal(t, snapshot(want), snapshot(got), "the stored saga did not change")
	f.clock.Advance(time.Minute)
	claimed, err := f.s.Outbox().ClaimExpired(f.ctx, 10)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.Equal(t, message("m"), claimed[0].Outgoing, "the stored message did not change")
}

// TestStatesComeBackAsFromJSONB: a state is stored as jsonb text, so raw JSON inside it comes back
// as PostgreSQL prints it, and the saga's input, a column written only at creation, is not
// changed by a mutation.
func TestStatesComeBackAsFromJSONB(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	sg := f.createSaga(t, nil, nil)
	_, err := f.s.Mutate(f.ctx, []uuid.UUID{sg.ID}, func(_ time.Time, rows []*store.Saga) ([]store.Change, error) {
		rows[0].State.Steps[0].Output = json.RawMessage(`{"b":1,"a":1.50e1}`)
		rows[0].State.Input = json.RawMessage(`"changed"`)
		return []store.Change{{Row: rows[0]}}, nil
	})
	require.NoError(t, err)
	got, err := f.s.GetSaga(f.ctx, sg.ID)
	require.NoError(t, err)
	require.Equal(t, `{"a": 15.0, "b": 1}`, string(got.State.Steps[0].Output), "raw JSON comes back as jsonb prints it")
	require.Equal(t, `{"amount":42}`, string(got.State.Input), "a mutation does not write the input")
}

// TestMutateStampsTheChangedRows: as pgstore does, a committed mutation sets the new version and
// UpdatedAt on the rows fn returned, and a creation the version and times on the built row.
func TestMutateStampsTheChangedRows(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	sg := f.createSaga(t, nil, nil)
	require.Equal(t, int64(1), sg.Version)
	f.clock.Advance(time.Second)
	var changed *store.Saga
	_, err := f.s.Mutate(f.ctx, []uuid.UUID{sg.ID}, func(_ time.Time, rows []*store.Saga) ([]store.Change, error) {
		changed = rows[0]
		return []store.Change{{Row: rows[0]}}, nil
	})
	require.NoError(t, err)
	require.Equal(t, int64(2), changed.Version)
	requireAt(t, f.clock.Now(), changed.UpdatedAt, "UpdatedAt of the changed row")
}

// TestRefusedValuesAreErrInvalidData: a value PostgreSQL refuses fails the call with
// store.ErrInvalidData, and nothing of the call is written.
func TestRefusedValuesAreErrInvalidData(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	good := uuid.New()
	badHash := f.newSaga(uuid.New(), []transport.Outgoing{message("bad")}, func(_ time.Time, sg *store.Saga) { sg.RequestHash = "nul\x00" })
	_, _, err := f.s.CreateSagas(f.ctx, []store.NewSaga{f.newSaga(good, []transport.Outgoing{message("good")}, nil), badHash})
	require.ErrorIs(t, err, store.ErrInvalidData, "a NUL in a text column")
	_, err = f.s.GetSaga(f.ctx, good)
	require.ErrorIs(t, err, store.ErrNotFound, "a refused value fails the whole batch")

	id := uuid.New()
	_, _, _, err = f.s.CreateTx(f.ctx, id, txBuild(id, nil, func(_ time.Time, tx *store.Tx) { tx.Tx.Reason = "nul \x00" }))
	require.ErrorIs(t, err, store.ErrInvalidData, "a NUL in a jsonb state")

	def := f.def
	def.Name = "nul\x00"
	_, _, err = f.s.RegisterDefinition(f.ctx, def)
	require.ErrorIs(t, err, store.ErrInvalidData, "a NUL in a definition's name")

	sg := f.createSaga(t, nil, nil)
	_, err = f.s.Mutate(f.ctx, []uuid.UUID{sg.ID}, func(_ time.Time, rows []*store.Saga) ([]store.Change, error) {
		rows[0].WakeAt = time.Date(-5000, time.January, 1, 0, 0, 0, 0, time.UTC)
		return []store.Change{{Row: rows[0]}}, nil
	})
	require.ErrorIs(t, err, store.ErrInvalidData, "a time outside timestamptz's range")

	n, _, err := f.s.Outbox().Backlog(f.ctx)
	require.NoError(t, err)
	require.Zero(t, n, "no message was written")
}

// TestConstraintsFailTheBatch: what a constraint refuses (a definition that is not registered,
// a NULL input or body) fails the call as in PostgreSQL, but is not store.ErrInvalidData.
func TestConstraintsFailTheBatch(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	good := uuid.New()
	for name, bad := range map[string]store.NewSaga{
		"unregistered definition": f.newSaga(uuid.New(), nil, func(_ time.Time, sg *store.Saga) { sg.DefinitionVersion = 99 }),
		"NULL input":              f.newSaga(uuid.New(), nil, func(_ time.Time, sg *store.Saga) { sg.State.Input = nil }),
		"NULL body":               f.newSaga(uuid.New(), []transport.Outgoing{{Exchange: "x", RoutingKey: "k"}}, nil),
	} {
		_, _, err := f.s.CreateSagas(f.ctx, []store.NewSaga{f.newSaga(good, nil, nil), bad})
		require.Error(t, err, name)
		require.NotErrorIs(t, err, store.ErrInvalidData, name)
		_, err = f.s.GetSaga(f.ctx, good)
		require.ErrorIs(t, err, store.ErrNotFound, "%s fails the whole batch", name)
	}
}

// TestDeleteSoonDeletesAtOnce: the store offers store.DeferredDelete, and deletes at once.
func TestDeleteSoonDeletesAtOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	id := uuid.New()
	_, _, rows, err := f.s.CreateTx(f.ctx, id, txBuild(id, []transport.Outgoing{message("a"), message("b")}, nil))
	require.NoError(t, err)
	dd, ok := f.s.Outbox().(store.DeferredDelete)
	require.True(t, ok, "the outbox offers DeferredDelete")
	dd.DeleteSoon([]int64{rows[0].ID})
	n, _, err := f.s.Outbox().Backlog(f.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "DeleteSoon deleted its row")
	require.NoError(t, dd.FlushDeletes(f.ctx))
}

// TestLimitsAreSQLLimits: a limit is a LIMIT: 0 selects nothing, and a negative one is refused
// as PostgreSQL refuses it, as store.ErrInvalidData.
func TestLimitsAreSQLLimits(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{})
	f.createSaga(t, []transport.Outgoing{message("m")}, func(now time.Time, sg *store.Saga) {
		sg.WakeAt, sg.FinishedAt = now, now.Add(-time.Hour) // due, finished, its message's lease lapsing
	})
	f.createTx(t, nil, nil)
	f.clock.Advance(time.Hour)
	noop := func(time.Time, []*store.Saga) ([]store.Change, error) { return nil, nil }
	for _, limit := range []int{0, -1} {
		_, listErr := f.s.ListSagas(f.ctx, store.ListFilter{Limit: limit})
		_, txErr := f.s.ListTx(f.ctx, store.TxFilter{Limit: limit})
		due, _, dueErr := f.s.MutateDue(f.ctx, limit, noop)
		claimed, claimErr := f.s.Outbox().ClaimExpired(f.ctx, limit)
		deleted, deleteErr := f.s.DeleteFinished(f.ctx, time.Minute, limit, nil)
		for name, err := range map[string]error{"ListSagas": listErr, "ListTx": txErr, "MutateDue": dueErr, "ClaimExpired": claimErr, "DeleteFinished": deleteErr} {
			if limit < 0 {
				require.ErrorIs(t, err, store.ErrInvalidData, "%s with a negative limit", name)
			} else {
				require.NoError(t, err, "%s with limit 0", name)
			}
		}
		require.Zero(t, due+len(claimed)+deleted, "limit %d selects nothing", limit)
	}
	sagas, err := f.s.ListSagas(f.ctx, store.ListFilter{Limit: 0})
	require.NoError(t, err)
	require.Empty(t, sagas, "limit 0 lists nothing")
	txs, err := f.s.ListTx(f.ctx, store.TxFilter{Limit: 0})
	require.NoError(t, err)
	require.Empty(t, txs, "limit 0 lists nothing")
	n, err := f.s.DeleteFinished(f.ctx, time.Minute, 1, nil)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the saga could have been selected")
}
