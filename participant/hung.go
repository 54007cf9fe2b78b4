package participant

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/sagacoord/sagacoord/internal/telemetry"
)

// hungGrace is how long past its deadline a handler may take to return before it counts as hung:
// one that watches its context returns within moments of the cancellation.
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

// watch starts watching a handler of row limited to limit (0: not watched) with attempt; stop
// ends the watch when the handler returned.
func (h *hungWatch) watch(row rowKey, attempt int, limit time.Duration) (stop func()) {
	if h == nil || limit <= 0 {
		return func() {}
	}
	began := time.Now()
	attrs := []any{"gid", row.gid, "step", row.step, "kind", row.kind, "attempt", attempt, "deadline", limit}
	var mu sync.Mutex
	hung := false
	t := time.AfterFunc(limit+hungGrace, func() {
		mu.Lock()
		defer mu.Unlock()
		hung = true
		h.log.Error("handler hung: still running past its deadline, ignoring its context; it holds a goroutine, a connection and its barrier row until it returns",
			append(attrs, "running", time.Since(began).Round(time.Millisecond))...)
		if h.gauge != nil {
			h.gauge.Add(context.Background(), 1, h.attrs)
		}
	})
	return func() {
		t.Stop()
		mu.Lock()
		defer mu.Unlock()
		if !hung {
			return
		}
		h.log.Warn("hung handler returned", append(attrs, "running", time.Since(began).Round(time.Millisecond))...)
		if h.gauge != nil {
			h.gauge.Add(context.Background(), -1, h.attrs)
		}
	}
}
