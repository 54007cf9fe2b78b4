package traceexport_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/internal/telemetry/traceexport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNewTracerProviderUsesIDGenerator checks that the providers it makes take a span's id from
// WithSpanID, which the coordinator's after-the-fact spans rely on.
func TestNewTracerProviderUsesIDGenerator(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := traceexport.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	want := telemetry.SpanID("preset")
	_, span := tp.Tracer("test").Start(telemetry.WithSpanID(context.Background(), want), "preset")
	span.End()
	spans := rec.Ended()
	require.Len(t, spans, 1)
	require.Equal(t, want, spans[0].SpanContext().SpanID())
}

func TestOTLPEndpointForms(t *testing.T) {
	res, err := traceexport.Resource("test", "t1")
	require.NoError(t, err)
	for _, ep := range []string{"127.0.0.1:4317", "http://127.0.0.1:4317"} {
		tp, err := traceexport.OTLP(context.Background(), ep, res, nil)
		require.NoError(t, err, ep)
		require.NoError(t, tp.Shutdown(context.Background()))
	}
	_, err = traceexport.OTLP(context.Background(), "no-port", res, nil)
	require.ErrorContains(t, err, "host:port")
}

func TestRedactURL(t *testing.T) {
	require.Equal(t, "amqp://user:xxxxx@host:5672/v", traceexport.RedactURL("amqp://user:s3cret@host:5672/v"))
	require.Equal(t, "jaeger:4317", traceexport.RedactURL("jaeger:4317"))
	require.NotContains(t, traceexport.RedactURL("user:s3cret@host"), "s3cret")
}
