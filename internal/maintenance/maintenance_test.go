package maintenance_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/maintenance"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/memstore"
	"github.com/sagacoord/sagacoord/saga"
)

// clock is the store's database time, moved by the test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// fixture is a store with a definition and a way to add sagas in a given status.
type fixture struct {
	ctx   context.Context
	clock *clock
	s     *memstore.Store
	m     *saga.Machine
	def   saga.Definition
}

func setup(t *testing.T) *fixture {
	t.Helper()
	c := &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	f := &fixture{ctx: context.Background(), clock: c, s: memstore.New(memstore.Config{Clock: c.Now})}
	def, err := saga.Normalize(saga.Definition{Name: "d", Steps: []saga.StepDefinition{{Name: "a", Participant: "p", Action: "do"}}})
	require.NoError(t, err)
	f.def, _, err = f.s.RegisterDefinition(f.ctx, def)
	require.NoError(t, err)
	f.m = saga.NewMachine(&f.def)
	return f
}

// add creates n sagas with status; a terminal one is finished at the database time.
func (f *fixture) add(t *testing.T, n int, status saga.Status) {
	t.Helper()
	batch := make([]store.NewSaga, n)
	for i := range batch {
		id := uuid.New()
		batch[i] = store.NewSaga{ID: id, Build: func(now time.Time) (store.Change, error) {
			st, _ := f.m.Start(id.String(), json.RawMessage(`{}`), time.Time{}, now)
			st.Status = status
			sg := &store.Saga{ID: id, DefinitionName: f.def.Name, DefinitionVersion: f.def.Version, State: st}
			if status.Terminal() {
				sg.FinishedAt = now
			}
			return store.Change{Row: sg}, nil
		}}
	}
	res, _, err := f.s.CreateSagas(f.ctx, batch)
	require.NoError(t, err)
	for _, r := range res {
		require.NoError(t, r.Err)
	}
}

func TestRetainerDeletesWhatIsPastRetentionInBatches(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.add(t, maintenance.RetentionBatch+5, saga.StatusCompleted)
	f.clock.advance(2 * time.Hour)
	f.add(t, 3, saga.StatusCompensated) // finished too recently
	f.add(t, 2, saga.StatusRunning)     // not finished
	r := &maintenance.Retainer{Store: f.s, Retention: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	require.Equal(t, maintenance.RetentionBatch+5, r.RunOnce(f.ctx), "every old finished saga, over several batches")
	require.Zero(t, r.RunOnce(f.ctx), "nothing is left to delete")
	st, err := f.s.Stats(f.ctx)
	require.NoError(t, err)
	require.Equal(t, 2, st.Sagas[saga.StatusRunning].Count, "unfinished sagas stay")
	list, err := f.s.ListSagas(f.ctx, store.ListFilter{Status: saga.StatusCompensated, Limit: 10})
	require.NoError(t, err)
	require.Len(t, list, 3, "recent finished sagas stay")
}

func TestActiveCounterCountsRunningAndCompensating(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.add(t, 4, saga.StatusRunning)
	f.add(t, 3, saga.StatusCompensating)
	f.add(t, 2, saga.StatusFailed)
	f.add(t, 5, saga.StatusCompleted)
	c := &maintenance.ActiveCounter{Store: f.s, Interval: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	require.Zero(t, c.Active(), "nothing counted yet")
	require.NoError(t, c.Count(f.ctx))
	require.EqualValues(t, 7, c.Active(), "RUNNING and COMPENSATING count; FAILED and finished do not")
}

// failing is a store whose Stats fails.
type failing struct{ maintenance.Counter }

func (failing) Stats(context.Context) (store.Stats, error) {
	return store.Stats{}, context.DeadlineExceeded
}

func TestActiveCounterKeepsTheLastCountWhenCountingFails(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.add(t, 2, saga.StatusRunning)
	c := &maintenance.ActiveCounter{Store: f.s, Interval: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	require.NoError(t, c.Count(f.ctx))
	c.Store = failing{}
	require.Error(t, c.Count(f.ctx))
	require.EqualValues(t, 2, c.Active())
}
