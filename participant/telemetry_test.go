package participant_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/internal/telemetry/traceexport"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// TestWorkerContinuesTheTrace checks the worker's consumer span: a child of the command's
// traceparent, with the saga attributes and outcome, whose context the reply carries; and the
// handler metrics.
func TestWorkerContinuesTheTrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := traceexport.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })

	cfg := e.config()
	cfg.TracerProvider, cfg.MeterProvider = tp, mp
	h := &counter{out: `{"ok":true}`}
	e.start(cfg, map[string]participant.Handler{"debit": h.handle})

	e.send(debit("saga-trace"))
	r, msg := e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome)

	parent, _ := telemetry.ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	spans := rec.Ended()
	require.Len(t, spans, 1)
	s := spans[0]
	require.Equal(t, trace.SpanKindConsumer, s.SpanKind())
	require.Equal(t, parent.TraceID(), s.SpanContext().TraceID(), "same trace as the command")
	require.Equal(t, parent.SpanID(), s.Parent().SpanID(), "child of the command's span")
	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		attrs[kv.Key] = kv.Value
	}
	require.Equal(t, "saga-trace", attrs[telemetry.AttrSagaID].AsString())
	require.Equal(t, "debit", attrs[telemetry.AttrStep].AsString())
	require.Equal(t, int64(1), attrs[telemetry.AttrAttempt].AsInt64())
	require.EqualValues(t, protocol.OutcomeSucceeded, attrs[telemetry.AttrOutcome].AsString())

	got, ok := telemetry.ParseTraceparent(msg.Headers[protocol.HeaderTraceparent])
	require.True(t, ok, "the reply carries a traceparent")
	require.Equal(t, s.SpanContext().SpanID(), got.SpanID(), "the reply continues from the consumer span")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	names := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			names[m.Name] = true
		}
	}
	require.True(t, names["sagacoord.participant.handler.duration"], "metrics: %v", names)
	require.True(t, names["sagacoord.participant.commands"], "metrics: %v", names)
}
