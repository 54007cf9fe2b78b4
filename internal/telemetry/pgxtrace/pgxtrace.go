// Package pgxtrace traces a process's PostgreSQL queries as OpenTelemetry client spans. It
// depends on pgx and the OpenTelemetry API only, so that the coordinator and participant-sim can
// trace their pools without linking the rest of the telemetry setup.
package pgxtrace

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// QueryTracer is a pgx.QueryTracer that records a client span per query, but only inside a span
// that is recording (a gRPC call, say): the coordinator's background loops, which poll every
// 100 ms, would otherwise make a root trace of every poll. Query parameters are never recorded.
type QueryTracer struct {
	tracer trace.Tracer
}

var _ pgx.QueryTracer = (*QueryTracer)(nil)

// NewQueryTracer returns a tracer of tp's; set it as pgx.ConnConfig.Tracer.
func NewQueryTracer(tp trace.TracerProvider) *QueryTracer {
	return &QueryTracer{tracer: tp.Tracer("github.com/sagacoord/sagacoord/pgx")}
}

type querySpanKey struct{}

// maxStatement bounds the SQL text kept on a span.
const maxStatement = 2048

// TraceQueryStart implements pgx.QueryTracer.
func (q *QueryTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx
	}
	sql := strings.TrimSpace(data.SQL)
	op, _, _ := strings.Cut(sql, " ")
	if len(sql) > maxStatement {
		sql = sql[:maxStatement]
	}
	attrs := []attribute.KeyValue{attribute.String("db.system.name", "postgresql"), attribute.String("db.query.text", sql)}
	if cfg := conn.Config(); cfg != nil {
		attrs = append(attrs, attribute.String("db.namespace", cfg.Database))
	}
	ctx, span := q.tracer.Start(ctx, "db "+strings.ToUpper(op), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return context.WithValue(ctx, querySpanKey{}, span)
}

// TraceQueryEnd implements pgx.QueryTracer.
func (q *QueryTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	span, ok := ctx.Value(querySpanKey{}).(trace.Span)
	if !ok {
		return
	}
	if data.Err != nil {
		span.RecordError(data.Err)
		span.SetStatus(codes.Error, data.Err.Error())
	} else {
		span.SetAttributes(attribute.Int64("db.response.rows_affected", data.CommandTag.RowsAffected()))
	}
	span.End()
}
