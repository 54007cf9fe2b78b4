package pgxtrace

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"go.opentelemetry.io/otel/metric"
)

// Counter is a pgx tracer that counts the statements a pool executes, alone or in batches, and
// the COMMITs among them (every write transaction of sagacoord ends with an explicit COMMIT;
// single-statement reads are not counted as commits). Set it as ConnConfig.Tracer, with With.
type Counter struct {
	Statements, Commits atomic.Int64
}

var (
	_ pgx.QueryTracer = (*Counter)(nil)
	_ pgx.BatchTracer = (*Counter)(nil)
)

func (c *Counter) count(sql string) {
	c.Statements.Add(1)
	if strings.EqualFold(strings.TrimSpace(sql), "commit") {
		c.Commits.Add(1)
	}
}

// TraceQueryStart implements pgx.QueryTracer.
func (c *Counter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.count(d.SQL)
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (c *Counter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart implements pgx.BatchTracer.
func (c *Counter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

// TraceBatchQuery implements pgx.BatchTracer.
func (c *Counter) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	c.count(d.SQL)
}

// TraceBatchEnd implements pgx.BatchTracer.
func (c *Counter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// Register reports the counts as the metrics sagacoord.db.statements and sagacoord.db.commits
// (docs/observability.md).
func (c *Counter) Register(mp metric.MeterProvider) error {
	m := mp.Meter("github.com/sagacoord/sagacoord/pgx")
	stmts, err := m.Int64ObservableCounter("sagacoord.db.statements",
		metric.WithDescription("SQL statements this process sent to PostgreSQL, alone or in pipelined batches."))
	if err != nil {
		return err
	}
	commits, err := m.Int64ObservableCounter("sagacoord.db.commits",
		metric.WithDescription("Transactions this process committed with an explicit COMMIT (its writes)."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(stmts, c.Statements.Load())
		o.ObserveInt64(commits, c.Commits.Load())
		return nil
	}, stmts, commits)
	return err
}

// With returns one tracer that calls each of the non-nil tracers, or nil when there are none.
func With(tracers ...pgx.QueryTracer) pgx.QueryTracer {
	var ts []pgx.QueryTracer
	for _, t := range tracers {
		if t != nil {
			ts = append(ts, t)
		}
	}
	switch len(ts) {
	case 0:
		return nil
	case 1:
		return ts[0]
	}
	return multitracer.New(ts...)
}
