package server

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/status"
)

// defaultWatchPoll is how long a watch first waits without news of a change before it reads the
// row; each read that finds nothing new doubles the wait, up to maxWatchPollFactor times it.
// While the engine hears of other instances' changes (Engine.Listening), reads are only a safety
// net and begin at listeningWatchPoll.
const (
	defaultWatchPoll   = 50 * time.Millisecond
	maxWatchPollFactor = 20
	listeningWatchPoll = time.Second
)

// watchPoll returns the first wait of a watch.
func watchPoll(configured time.Duration, listening bool) time.Duration {
	if configured == 0 {
		configured = defaultWatchPoll
	}
	if listening {
		return max(configured, listeningWatchPoll)
	}
	return configured
}

// changes is what watch hears from the engine: a signal when this instance committed a change,
// and the row as committed (engine.Watch).
type changes[T any] interface {
	Changed() <-chan struct{}
	Latest() (T, bool)
}

// watch sends a row (a saga or a transaction) at once and then whenever its version changes,
// and returns after sending a terminal state or when ctx ends. A change this instance commits
// arrives through w at once, with the row as committed; a change another instance commits is
// found by reading the row after a wait without news: poll at first, doubling while the reads
// find nothing new (so a watch of a saga that this instance drives costs few reads), back to
// poll when a read finds a change.
func watch[T any](ctx context.Context, poll time.Duration, w changes[T],
	read func(context.Context) (T, error), version func(T) (int64, bool), send func(context.Context, T) error) error {
	wait := poll
	t := time.NewTimer(wait)
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
			var here bool
			if row, here = w.Latest(); !here {
				row, err = read(rctx) // changed by another instance
			}
		case <-t.C:
			row, err = read(rctx)
			if err != nil {
				continue // returned at the top of the loop
			}
			if v, _ := version(row); v > last {
				wait = poll
			} else {
				wait = min(2*wait, maxWatchPollFactor*poll)
			}
		}
		t.Reset(wait)
	}
}
