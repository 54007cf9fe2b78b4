package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/internal/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	tp := telemetry.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
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

func TestStartOffIsNoop(t *testing.T) {
	tel, err := telemetry.Start(context.Background(), telemetry.Config{ServiceName: "test"})
	require.NoError(t, err)
	require.False(t, tel.Tracing())
	require.False(t, tel.Metrics())
	require.Empty(t, tel.MetricsAddr())
	_, span := tel.TracerProvider.Tracer("t").Start(context.Background(), "x")
	require.False(t, span.IsRecording())
	require.NoError(t, tel.Shutdown(context.Background()))
}

func TestMetricsEndpointServesPrometheusText(t *testing.T) {
	tel, err := telemetry.Start(context.Background(), telemetry.Config{ServiceName: "test", MetricsAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	defer func() { require.NoError(t, tel.Shutdown(context.Background())) }()
	c, err := tel.MeterProvider.Meter("t").Int64Counter("sagacoord.test.things", metric.WithDescription("things"))
	require.NoError(t, err)
	c.Add(context.Background(), 3)

	client := &http.Client{}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + tel.MetricsAddr() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(b), "sagacoord_test_things_total")
	require.True(t, strings.Contains(string(b), "go_goroutines"), "the Go runtime collector is registered")
}

func TestOTLPEndpointForms(t *testing.T) {
	for _, ep := range []string{"127.0.0.1:4317", "http://127.0.0.1:4317"} {
		tel, err := telemetry.Start(context.Background(), telemetry.Config{ServiceName: "test", OTLPEndpoint: ep})
		require.NoError(t, err, ep)
		require.True(t, tel.Tracing())
		require.NoError(t, tel.Shutdown(context.Background()))
	}
	_, err := telemetry.Start(context.Background(), telemetry.Config{ServiceName: "test", OTLPEndpoint: "no-port"})
	require.ErrorContains(t, err, "host:port")
}

func TestRedactURL(t *testing.T) {
	require.Equal(t, "amqp://user:xxxxx@host:5672/v", telemetry.RedactURL("amqp://user:s3cret@host:5672/v"))
	require.Equal(t, "jaeger:4317", telemetry.RedactURL("jaeger:4317"))
	require.NotContains(t, telemetry.RedactURL("user:s3cret@host"), "s3cret")
}
