package participant

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/sagacoord/sagacoord/internal/telemetry"
)

// hungGrace is how long after its context ended a handler may take to return before it counts as
// hung: one that watches its context returns within moments of the cancellation.
const hungGrace = time.Second

// hungWatch reports handlers that outlive their deadline by hungGrace, ignoring their context:
// each holds a goroutine, a connection and its barrier row, and commands of its step (its
// compensation, a redelivery) wait for the row (Config.LockWait). It logs one error per hung
// handler, naming it, another when it returns, and keeps the gauge of those still hung.
type hungWatch struct {
	log   *slog.Logger
	gauge metric.Int64UpDownCounter // nil with metrics off
	attrs metric.MeasurementOption
}

func newHungWatch(log *slog.Logger, participant string, m metric.Meter) (*hungWatch, error) {
	h := &hungWatch{log: log, attrs: metric.WithAttributes(telemetry.AttrParticipant.String(participant))}
	if m == nil {
		return h, nil
	}
	var err error
	h.gauge, err = m.Int64UpDownCounter("sagacoord.participant.handlers.hung",
		metric.WithDescription("Handlers still running more than a second past their deadline, ignoring their context; each holds a goroutine, a connection and its barrier row."))
	return h, err
}

// watch watches a handler of row running with hctx: if it has not returned hungGrace after hctx
// ended (its deadline, or the worker stopping), it is reported. returned ends the watch once the
// handler returned. A handler that returns in time costs no timer.
func (h *hungWatch) watch(hctx context.Context, row rowKey, attempt int) (returned func()) {
	if h == nil {
		return func() {}
	}
	began := time.Now()
	attrs := []any{"gid", row.gid, "step", row.step, "kind", row.kind, "attempt", attempt}
	var (
		mu         sync.Mutex
		grace      *time.Timer
		hung, done bool
	)
	unregister := context.AfterFunc(hctx, func() {
		mu.Lock()
		defer mu.Unlock()
		grace = time.AfterFunc(hungGrace, func() {
			mu.Lock()
			defer mu.Unlock()
			if done {
				return
			}
			hung = true
			h.log.Error("handler hung: still running past its deadline, ignoring its context; it holds a goroutine, a connection and its barrier row until it returns",
				append(attrs, "running", time.Since(began).Round(time.Millisecond))...)
			h.add(1)
		})
	})
	return func() {
		unregister()
		mu.Lock()
		defer mu.Unlock()
		done = true
		if grace != nil {
			grace.Stop()
		}
		if hung {
			h.log.Warn("hung handler returned", append(attrs, "running", time.Since(began).Round(time.Millisecond))...)
			h.add(-1)
		}
	}
}

func (h *hungWatch) add(n int64) {
	if h.gauge != nil {
		h.gauge.Add(context.Background(), n, h.attrs)
	}
}
