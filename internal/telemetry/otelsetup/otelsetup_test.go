package otelsetup_test

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
	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/internal/telemetry/otelsetup"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNewTracerProviderUsesIDGenerator checks that the providers otelsetup makes take a span's id
// from WithSpanID, which the coordinator's after-the-fact spans rely on.
func TestNewTracerProviderUsesIDGenerator(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := otelsetup.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	want := telemetry.SpanID("preset")
	_, span := tp.Tracer("test").Start(telemetry.WithSpanID(context.Background(), want), "preset")
	span.End()
	spans := rec.Ended()
	require.Len(t, spans, 1)
	require.Equal(t, want, spans[0].SpanContext().SpanID())
}

func TestStartOffIsNoop(t *testing.T) {
	tel, err := otelsetup.Start(context.Background(), otelsetup.Config{ServiceName: "test"})
	require.NoError(t, err)
	require.False(t, tel.Tracing())
	require.False(t, tel.Metrics())
	require.Empty(t, tel.MetricsAddr())
	_, span := tel.TracerProvider.Tracer("t").Start(context.Background(), "x")
	require.False(t, span.IsRecording())
	require.NoError(t, tel.Shutdown(context.Background()))
}

func TestMetricsEndpointServesPrometheusText(t *testing.T) {
	tel, err := otelsetup.Start(context.Background(), otelsetup.Config{ServiceName: "test", MetricsAddr: "127.0.0.1:0"})
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
		tel, err := otelsetup.Start(context.Background(), otelsetup.Config{ServiceName: "test", OTLPEndpoint: ep})
		require.NoError(t, err, ep)
		require.True(t, tel.Tracing())
		require.NoError(t, tel.Shutdown(context.Background()))
	}
	_, err := otelsetup.Start(context.Background(), otelsetup.Config{ServiceName: "test", OTLPEndpoint: "no-port"})
	require.ErrorContains(t, err, "host:port")
}

func TestRedactURL(t *testing.T) {
	require.Equal(t, "amqp://user:xxxxx@host:5672/v", otelsetup.RedactURL("amqp://user:s3cret@host:5672/v"))
	require.Equal(t, "jaeger:4317", otelsetup.RedactURL("jaeger:4317"))
	require.NotContains(t, otelsetup.RedactURL("user:s3cret@host"), "s3cret")
}
