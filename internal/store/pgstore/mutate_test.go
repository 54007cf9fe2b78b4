package pgstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/migrations"
	"github.com/sagacoord/sagacoord/saga"
)

// TestMutateTimeIsNotOlderThanTheLockedRows is a BUG test: it fails until Mutate reads the
// database time after it has locked the rows.
//
// Mutate passes fn now() of its transaction, which PostgreSQL fixes when the transaction begins,
// before the locking SELECT waits for other transactions. A Mutate that waited for a lock
// therefore runs fn with a time older than changes already committed to the rows it holds: the
// saga's UpdatedAt and history go back in time, timers it sets (now + backoff or timeout) fire
// early by the time it waited, and deadlines are judged late by as much.
//
// The test makes that happen deterministically: C = Mutate([Y, X]) begins and waits for Y, held
// by H; meanwhile A = Mutate([X]) begins later, changes X and commits; then H lets Y go, and C's
// fn sees X updated at A's time, which is after the time C's fn is given.
func TestMutateTimeIsNotOlderThanTheLockedRows(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool, dbURL := testenv.Pool(t)
	_, err := (&migrations.Migrator{Pool: pool}).Up(ctx)
	require.NoError(t, err)
	s := pgstore.New(pool, pgstore.Config{})
	// C runs on a pool of its own, named so that the test can see when it waits for a lock.
	appName := testenv.Name("mutate_c_")
	cfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	cPool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer cPool.Close()
	c := pgstore.New(cPool, pgstore.Config{})

	def := registerDefinition(t, s, "order", 2)
	ids := []uuid.UUID{uuid.New(), uuid.New()}
	// Mutate locks in id order: y before x.
	if bytes.Compare(ids[0][:], ids[1][:]) > 0 {
		ids[0], ids[1] = ids[1], ids[0]
	}
	y, x := ids[0], ids[1]
	createSagas(t, s, def, ids)

	held, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	var hErr, cErr error
	wg.Add(1)
	go func() { // H holds y until released.
		defer wg.Done()
		_, hErr = s.Mutate(ctx, []uuid.UUID{y}, func(time.Time, []*store.Saga) ([]store.Change, error) {
			close(held)
			<-release
			return nil, nil
		})
	}()
	<-held

	var (
		cNow     time.Time
		xUpdated time.Time
	)
	wg.Add(1)
	go func() { // C begins now, then waits for y.
		defer wg.Done()
		_, cErr = c.Mutate(ctx, []uuid.UUID{y, x}, func(now time.Time, sagas []*store.Saga) ([]store.Change, error) {
			cNow = now
			for _, sg := range sagas {
				if sg.ID == x {
					xUpdated = sg.UpdatedAt
				}
			}
			return nil, nil
		})
	}()
	waitLockWait(t, ctx, pool, appName)

	// A begins after C, changes x and commits while C waits.
	_, err = s.Mutate(ctx, []uuid.UUID{x}, func(_ time.Time, sagas []*store.Saga) ([]store.Change, error) {
		sagas[0].State.Reason = "changed by A"
		return []store.Change{{Row: sagas[0]}}, nil
	})
	require.NoError(t, err)
	releaseOnce.Do(func() { close(release) })
	wg.Wait()
	require.NoError(t, hErr)
	require.NoError(t, cErr)
	require.False(t, cNow.Before(xUpdated),
		"BUG: Mutate gave fn the time %v, older than the update at %v already committed to a row fn holds (%v earlier): "+
			"the time comes from now(), fixed when the transaction began, before it waited for the lock",
		cNow, xUpdated, xUpdated.Sub(cNow))
}

// waitLockWait waits until a backend of the application waits for a lock.
func waitLockWait(t *testing.T, ctx context.Context, pool *pgxpool.Pool, appName string) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock')`, appName).Scan(&waiting)
		require.NoError(t, err, "waiting for %s to wait for a lock", appName)
		if waiting {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s never waited for a lock", appName)
		}
	}
}

func registerDefinition(tb testing.TB, s store.Store, name string, steps int) saga.Definition {
	tb.Helper()
	d := saga.Definition{Name: name}
	for i := range steps {
		d.Steps = append(d.Steps, saga.StepDefinition{Name: fmt.Sprintf("step-%d", i), Participant: "bank", Action: "debit", Compensation: "credit"})
	}
	n, err := saga.Normalize(d)
	require.NoError(tb, err)
	def, _, err := s.RegisterDefinition(context.Background(), n)
	require.NoError(tb, err)
	return def
}

// createSagas starts a saga of def for each id, without messages.
func createSagas(tb testing.TB, s store.Store, def saga.Definition, ids []uuid.UUID) {
	tb.Helper()
	m := saga.NewMachine(&def)
	batch := make([]store.NewSaga, len(ids))
	for i, id := range ids {
		batch[i] = store.NewSaga{ID: id, Build: func(now time.Time) (store.Change, error) {
			st, _ := m.Start(id.String(), json.RawMessage(`{"amount":42}`), time.Time{}, now)
			return store.Change{Row: &store.Saga{ID: id, DefinitionName: def.Name, DefinitionVersion: def.Version, State: st, RequestHash: "h"}}, nil
		}}
	}
	res, _, err := s.CreateSagas(context.Background(), batch)
	require.NoError(tb, err)
	for i, r := range res {
		require.NoError(tb, r.Err, "saga %d", i)
		require.True(tb, r.Created, "saga %d", i)
	}
}
