package pgxtrace_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sagacoord/sagacoord/internal/telemetry/pgxtrace"
	"github.com/sagacoord/sagacoord/internal/telemetry/traceexport"
	"github.com/sagacoord/sagacoord/internal/testenv"
)

// TestQueryTracerOnlyInsideRecordingSpans checks that a query in a traced call gets a child span
// and that a query of a background loop (no span) gets none.
func TestQueryTracerOnlyInsideRecordingSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := traceexport.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { require.NoError(t, tp.Shutdown(context.Background())) }()
	cfg, err := pgxpool.ParseConfig(testenv.Schema(t))
	require.NoError(t, err)
	cfg.ConnConfig.Tracer = pgxtrace.NewQueryTracer(tp)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	defer pool.Close()

	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT 1`).Scan(&n))
	require.Empty(t, rec.Ended(), "no span without a recording parent")

	ctx, parent := tp.Tracer("t").Start(context.Background(), "call")
	require.NoError(t, pool.QueryRow(ctx, `SELECT $1::int`, 42).Scan(&n))
	_, err = pool.Exec(ctx, `SELECT nope`)
	require.Error(t, err)
	parent.End()

	spans := rec.Ended()
	require.Len(t, spans, 3)
	require.Equal(t, "db SELECT", spans[0].Name())
	require.Equal(t, parent.SpanContext().SpanID(), spans[0].Parent().SpanID())
	for _, kv := range spans[0].Attributes() {
		require.NotContains(t, kv.Value.Emit(), "42", "query parameters are never recorded")
	}
	require.Equal(t, "Error", spans[1].Status().Code.String(), "a failed query's span is an error")
}
