package otelsetup_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/internal/telemetry/otelsetup"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
