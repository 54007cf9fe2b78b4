package maintenance

import (
	"context"
	"log/slog"
	"time"

	"github.com/sagacoord/sagacoord/internal/store"
)

// Deleter deletes finished rows; internal/store.Store implements it.
type Deleter interface {
	// DeleteFinished deletes at most limit sagas and at most limit transactions that finished
	// more than olderThan ago, skipping rows others hold locked, puts the messages notices
	// makes of them in the outbox in the same transaction, and returns how many it deleted.
	DeleteFinished(ctx context.Context, olderThan time.Duration, limit int, notices store.Notices) (int, error)
}

// RetentionBatch is the most rows of each kind one deletion removes, so that no transaction
// holds many row locks or runs long.
const RetentionBatch = 1000

// Retainer deletes finished sagas and transactions older than Retention, every Interval, a batch
// at a time until a batch is not full, and tells their participants (FinalNotices).
type Retainer struct {
	Store     Deleter
	Retention time.Duration
	Interval  time.Duration
	Logger    *slog.Logger
}

// Run deletes until ctx ends.
func (r *Retainer) Run(ctx context.Context) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.RunOnce(ctx)
	}
}

// RunOnce deletes every row past the retention, in batches, and returns how many it deleted.
func (r *Retainer) RunOnce(ctx context.Context) int {
	total := 0
	for ctx.Err() == nil {
		n, err := r.Store.DeleteFinished(ctx, r.Retention, RetentionBatch, FinalNotices)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				r.Logger.Error("delete finished sagas", "err", err)
			}
			break
		}
		if n > 0 {
			r.Logger.Debug("deleted finished sagas and transactions", "count", n, "older_than", r.Retention)
		}
		if n < RetentionBatch {
			break
		}
	}
	return total
}
