package server

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/status"
)

// defaultWatchPoll is how long a watch waits without news of a change before it reads the row.
const defaultWatchPoll = 50 * time.Millisecond

// changes is what watch hears from the engine: a signal when this instance committed a change,
// and the row as committed (engine.Watch).
type changes[T any] interface {
	Changed() <-chan struct{}
	Latest() (T, bool)
}

// watch sends a row (a saga or a transaction) at once and then whenever its version changes,
// and returns after sending a terminal state or when ctx ends. A change this instance commits
// arrives through w at once, with the row as committed; a change another instance commits is
// found by reading the row after poll passed without news.
func watch[T any](ctx context.Context, poll time.Duration, w changes[T],
	read func(context.Context) (T, error), version func(T) (int64, bool), send func(context.Context, T) error) error {
	if poll == 0 {
		poll = defaultWatchPoll
	}
	t := time.NewTimer(poll)
	defer t.Stop()
	var last int64 = -1
	// The reads are not traced: a stream watching a long saga would hold a query span every
	// poll. The stream's own span still covers the call.
	rctx := trace.ContextWithSpan(ctx, trace.SpanFromContext(context.Background()))
	row, err := read(rctx)
	for {
		if err != nil {
			return toStatus(err)
		}
		if v, terminal := version(row); v > last {
			last = v
			if err := send(ctx, row); err != nil {
				return err
			}
			if terminal {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-w.Changed():
			row, _ = w.Latest()
		case <-t.C:
			row, err = read(rctx)
		}
		t.Reset(poll)
	}
}
