package participant_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// ignoresDeadline is a handler that writes its effect and then waits for release whatever its
// context says: a hung handler, holding its barrier row.
type ignoresDeadline struct{ entered, release chan struct{} }

func (h *ignoresDeadline) handle(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
	if _, err := tx.Exec(context.WithoutCancel(ctx), `INSERT INTO effects VALUES ($1, $2, $3)`, cmd.SagaID, cmd.Step, cmd.Kind); err != nil {
		return nil, err
	}
	close(h.entered)
	<-h.release
	return json.RawMessage(`{}`), nil
}

// TestCompensationGivesUpOnTheRowOfAHungAction: while an action's handler hangs past its
// deadline, holding its barrier row, the compensation of that step waits for the row no longer
// than its own timeout and replies "retry" naming the cause, instead of holding a goroutine and a
// connection behind the lock; other commands go on meanwhile. Once the action ends, a later
// attempt of the compensation runs.
func TestCompensationGivesUpOnTheRowOfAHungAction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.config()
	cfg.Concurrency = 4
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	cfg.MeterProvider = mp
	hung := &ignoresDeadline{entered: make(chan struct{}), release: make(chan struct{})}
	ok := &counter{out: `{"ok":true}`}
	e.start(cfg, map[string]participant.Handler{"debit": hung.handle, "refund_debit": ok.handle, "ok": ok.handle})

	action := debit("s1")
	action.TimeoutMillis = 200
	e.send(action)
	<-hung.entered
	comp := refund("s1")
	comp.TimeoutMillis = 300
	e.send(comp)
	r, _ := e.reply()
	require.Equal(t, "s1", r.SagaID)
	require.EqualValues(t, protocol.KindCompensate, r.Kind)
	require.EqualValues(t, protocol.OutcomeRetry, r.Outcome, "the hung action still holds the row: %s", r.Error)
	require.Contains(t, r.Error, "held by another transaction for longer than 300ms")
	require.Zero(t, ok.calls.Load(), "the compensation's handler did not run")

	other := debit("s2")
	other.Action = "ok"
	e.send(other)
	r, _ = e.reply()
	require.Equal(t, "s2", r.SagaID, "other sagas go on while the action hangs")
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome)

	// A second past its deadline, the hung handler is named in the log and counted.
	const hungMsg = "handler hung: still running past its deadline, ignoring its context; it holds a goroutine, a connection and its barrier row until it returns"
	deadline := time.Now().Add(waitFor)
	for e.logs.count(hungMsg) == 0 {
		require.True(t, time.Now().Before(deadline), "the hung handler was never reported")
		time.Sleep(10 * time.Millisecond)
	}
	require.EqualValues(t, 1, hungGauge(t, reader))

	close(hung.release)
	r, _ = e.reply()
	require.Equal(t, "s1", r.SagaID)
	require.EqualValues(t, protocol.KindAction, r.Kind, "the hung action answers once it returns")
	require.Equal(t, 1, e.logs.count("hung handler returned"))
	require.EqualValues(t, 0, hungGauge(t, reader))
	require.Equal(t, 1, e.logs.count(hungMsg), "reported once")
	comp.Attempt = 2
	e.send(comp)
	r, _ = e.reply()
	require.EqualValues(t, protocol.KindCompensate, r.Kind)
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome, "the compensation runs once the row is free: %s", r.Error)
}

// hungGauge reads sagacoord.participant.handlers.hung.
func hungGauge(t *testing.T, reader *sdkmetric.ManualReader) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "sagacoord.participant.handlers.hung" {
				var n int64
				for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
					n += p.Value
				}
				return n
			}
		}
	}
	t.Fatal("no sagacoord.participant.handlers.hung metric")
	return 0
}
