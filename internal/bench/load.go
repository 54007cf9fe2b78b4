package bench

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type driver struct {
	cfg  Config
	pool *pgxpool.Pool

	startedInWindow, startErrors, shed atomic.Int64
	inFlight                           atomic.Int64
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
		// Closed loop: each worker starts a saga and waits for it to end, as a client would:
		// with WatchSaga.
		var wg sync.WaitGroup
		for range d.cfg.Concurrency {
			wg.Go(func() {
				for ctx.Err() == nil {
					id := uuid.New()
					if d.start(ctx, id, n.Add(1)) {
						d.awaitEnd(ctx, id)
					}
				}
			})
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

// awaitEnd watches a saga until it is terminal, ctx ends or the watch fails.
func (d *driver) awaitEnd(ctx context.Context, id uuid.UUID) {
	stream, err := d.cfg.Client.WatchSaga(ctx, &pb.WatchSagaRequest{SagaId: id.String()})
	if err != nil {
		return
	}
	for {
		if _, err := stream.Recv(); err != nil {
			// io.EOF after the terminal state; anything else ends the wait too, and the
			// worker starts its next saga.
			return
		}
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
