package participant

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
)

// These benchmarks run the barrier against the real PostgreSQL with a handler that does nothing,
// so they measure the barrier's own cost. Besides ns/op they report, per command:
//
//	roundtrips/op  client writes to PostgreSQL, each followed by a wait for the answer
//	stmts/op       statements executed (queries and batched queries, as pgx traces them)
//	commits/op     COMMITs among them
//	pg-cpu-us/op   CPU time of the pool's PostgreSQL backends (from /proc; absent when the
//	               server is not on this machine)
//
// go test -run '^$' -bench Barrier -benchtime 3s ./participant/

func noop(context.Context, pgx.Tx, *protocol.StepCommand) (json.RawMessage, error) { return nil, nil }

func failing(context.Context, pgx.Tx, *protocol.StepCommand) (json.RawMessage, error) {
	return nil, Failf("insufficient funds")
}

func BenchmarkBarrierAction(b *testing.B) {
	e := newBenchEnv(b, 0)
	e.measure(b, func(i int) *protocol.StepCommand { return action(e.gid(i)) }, noop, protocol.OutcomeSucceeded)
}

func BenchmarkBarrierActionBusinessFailure(b *testing.B) {
	e := newBenchEnv(b, 0)
	e.measure(b, func(i int) *protocol.StepCommand { return action(e.gid(i)) }, failing, protocol.OutcomeFailed)
}

// BenchmarkBarrierCompensation undoes actions that succeeded, so the handler runs.
func BenchmarkBarrierCompensation(b *testing.B) {
	e := newBenchEnv(b, 0)
	_, err := e.pool.Exec(context.Background(), `INSERT INTO barrier (gid, step, kind, reply, attempt)
		SELECT $1 || i, 'debit', 'action', '{"outcome":"succeeded","output":{"entry":1}}', 1 FROM generate_series(0, $2 - 1) AS i`,
		e.prefix, b.N)
	if err != nil {
		b.Fatal(err)
	}
	e.measure(b, func(i int) *protocol.StepCommand { return compensation(e.gid(i)) }, noop, protocol.OutcomeSucceeded)
}

// BenchmarkBarrierActionParallel runs actions from 4 goroutines per CPU, as a busy worker does.
func BenchmarkBarrierActionParallel(b *testing.B) {
	e := newBenchEnv(b, 0)
	var next atomic.Int64
	e.start(b)
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1))
			res, err := e.b.runStep(context.Background(), action(e.gid(i)), noop)
			if err != nil || res.reply.Outcome != protocol.OutcomeSucceeded {
				b.Errorf("action %d: %+v, %v", i, res.reply, err)
				return
			}
		}
	})
	e.stop(b)
}

// BenchmarkBarrierActionGroup decides actions in groups of 4 and of 8 (Config.MaxBatch), in one
// transaction per group, as a busy worker does; the figures are per command.
func BenchmarkBarrierActionGroup(b *testing.B) {
	for _, size := range []int{4, DefaultMaxBatch} {
		b.Run("size="+strconv.Itoa(size), func(b *testing.B) {
			e := newBenchEnv(b, 0)
			e.measureGroups(b, size, func(i int) *protocol.StepCommand { return action(e.gid(i)) }, noop, protocol.OutcomeSucceeded)
		})
	}
}

type benchEnv struct {
	pool   *pgxpool.Pool
	b      *barrier
	prefix string

	writes   atomic.Int64
	sql      testenv.SQLCounter
	mu       sync.Mutex
	backends []uint32
	cpuStart int64
}

// newBenchEnv makes a barrier on a fresh schema, with a pool of at most maxConns connections (0:
// pgxpool's default) that counts what it sends.
func newBenchEnv(b testing.TB, maxConns int32) *benchEnv {
	b.Helper()
	dbURL := testenv.Schema(b)
	e := &benchEnv{prefix: testenv.Name("b") + "-"}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: &e.writes}, nil
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.Tracer = &e.sql
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.backends = append(e.backends, c.PgConn().PID())
		return nil
	}
	e.pool, err = pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.pool.Close)
	w, err := New(Config{Name: "p", Transport: noTransport{}, DB: e.pool, Schema: searchPath(b, dbURL)})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	e.b = w.barrier
	return e
}

func (e *benchEnv) gid(i int) string { return e.prefix + strconv.Itoa(i) }

func (e *benchEnv) measure(b *testing.B, cmd func(i int) *protocol.StepCommand, h Handler, want protocol.Outcome) {
	b.Helper()
	ctx := context.Background()
	// Warm the connection's statement cache, so that the figures are those of the steady state.
	if _, err := e.b.runStep(ctx, action(e.prefix+"warm"), noop); err != nil {
		b.Fatal(err)
	}
	e.start(b)
	for i := range b.N {
		res, err := e.b.runStep(ctx, cmd(i), h)
		if err != nil {
			b.Fatal(err)
		}
		if res.reply.Outcome != want {
			b.Fatalf("command %d: outcome %q, want %q (%s)", i, res.reply.Outcome, want, res.reply.Error)
		}
	}
	e.stop(b)
}

// measureGroups is measure for groups of size commands (the last one may be smaller).
func (e *benchEnv) measureGroups(b *testing.B, size int, cmd func(i int) *protocol.StepCommand, h Handler, want protocol.Outcome) {
	b.Helper()
	ctx := context.Background()
	if _, err := e.b.runStep(ctx, action(e.prefix+"warm"), noop); err != nil {
		b.Fatal(err)
	}
	e.start(b)
	items := make([]groupItem, 0, size)
	for i := 0; i < b.N; i += size {
		items = items[:0]
		for j := i; j < min(i+size, b.N); j++ {
			items = append(items, groupItem{ctx: ctx, cmd: cmd(j), h: h})
		}
		outs, err := e.b.runGroup(ctx, items)
		if err != nil {
			b.Fatal(err)
		}
		for j, o := range outs {
			if o.err != nil || o.res.reply.Outcome != want {
				b.Fatalf("command %d: outcome %q, want %q (%s, %v)", i+j, o.res.reply.Outcome, want, o.res.reply.Error, o.err)
			}
		}
	}
	e.stop(b)
}

func (e *benchEnv) start(b *testing.B) {
	e.writes.Store(0)
	e.sql.Statements.Store(0)
	e.sql.Commits.Store(0)
	e.cpuStart = e.backendCPU()
	b.ResetTimer()
}

func (e *benchEnv) stop(b *testing.B) {
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(e.writes.Load())/n, "roundtrips/op")
	b.ReportMetric(float64(e.sql.Statements.Load())/n, "stmts/op")
	b.ReportMetric(float64(e.sql.Commits.Load())/n, "commits/op")
	if e.cpuStart >= 0 {
		if end := e.backendCPU(); end >= 0 {
			b.ReportMetric(float64(end-e.cpuStart)/n, "pg-cpu-us/op")
		}
	}
}

// connections returns the process ids of the backends of the connections the pool opened.
func (e *benchEnv) connections() []uint32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]uint32(nil), e.backends...)
}

// backendCPU returns the CPU time in microseconds the pool's backends have used, or -1 when
// /proc does not show them.
func (e *benchEnv) backendCPU() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var total int64
	for _, pid := range e.backends {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return -1
		}
		// Fields after the command name, which may hold spaces: utime and stime are the 12th
		// and 13th, in clock ticks (100 per second on Linux).
		s := string(raw)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) < 13 {
			return -1
		}
		for _, f := range fields[11:13] {
			ticks, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return -1
			}
			total += ticks * 10_000
		}
	}
	return total
}

// countingConn counts the writes to PostgreSQL: pgconn sends what it buffered for one round trip
// in one write.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}
