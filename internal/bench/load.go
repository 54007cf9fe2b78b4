package bench

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type driver struct {
	cfg  Config
	pool *pgxpool.Pool

	startedInWindow, startErrors, shed atomic.Int64
	inFlight                           atomic.Int64
	waiter                             waiter
}

func (d *driver) start(ctx context.Context, id uuid.UUID, i int64) bool {
	_, err := d.cfg.Client.StartSaga(ctx, &pb.StartSagaRequest{
		SagaId: id.String(), Definition: "bench-3step", Input: []byte(`{"n":` + strconv.FormatInt(i, 10) + `}`),
	})
	if err != nil {
		if ctx.Err() == nil {
			d.startErrors.Add(1)
			if status.Code(err) == codes.ResourceExhausted {
				d.shed.Add(1)
			}
		}
		return false
	}
	d.startedInWindow.Add(1)
	return true
}

// load drives starts until ctx ends.
func (d *driver) load(ctx context.Context) {
	var n atomic.Int64
	if d.cfg.Rate <= 0 {
		// Closed loop: each worker starts a saga and waits for it to finish.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); d.waiter.run(ctx, d.pool) }()
		for range d.cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					id := uuid.New()
					done := d.waiter.add(id)
					if !d.start(ctx, id, n.Add(1)) {
						d.waiter.forget(id)
						continue
					}
					select {
					case <-done:
					case <-ctx.Done():
					}
				}
			}()
		}
		wg.Wait()
		return
	}
	interval := time.Duration(float64(time.Second) / d.cfg.Rate)
	next := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		next = next.Add(interval)
		if wait := time.Until(next); wait > 0 {
			if sleep(ctx, wait) != nil {
				return
			}
		}
		if d.inFlight.Load() >= int64(d.cfg.MaxInFlight) {
			d.shed.Add(1)
			continue
		}
		d.inFlight.Add(1)
		wg.Add(1)
		go func(i int64) {
			defer wg.Done()
			defer d.inFlight.Add(-1)
			d.start(ctx, uuid.New(), i)
		}(n.Add(1))
	}
}

// waiter tells closed-loop workers when their saga finished. One goroutine asks the database
// about every saga in flight at once, so the benchmark adds one small query per poll, not one per
// saga; its queries are counted and left out of the commits per saga.
type waiter struct {
	mu      sync.Mutex
	waiting map[uuid.UUID]chan struct{}
	queries atomic.Int64
}

func (w *waiter) add(id uuid.UUID) <-chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	w.waiting[id] = ch
	w.mu.Unlock()
	return ch
}

// forget stops waiting for a saga that did not start.
func (w *waiter) forget(id uuid.UUID) {
	w.mu.Lock()
	delete(w.waiting, id)
	w.mu.Unlock()
}

func (w *waiter) run(ctx context.Context, pool *pgxpool.Pool) {
	// Every 20 ms: the latencies come from the coordinator's own timestamps, so the interval
	// only delays the next start of a worker a little, and polling more often costs PostgreSQL
	// a visible share of its time (docs/performance.md has the figure).
	for sleep(ctx, 20*time.Millisecond) == nil {
		w.mu.Lock()
		ids := make([]uuid.UUID, 0, len(w.waiting))
		for id := range w.waiting {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		w.queries.Add(1)
		rows, err := pool.Query(ctx, `SELECT id FROM sagas WHERE id = ANY($1) AND finished_at IS NOT NULL`, ids)
		if err != nil {
			continue
		}
		done, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			continue
		}
		w.mu.Lock()
		for _, id := range done {
			if ch, ok := w.waiting[id]; ok {
				close(ch)
				delete(w.waiting, id)
			}
		}
		w.mu.Unlock()
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
