package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/console"
	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/migrations"
	"github.com/sagacoord/sagacoord/outbox"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport/memtransport"
)

// query is one statement the console sent, with its arguments.
type query struct {
	sql  string
	args []any
}

// recorder is a pgx tracer that keeps every query the pool runs.
type recorder struct {
	mu      sync.Mutex
	queries []query
}

func (r *recorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries = append(r.queries, query{d.SQL, d.Args})
	return ctx
}

func (r *recorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *recorder) take() []query {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queries
	r.queries = nil
	return q
}

// bigDB is a migrated schema with many sagas and transactions, and a console on it whose
// engine is not started: the console only reads.
type bigDB struct {
	// pool is the console's; plain is another on the same schema with PostgreSQL's default
	// settings and no tracer.
	pool, plain *pgxpool.Pool
	rec         *recorder
	console     http.Handler
}

// newBigDB fills a fresh schema with sagas minimal sagas (one in ten of definition "booking",
// the others "transfer"; one in a thousand FAILED, one in five hundred RUNNING, one in seven
// COMPENSATED, the rest COMPLETED; created 100 ms apart going back from now) and txs
// transactions, with one INSERT ... SELECT generate_series each, and analyzes them.
func newBigDB(t *testing.T, sagas, txs int) *bigDB {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	t.Cleanup(cancel)
	rec := &recorder{}
	dbURL := testenv.Schema(t)
	plain, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(plain.Close)
	pc, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	pgstore.ConfigurePool(pc)
	pc.ConnConfig.Tracer = rec
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = (&migrations.Migrator{Pool: pool}).Up(ctx)
	require.NoError(t, err)
	st := pgstore.New(pool, pgstore.Config{})
	for _, name := range []string{"transfer", "booking"} {
		_, _, err := st.RegisterDefinition(ctx, saga.Definition{Name: name, Steps: []saga.StepDefinition{
			{Name: "reserve", Participant: "bank", Action: "reserve"}, {Name: "debit", Participant: "bank", Action: "debit", DependsOn: []string{"reserve"}},
		}})
		require.NoError(t, err)
	}
	start := time.Now()
	_, err = pool.Exec(ctx, `INSERT INTO sagas (id, definition_name, definition_version, status, input, request_hash, state, created_at, updated_at, finished_at)
		SELECT gen_random_uuid(), CASE WHEN i % 10 = 0 THEN 'booking' ELSE 'transfer' END, 1, st, '\x7b7d'::bytea, '', '{"steps":[]}'::jsonb, at, at,
			CASE WHEN st IN ('COMPLETED', 'COMPENSATED') THEN at END
		FROM (SELECT i, now() - i * interval '100 milliseconds' AS at,
			CASE WHEN i % 1000 = 0 THEN 'FAILED' WHEN i % 500 = 0 THEN 'RUNNING' WHEN i % 7 = 0 THEN 'COMPENSATED' ELSE 'COMPLETED' END AS st
			FROM generate_series(1, $1::int) i) s`, sagas)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO transactions (id, status, request_hash, state, created_at, updated_at, finished_at)
		SELECT gen_random_uuid(), st, '', '{"participants":[]}'::jsonb, at, at, CASE WHEN st IN ('COMMITTED', 'ABORTED') THEN at END
		FROM (SELECT now() - i * interval '100 milliseconds' AS at,
			CASE WHEN i % 1000 = 0 THEN 'PREPARING' WHEN i % 9 = 0 THEN 'ABORTED' ELSE 'COMMITTED' END AS st
			FROM generate_series(1, $1::int) i) s`, txs)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `ANALYZE sagas; ANALYZE transactions`)
	require.NoError(t, err)
	t.Logf("filled %d sagas and %d transactions in %s", sagas, txs, time.Since(start).Round(time.Millisecond))
	tr := memtransport.New(memtransport.NewBroker())
	eng, err := engine.New(engine.Config{Store: st, Transport: tr, Relay: outbox.NewRelay(st.Outbox(), tr, outbox.Config{})})
	require.NoError(t, err)
	rec.take()
	return &bigDB{pool: pool, plain: plain, rec: rec, console: console.New(console.Config{Engine: eng})}
}

// get serves path and returns how long the console took.
func (d *bigDB) get(t *testing.T, path string) time.Duration {
	t.Helper()
	rr := httptest.NewRecorder()
	start := time.Now()
	d.console.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
	took := time.Since(start)
	require.Contains(t, []int{http.StatusOK, http.StatusSeeOther}, rr.Code, "%s: %s", path, rr.Body.String())
	return took
}

// consolePaths are the pages whose queries the EXPLAIN test checks: the list with every filter
// combination and a second page, the counts, attention, definitions, transactions and
// participants.
func consolePaths(sagaID, txID string) []string {
	var paths []string
	for _, status := range []string{"", "RUNNING", "COMPENSATING", "FAILED", "COMPLETED", "COMPENSATED"} {
		for _, def := range []string{"", "&definition=booking", "&definition=booking&version=1"} {
			for _, times := range []string{"", "&from=2026-01-01T00:00", "&before=2030-01-01T00:00", "&from=2026-01-01T00:00&before=2030-01-01T00:00"} {
				paths = append(paths, "/sagas?status="+status+def+times)
			}
		}
	}
	cursor := fmt.Sprintf("&after=%d_%s", time.Now().Add(-time.Hour).UnixNano(), sagaID)
	paths = append(paths, "/sagas?n=20"+cursor, "/sagas?status=FAILED"+cursor, "/sagas?definition=booking"+cursor,
		"/sagas/"+sagaID, "/attention", "/definitions", "/definitions/booking", "/participants", "/participants/bank",
		"/transactions", "/transactions?state=PREPARING", "/transactions?state=COMMITTED", "/transactions?after="+cursor[7:], "/transactions/"+txID)
	return paths
}

// seqScans returns the relations of plan (EXPLAIN's JSON) that are read by a sequential scan.
func seqScans(node map[string]any) []string {
	var out []string
	if node["Node Type"] == "Seq Scan" {
		out = append(out, fmt.Sprint(node["Relation Name"]))
	}
	if p, ok := node["Plan"].(map[string]any); ok {
		out = append(out, seqScans(p)...)
	}
	if ps, ok := node["Plans"].([]any); ok {
		for _, p := range ps {
			if m, ok := p.(map[string]any); ok {
				out = append(out, seqScans(m)...)
			}
		}
	}
	return out
}

// Every query the console sends, on tables of 50,000 sagas and 20,000 transactions, reads them
// through an index: EXPLAIN, with the query's own arguments and PostgreSQL's default settings
// (the console's pool turns sequential scans off, pgstore.ConfigurePool, which would hide
// them), shows no sequential scan of sagas or transactions.
func TestConsoleQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	d := newBigDB(t, 50_000, 20_000)
	var sagaID, txID string
	require.NoError(t, d.pool.QueryRow(context.Background(), `SELECT (SELECT id::text FROM sagas WHERE status = 'FAILED' LIMIT 1), (SELECT id::text FROM transactions LIMIT 1)`).Scan(&sagaID, &txID))
	d.rec.take()
	seen := map[string]bool{}
	checked := 0
	for _, path := range consolePaths(sagaID, txID) {
		d.get(t, path)
		for _, q := range d.rec.take() {
			key := q.sql + fmt.Sprint(q.args...)
			if seen[key] {
				continue
			}
			seen[key] = true
			var plan []map[string]any
			var raw []byte
			require.NoError(t, d.plain.QueryRow(context.Background(), "EXPLAIN (FORMAT JSON) "+q.sql, q.args...).Scan(&raw), "%s: %s", path, q.sql)
			require.NoError(t, json.Unmarshal(raw, &plan))
			for _, rel := range seqScans(plan[0]) {
				if rel == "sagas" || rel == "transactions" {
					t.Errorf("%s: a sequential scan of %s:\n%s\nargs %v\nplan %s", path, rel, q.sql, q.args, raw)
				}
			}
			checked++
		}
	}
	t.Logf("%d distinct queries of %d pages explained", checked, len(consolePaths(sagaID, txID)))
}

// The server time of the list's pages on a table of a million sagas: the first page, and pages
// filtered by status and by definition, each served 15 times (past the five executions after
// which PostgreSQL may switch a prepared statement to a generic plan), median and slowest
// reported. Filling the table takes about half a minute, so it runs only with
// SAGACOORD_CONSOLE_MILLION=1 (docs/console.md, section Scale); a test reports, never asserts, a
// duration (docs/contributing.md).
func TestListOfAMillionSagas(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a million sagas: not under -short")
	}
	if os.Getenv("SAGACOORD_CONSOLE_MILLION") == "" {
		t.Skip("fills a million sagas for half a minute: set SAGACOORD_CONSOLE_MILLION=1 to run it")
	}
	d := newBigDB(t, 1_000_000, 20_000)
	for _, path := range []string{"/sagas", "/sagas?status=FAILED", "/sagas?status=RUNNING", "/sagas?status=COMPLETED",
		"/sagas?definition=booking", "/sagas?definition=booking&status=FAILED", "/sagas?definition=transfer&version=1&status=COMPENSATED",
		"/sagas?status=FAILED&from=2026-01-01T00:00", "/attention", "/participants"} {
		var took []time.Duration
		for range 15 {
			took = append(took, d.get(t, path))
		}
		slices.Sort(took)
		t.Logf("%-60s median %8s  slowest %8s", path, took[len(took)/2].Round(10*time.Microsecond), took[len(took)-1].Round(10*time.Microsecond))
	}
}
