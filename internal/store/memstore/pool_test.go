package memstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/memstore"
)

// calls returns one call of every method that takes a connection, each failing the test if it
// runs a function of the caller's.
func calls(t *testing.T, f *fixture) map[string]func(ctx context.Context) error {
	sagaID, txID := f.createSaga(t, nil, nil).ID, f.createTx(t, nil, nil).ID
	never := func(what string) { t.Errorf("%s ran although no connection was free", what) }
	mutateSagas := func(time.Time, []*store.Saga) ([]store.Change, error) { never("a mutate function"); return nil, nil }
	mutateTxs := func(time.Time, []*store.Tx) ([]store.TxChange, error) { never("a mutate function"); return nil, nil }
	return map[string]func(ctx context.Context) error{
		"RegisterDefinition": func(ctx context.Context) error { _, _, err := f.s.RegisterDefinition(ctx, f.def); return err },
		"GetDefinition":      func(ctx context.Context) error { _, err := f.s.GetDefinition(ctx, f.def.Name, 0); return err },
		"ListDefinitions": func(ctx context.Context) error {
			_, err := f.s.ListDefinitions(ctx, store.DefinitionFilter{})
			return err
		},
		"CreateSagas": func(ctx context.Context) error {
			_, _, err := f.s.CreateSagas(ctx, []store.NewSaga{{ID: uuid.New(), Build: func(time.Time) (store.Change, error) {
				never("a Build function")
				return store.Change{}, errors.New("built")
			}}})
			return err
		},
		"GetSaga":   func(ctx context.Context) error { _, err := f.s.GetSaga(ctx, sagaID); return err },
		"ListSagas": func(ctx context.Context) error { _, err := f.s.ListSagas(ctx, store.ListFilter{Limit: 10}); return err },
		"Mutate": func(ctx context.Context) error {
			_, err := f.s.Mutate(ctx, []uuid.UUID{sagaID}, mutateSagas)
			return err
		},
		"MutateDue": func(ctx context.Context) error { _, _, err := f.s.MutateDue(ctx, 10, mutateSagas); return err },
		"CreateTx": func(ctx context.Context) error {
			_, _, _, err := f.s.CreateTx(ctx, uuid.New(), func(time.Time) (store.TxChange, error) {
				never("a build function")
				return store.TxChange{}, errors.New("built")
			})
			return err
		},
		"GetTx":          func(ctx context.Context) error { _, err := f.s.GetTx(ctx, txID); return err },
		"ListTx":         func(ctx context.Context) error { _, err := f.s.ListTx(ctx, store.TxFilter{Limit: 10}); return err },
		"MutateTx":       func(ctx context.Context) error { _, err := f.s.MutateTx(ctx, []uuid.UUID{txID}, mutateTxs); return err },
		"MutateDueTx":    func(ctx context.Context) error { _, _, err := f.s.MutateDueTx(ctx, 10, mutateTxs); return err },
		"DeleteFinished": func(ctx context.Context) error { _, err := f.s.DeleteFinished(ctx, time.Hour, 10, nil); return err },
		"Stats":          func(ctx context.Context) error { _, err := f.s.Stats(ctx); return err },
		"ClaimExpired":   func(ctx context.Context) error { _, err := f.s.Outbox().ClaimExpired(ctx, 10); return err },
		"Delete":         func(ctx context.Context) error { return f.s.Outbox().Delete(ctx, []int64{1}) },
		"Backlog":        func(ctx context.Context) error { _, _, err := f.s.Outbox().Backlog(ctx); return err },
	}
}

// TestMaxConnsEveryCallWaitsForAConnection: with the one connection of the pool taken, every
// method waits for it until its context ends, and returns the context's error.
func TestMaxConnsEveryCallWaitsForAConnection(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{MaxConns: 1})
	all := calls(t, f)
	release := holdConnection(t, f)
	t.Run("held", func(t *testing.T) {
		for name, call := range all {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				err := call(withTimeout(t, shortWait))
				require.ErrorIs(t, err, context.DeadlineExceeded, "%s with no free connection", name)
			})
		}
	})
	release()
	for name, call := range all {
		if name == "CreateSagas" || name == "CreateTx" || name == "Mutate" || name == "MutateDue" || name == "MutateTx" || name == "MutateDueTx" {
			continue // their functions fail the test when they run
		}
		require.NoError(t, call(f.ctx), "%s once the connection is free", name)
	}
}

// TestMaxConnsCallProceedsWhenAConnectionIsFreed: a call waiting for a connection takes the one
// given back, and a waiting call whose context is cancelled gives up with context.Canceled.
func TestMaxConnsCallProceedsWhenAConnectionIsFreed(t *testing.T) {
	t.Parallel()
	f := setup(t, memstore.Config{MaxConns: 1})
	release := holdConnection(t, f)

	cancelled, cancel := context.WithCancel(f.ctx)
	gaveUp := make(chan error, 1)
	go func() { _, err := f.s.Stats(cancelled); gaveUp <- err }()
	var waitedErr error
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		_, waitedErr = f.s.Stats(f.ctx)
	}()

	cancel()
	select {
	case err := <-gaveUp:
		require.ErrorIs(t, err, context.Canceled, "a cancelled call gives up waiting")
	case <-time.After(testTimeout):
		t.Fatal("a call whose context was cancelled kept waiting for a connection")
	}
	select {
	case <-waited:
		t.Fatalf("a call returned while the only connection was held: %v", waitedErr)
	default:
	}
	release()
	waitDone(t, waited, "the waiting call to take the freed connection")
	require.NoError(t, waitedErr)
}

// outerCall is a call whose function the store runs while it holds a connection.
type outerCall struct {
	name string
	// run calls the store once, with a function that calls nested and, if that succeeded,
	// changes something; written reports whether the change was written.
	run func(t *testing.T, f *fixture, ctx context.Context, nested func() error) (written func() bool, err error)
}

// outerCalls returns a Mutate, a MutateDueTx, a CreateSagas and a CreateTx as outer calls.
func outerCalls() []outerCall {
	return []outerCall{
		{"Mutate", func(t *testing.T, f *fixture, ctx context.Context, nested func() error) (func() bool, error) {
			sg := f.createSaga(t, nil, nil)
			_, err := f.s.Mutate(ctx, []uuid.UUID{sg.ID}, func(_ time.Time, got []*store.Saga) ([]store.Change, error) {
				if err := nested(); err != nil {
					return nil, err
				}
				return []store.Change{{Row: got[0]}}, nil
			})
			return func() bool { return sagaVersion(t, f, sg.ID) == 2 }, err
		}},
		{"MutateDueTx", func(t *testing.T, f *fixture, ctx context.Context, nested func() error) (func() bool, error) {
			tx := f.createTx(t, nil, func(now time.Time, tx *store.Tx) { tx.WakeAt = now })
			_, _, err := f.s.MutateDueTx(ctx, 1, func(_ time.Time, got []*store.Tx) ([]store.TxChange, error) {
				if err := nested(); err != nil {
					return nil, err
				}
				return []store.TxChange{{Row: got[0]}}, nil
			})
			return func() bool { got, err := f.s.GetTx(f.ctx, tx.ID); require.NoError(t, err); return got.Version == 2 }, err
		}},
		{"CreateSagas", func(t *testing.T, f *fixture, ctx context.Context, nested func() error) (func() bool, error) {
			id := uuid.New()
			ns := f.newSaga(id, nil, nil)
			build := ns.Build
			ns.Build = func(now time.Time) (store.Change, error) {
				if err := nested(); err != nil {
					return store.Change{}, err
				}
				return build(now)
			}
			res, _, err := f.s.CreateSagas(ctx, []store.NewSaga{ns})
			if err == nil {
				err = res[0].Err
			}
			return func() bool { _, err := f.s.GetSaga(f.ctx, id); return err == nil }, err
		}},
		{"CreateTx", func(t *testing.T, f *fixture, ctx context.Context, nested func() error) (func() bool, error) {
			id := uuid.New()
			_, _, _, err := f.s.CreateTx(ctx, id, func(now time.Time) (store.TxChange, error) {
				if err := nested(); err != nil {
					return store.TxChange{}, err
				}
				return txBuild(id, nil, nil)(now)
			})
			return func() bool { _, err := f.s.GetTx(f.ctx, id); return err == nil }, err
		}},
	}
}

// TestMaxConnsNestedCallDeadlocksAPoolOfOne: a function the store runs while it holds the one
// connection (a mutate or Build function) and that calls the store itself waits for a second
// connection until its context ends; nothing is written. With two connections it proceeds.
func TestMaxConnsNestedCallDeadlocksAPoolOfOne(t *testing.T) {
	t.Parallel()
	for _, outer := range outerCalls() {
		t.Run(outer.name, func(t *testing.T) {
			t.Parallel()
			for _, conns := range []int{1, 2} {
				f := setup(t, memstore.Config{MaxConns: conns})
				ctx := f.ctx
				if conns == 1 {
					ctx = withTimeout(t, shortWait)
				}
				var nestedErr error
				written, err := outer.run(t, f, ctx, func() error {
					_, nestedErr = f.s.ListDefinitions(ctx, store.DefinitionFilter{})
					return nestedErr
				})
				if conns == 1 {
					require.ErrorIs(t, nestedErr, context.DeadlineExceeded, "the nested call waits for a second connection until ctx ends")
					require.ErrorIs(t, err, context.DeadlineExceeded, "the outer call fails with it")
					require.False(t, written(), "nothing is written")
					continue
				}
				require.NoError(t, nestedErr, "with a second connection the nested call proceeds")
				require.NoError(t, err)
				require.True(t, written(), "the change is written")
			}
		})
	}
}

func sagaVersion(t *testing.T, f *fixture, id uuid.UUID) int64 {
	t.Helper()
	sg, err := f.s.GetSaga(f.ctx, id)
	require.NoError(t, err)
	return sg.Version
}
