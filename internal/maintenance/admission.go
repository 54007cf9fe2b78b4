package maintenance

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// Counter counts unfinished work; internal/store.Store implements it.
type Counter interface {
	Stats(ctx context.Context) (store.Stats, error)
}

// ActiveCounter counts the sagas RUNNING or COMPENSATING in the whole database every Interval,
// for admission control (StartSaga refuses new sagas above a limit). When a count fails the last
// one stands: a database outage fails StartSaga on its own.
type ActiveCounter struct {
	Store    Counter
	Interval time.Duration
	Logger   *slog.Logger
	active   atomic.Int64
}

// Active returns the last count; 0 before the first.
func (c *ActiveCounter) Active() int64 { return c.active.Load() }

// Run counts at once and then every Interval until ctx ends.
func (c *ActiveCounter) Run(ctx context.Context) {
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		if err := c.Count(ctx); err != nil && ctx.Err() == nil {
			c.Logger.Warn("count active sagas for admission control", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Count counts once.
func (c *ActiveCounter) Count(ctx context.Context) error {
	st, err := c.Store.Stats(ctx)
	if err != nil {
		return err
	}
	c.active.Store(int64(st.Sagas[saga.StatusRunning].Count + st.Sagas[saga.StatusCompensating].Count))
	return nil
}
