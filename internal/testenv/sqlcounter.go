package testenv

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// SQLCounter is a pgx tracer that counts the statements a connection executes, alone or in
// batches, and the COMMITs among them. Set it as ConnConfig.Tracer.
type SQLCounter struct {
	Statements, Commits atomic.Int64
}

var (
	_ pgx.QueryTracer = (*SQLCounter)(nil)
	_ pgx.BatchTracer = (*SQLCounter)(nil)
)

func (c *SQLCounter) count(sql string) {
	c.Statements.Add(1)
	if strings.EqualFold(strings.TrimSpace(sql), "commit") {
		c.Commits.Add(1)
	}
}

// TraceQueryStart implements pgx.QueryTracer.
func (c *SQLCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.count(d.SQL)
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (c *SQLCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart implements pgx.BatchTracer.
func (c *SQLCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

// TraceBatchQuery implements pgx.BatchTracer.
func (c *SQLCounter) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	c.count(d.SQL)
}

// TraceBatchEnd implements pgx.BatchTracer.
func (c *SQLCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
