package pgstore

import (
	"context"
	"slices"
	"sync"
	"time"
)

// maxPiggyback bounds the outbox ids one state transaction deletes on behalf of the relay.
const maxPiggyback = 4096

// deferredDeletes holds the ids of confirmed outbox rows until a state transaction deletes them
// in its own write statement (which saves a transaction, a commit and a round trip each time), or
// until DeleteDelay passes without one and they are deleted on their own.
//
// Losing them in a crash only republishes confirmed messages once their lease lapses, which
// consumers deduplicate: the same as a crash before an immediate delete.
type deferredDeletes struct {
	mu    sync.Mutex
	ids   []int64
	timer *time.Timer
}

// DeleteSoon implements store.DeferredDelete.
func (o outboxStore) DeleteSoon(ids []int64) {
	if len(ids) == 0 {
		return
	}
	o.s.deletes.add(o.s, ids)
}

// FlushDeletes implements store.DeferredDelete.
func (o outboxStore) FlushDeletes(ctx context.Context) error {
	return o.Delete(ctx, o.s.deletes.take(0))
}

func (d *deferredDeletes) add(s *Store, ids []int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ids = append(d.ids, ids...)
	if d.timer == nil {
		d.timer = time.AfterFunc(s.cfg.DeleteDelay, func() {
			d.mu.Lock()
			d.timer = nil
			d.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// A failure leaves the rows to be published again when their lease lapses.
			_ = outboxStore{s}.FlushDeletes(ctx)
		})
	}
}

// take removes up to limit pending ids (all of them when limit is 0) and returns them.
func (d *deferredDeletes) take(limit int) []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.ids)
	if limit > 0 && n > limit {
		n = limit
	}
	out := slices.Clone(d.ids[:n])
	d.ids = slices.Delete(d.ids, 0, n)
	return out
}
