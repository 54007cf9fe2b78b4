package telemetry_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/telemetry"
)

func TestSpanIDIsDeterministic(t *testing.T) {
	a := telemetry.SpanID("saga-1", "0", "action", "1")
	require.True(t, a.IsValid())
	require.Equal(t, a, telemetry.SpanID("saga-1", "0", "action", "1"))
	require.NotEqual(t, a, telemetry.SpanID("saga-1", "0", "action", "2"))
	// The separator keeps parts apart: ("a","bc") is not ("ab","c").
	require.NotEqual(t, telemetry.SpanID("a", "bc"), telemetry.SpanID("ab", "c"))
}

func TestTraceparentRoundTrip(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	sc, ok := telemetry.ParseTraceparent(tp)
	require.True(t, ok)
	require.True(t, sc.IsSampled())
	require.True(t, sc.IsRemote())
	require.Equal(t, tp, telemetry.Traceparent(sc))
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", telemetry.TraceID(tp))

	id := telemetry.SpanID("x")
	child := telemetry.ChildTraceparent(tp, id)
	csc, ok := telemetry.ParseTraceparent(child)
	require.True(t, ok)
	require.Equal(t, sc.TraceID(), csc.TraceID())
	require.Equal(t, id, csc.SpanID())
	require.Equal(t, sc.TraceFlags(), csc.TraceFlags())

	for _, bad := range []string{"", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz", tp + "x"} {
		_, ok := telemetry.ParseTraceparent(bad)
		require.False(t, ok, "%q", bad)
	}
	require.Empty(t, telemetry.ChildTraceparent("nope", id))
	require.Empty(t, telemetry.Traceparent(trace.SpanContext{}))
}

// TestIDGeneratorUsesPresetSpanID is what lets any coordinator instance emit a span whose id its
// children already name as their parent.
func TestIDGeneratorUsesPresetSpanID(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithIDGenerator(telemetry.IDGenerator{}), sdktrace.WithSpanProcessor(rec))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	tr := tp.Tracer("test")

	parent, _ := telemetry.ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	want := telemetry.SpanID("preset")
	ctx := telemetry.WithSpanID(trace.ContextWithRemoteSpanContext(context.Background(), parent), want)
	_, span := tr.Start(ctx, "preset")
	span.End()
	_, root := tr.Start(telemetry.WithSpanID(context.Background(), want), "root with preset")
	root.End()
	_, random := tr.Start(context.Background(), "random")
	random.End()

	spans := rec.Ended()
	require.Len(t, spans, 3)
	require.Equal(t, want, spans[0].SpanContext().SpanID())
	require.Equal(t, parent.TraceID(), spans[0].SpanContext().TraceID())
	require.Equal(t, parent.SpanID(), spans[0].Parent().SpanID())
	require.Equal(t, want, spans[1].SpanContext().SpanID())
	require.True(t, spans[2].SpanContext().IsValid())
	require.NotEqual(t, want, spans[2].SpanContext().SpanID())
}
