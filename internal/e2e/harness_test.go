package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// env is one isolated system: a schema, a vhost, a coordinator and participants.
type env struct {
	t       *testing.T
	ctx     context.Context
	dbURL   string
	amqpURL string
	pool    *pgxpool.Pool
	coord   *coordinator.Coordinator
	client  pb.SagaServiceClient
	ledger  string // schema of the shared ledger table
	// maxActive and bundle are passed to every coordinator the test starts.
	maxActive int
	bundle    bool

	pubOnce sync.Once
	pub     *amqptransport.Transport // the test's own connection, for injecting messages

	gatesMu sync.Mutex
	gates   []*gate
}

// envOpts configures newEnvWith.
type envOpts struct {
	// noCoordinator leaves the coordinator to the test (a child process, say); e.client is nil
	// until the test dials one (e.client = e.dial(addr)).
	noCoordinator bool
	// maxActiveSagas is the coordinator's MaxActiveSagas (0: its default).
	maxActiveSagas int
	// bundle runs every coordinator the test starts with BundleMessages.
	bundle bool
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("SAGACOORD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newEnv(t *testing.T) *env { return newEnvWith(t, envOpts{}) }

func newEnvWith(t *testing.T, o envOpts) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, dbURL: testenv.Schema(t), amqpURL: testenv.VHost(t), maxActive: o.maxActiveSagas, bundle: o.bundle}
	e.pool = e.newPool(10)
	e.ledger = testenv.Name("ledger_")
	_, err := e.pool.Exec(ctx, `CREATE SCHEMA `+e.ledger+`;
		CREATE TABLE `+e.ledger+`.ledger (id bigserial primary key, participant text, gid text, step text, kind text, amount bigint)`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = e.pool.Exec(context.Background(), `DROP SCHEMA `+e.ledger+` CASCADE`) })
	if !o.noCoordinator {
		e.coord, e.client = e.startCoordinator()
	}
	return e
}

// coordinatorConns sizes each coordinator's pool. The machine's PostgreSQL allows 100 connections
// for every test package that runs at once, so each test keeps its share small.
const coordinatorConns = 8

// newPool opens a pool on the test schema with at most size connections. The harness gives
// blocking handlers room: a handler held inside its barrier transaction keeps its connection.
func (e *env) newPool(size int32) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(e.dbURL)
	require.NoError(e.t, err)
	cfg.MaxConns = size
	pool, err := pgxpool.NewWithConfig(e.ctx, cfg)
	require.NoError(e.t, err)
	e.t.Cleanup(pool.Close)
	return pool
}

// startCoordinator starts an in-process coordinator on the test's database and vhost (another
// instance when one runs already) and returns it with a client.
func (e *env) startCoordinator() (*coordinator.Coordinator, pb.SagaServiceClient) {
	c := e.runCoordinator(func(*coordinator.Config) {})
	return c, e.dial(c.Addr())
}

// runCoordinator starts an in-process coordinator on the test's database and vhost, with the
// test's configuration changed by adjust, and stops it when the test ends.
func (e *env) runCoordinator(adjust func(*coordinator.Config)) *coordinator.Coordinator {
	t := e.t
	cfg := coordinator.Config{
		DatabaseURL: e.dbURL, AMQPURL: e.amqpURL, ListenAddr: "127.0.0.1:0", Migrate: true,
		DBMaxConns: coordinatorConns, Logger: testLogger(t), Name: testenv.Name("coord-"),
		MaxActiveSagas: e.maxActive, BundleMessages: e.bundle,
	}
	adjust(&cfg)
	c, err := coordinator.Start(e.ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	return c
}

// dial returns a client of the coordinator at addr, closed when the test ends.
func (e *env) dial(addr string) pb.SagaServiceClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = conn.Close() })
	return pb.NewSagaServiceClient(conn)
}

// behaviour decides what a test participant does with one command.
type behaviour func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error)

// participantOpts configures a test participant.
type participantOpts struct {
	name        string
	behave      behaviour // nil: succeed with output {"by": name}
	prefetch    int
	concurrency int
	// poolSize > 0 gives the participant a pool of its own with that many connections; by
	// default it shares e.pool.
	poolSize int32
	// hold, when set, makes the participant's tap hold back the deliveries it matches before
	// the worker sees them (a message delayed in transit) until tap.releaseHeld.
	hold func(d *transport.Delivery) bool
	// tracer and meter, when set, are the worker's telemetry providers.
	tracer trace.TracerProvider
	meter  metric.MeterProvider
	// handlerTimeout is participant.Config.HandlerTimeout; -1 lets a handler outlive its step's
	// timeout, as one that does not stop at its context's deadline would.
	handlerTimeout time.Duration
	// barrierGrace and sweepInterval are participant.Config's (0: the defaults).
	barrierGrace, sweepInterval time.Duration
	// bundle makes the participant's transport send its replies in bundles.
	bundle bool
}

// testParticipant is a running test participant.
type testParticipant struct {
	*participant.Worker
	name   string
	schema string // holds its barrier table
	tap    *tapTransport
}

// startParticipant runs a participant whose handlers write one ledger row per applied action or
// compensation, in the barrier's transaction. Its transport is wrapped in a tap that records
// every delivery and settlement.
func (e *env) startParticipant(o participantOpts) *testParticipant {
	t := e.t
	inner, err := amqptransport.New(e.ctx, amqptransport.Config{URL: e.amqpURL, Bundle: o.bundle, ConnectionName: testenv.Name("p-" + o.name + "-")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = inner.Close() })
	tr := newTap(inner, o.hold)
	pool := e.pool
	if o.poolSize > 0 {
		pool = e.newPool(o.poolSize)
	}
	schema := testenv.Name("p_")
	w, err := participant.New(participant.Config{
		Name: o.name, Transport: tr, DB: pool, Schema: schema, Prefetch: o.prefetch, Concurrency: o.concurrency,
		RetryBackoff: 50 * time.Millisecond, Logger: testLogger(t), TracerProvider: o.tracer, MeterProvider: o.meter,
		HandlerTimeout: o.handlerTimeout, BarrierGrace: o.barrierGrace, SweepInterval: o.sweepInterval,
	})
	require.NoError(t, err)
	w.HandleDefault(func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		out := json.RawMessage(fmt.Sprintf(`{"by":%q}`, o.name))
		if o.behave != nil {
			var err error
			if out, err = o.behave(ctx, cmd); err != nil {
				return nil, err
			}
		}
		amount := int64(1)
		if cmd.Kind == protocol.KindCompensate {
			amount = -1
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+e.ledger+`.ledger (participant, gid, step, kind, amount) VALUES ($1, $2, $3, $4, $5)`,
			o.name, cmd.SagaID, cmd.Step, cmd.Kind, amount)
		return out, err
	})
	require.NoError(t, w.Migrate(e.ctx))
	require.NoError(t, w.Start(e.ctx))
	t.Cleanup(func() {
		e.openGates() // a handler held by a gate would make Stop wait for ever
		w.Stop()
	})
	return &testParticipant{Worker: w, name: o.name, schema: schema, tap: tr}
}

type ledgerRow struct {
	ID          int64
	Participant string
	GID         string
	Step        string
	Kind        string
}

func (e *env) ledgerRows(gid string) []ledgerRow {
	rows, err := e.pool.Query(e.ctx, `SELECT id, participant, gid, step, kind FROM `+e.ledger+`.ledger WHERE gid = $1 ORDER BY id`, gid)
	require.NoError(e.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ledgerRow])
	require.NoError(e.t, err)
	return out
}

// duplicates returns the ledger keys applied more than once, over all sagas (G4).
func (e *env) duplicates() []string {
	rows, err := e.pool.Query(e.ctx, `SELECT gid || '/' || step || '/' || kind FROM `+e.ledger+`.ledger GROUP BY gid, step, kind HAVING count(*) > 1`)
	require.NoError(e.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(e.t, err)
	return out
}

func (e *env) register(def *pb.SagaDefinition) *pb.SagaDefinition {
	resp, err := e.client.RegisterDefinition(e.ctx, &pb.RegisterDefinitionRequest{Definition: def})
	require.NoError(e.t, err)
	return resp.GetDefinition()
}

func (e *env) start(def string, input string) string {
	id := uuid.NewString()
	_, err := e.client.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: id, Definition: def, Input: []byte(input)})
	require.NoError(e.t, err)
	return id
}

// waitStatus waits until the saga reaches one of want (default: COMPLETED or COMPENSATED) and
// returns it. It fails at once when the saga ends in a terminal state that is not wanted.
func (e *env) waitStatus(id string, timeout time.Duration, want ...pb.SagaStatus) *pb.Saga {
	e.t.Helper()
	return e.waitStatusOn(e.client, id, timeout, want...)
}

func (e *env) waitStatusOn(client pb.SagaServiceClient, id string, timeout time.Duration, want ...pb.SagaStatus) *pb.Saga {
	e.t.Helper()
	if len(want) == 0 {
		want = []pb.SagaStatus{pb.SagaStatus_SAGA_STATUS_COMPLETED, pb.SagaStatus_SAGA_STATUS_COMPENSATED}
	}
	deadline := time.Now().Add(timeout)
	var last *pb.Saga
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(e.ctx, deadline)
		stream, err := client.WatchSaga(ctx, &pb.WatchSagaRequest{SagaId: id})
		require.NoError(e.t, err)
		for {
			resp, err := stream.Recv()
			if err != nil {
				break
			}
			last = resp.GetSaga()
			for _, w := range want {
				if last.GetStatus() == w {
					cancel()
					return last
				}
			}
		}
		cancel()
		if st := last.GetStatus(); st == pb.SagaStatus_SAGA_STATUS_COMPLETED || st == pb.SagaStatus_SAGA_STATUS_COMPENSATED {
			e.t.Fatalf("saga %s ended %s, want %v; reason %q; steps: %s", id, st, want, last.GetReason(), describeSteps(last))
		}
	}
	e.t.Fatalf("saga %s did not reach %v within %s; last seen: %s reason %q steps: %s", id, want, timeout, last.GetStatus(), last.GetReason(), describeSteps(last))
	return nil
}

// waitFor polls the saga until cond holds, and returns it.
func (e *env) waitFor(id string, timeout time.Duration, what string, cond func(*pb.Saga) bool) *pb.Saga {
	e.t.Helper()
	var last *pb.Saga
	eventually(e.t, timeout, func() (bool, string) {
		last = e.get(id)
		return cond(last), fmt.Sprintf("saga %s: %s; last seen %s, steps: %s", id, what, last.GetStatus(), describeSteps(last))
	})
	return last
}

// get returns the saga as GetSaga sees it.
func (e *env) get(id string) *pb.Saga {
	e.t.Helper()
	resp, err := e.client.GetSaga(e.ctx, &pb.GetSagaRequest{SagaId: id})
	require.NoError(e.t, err)
	return resp.GetSaga()
}

func describeSteps(sg *pb.Saga) string {
	var b strings.Builder
	for _, st := range sg.GetSteps() {
		fmt.Fprintf(&b, "[%s %s attempt=%d comp=%d err=%q] ", st.GetName(), strings.TrimPrefix(st.GetStatus().String(), "STEP_STATUS_"),
			st.GetAttempt(), st.GetCompensationAttempt(), st.GetLastError())
	}
	return b.String()
}

// eventually polls cond every 10ms until it holds or timeout passes; then it fails with cond's
// description. It is how tests wait: on a condition, with a deadline, never on a fixed sleep.
func eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, desc := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", timeout, desc)
		}
		<-tick.C
	}
}

// stepOf returns the named step of a saga.
func stepOf(t testing.TB, sg *pb.Saga, name string) *pb.Step {
	t.Helper()
	for _, st := range sg.GetSteps() {
		if st.GetName() == name {
			return st
		}
	}
	t.Fatalf("saga %s has no step %q", sg.GetId(), name)
	return nil
}

// ledgerKeys returns the saga's ledger rows as "step/kind" in the order they were written.
func (e *env) ledgerKeys(gid string) []string {
	var out []string
	for _, r := range e.ledgerRows(gid) {
		out = append(out, r.Step+"/"+r.Kind)
	}
	return out
}

// ledgerSums returns the sum of amounts per participant for one saga.
func (e *env) ledgerSums(gid string) map[string]int64 {
	rows, err := e.pool.Query(e.ctx, `SELECT participant, sum(amount)::bigint FROM `+e.ledger+`.ledger WHERE gid = $1 GROUP BY participant`, gid)
	require.NoError(e.t, err)
	out := map[string]int64{}
	var p string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&p, &n}, func() error { out[p] = n; return nil })
	require.NoError(e.t, err)
	return out
}

// barrierRows returns a participant's barrier rows for one saga as "step/kind" -> stored reply.
func (e *env) barrierRows(p *testParticipant, gid string) map[string]protocol.StepReply {
	rows, err := e.pool.Query(e.ctx, `SELECT step || '/' || kind, reply::text FROM `+p.schema+`.barrier WHERE gid = $1`, gid)
	require.NoError(e.t, err)
	out := map[string]protocol.StepReply{}
	var k, raw string
	_, err = pgx.ForEachRow(rows, []any{&k, &raw}, func() error {
		var r protocol.StepReply
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			return err
		}
		out[k] = r
		return nil
	})
	require.NoError(e.t, err)
	return out
}

// sagaVersion reads a saga's version column straight from the coordinator's table.
func (e *env) sagaVersion(id string) int64 {
	var v int64
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT version FROM sagas WHERE id = $1`, id).Scan(&v))
	return v
}

// statusCounts counts the sagas of the test schema by status.
func (e *env) statusCounts() map[string]int {
	rows, err := e.pool.Query(e.ctx, `SELECT status, count(*)::int FROM sagas GROUP BY status`)
	require.NoError(e.t, err)
	out := map[string]int{}
	var s string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&s, &n}, func() error { out[s] = n; return nil })
	require.NoError(e.t, err)
	return out
}

// outboxLen counts the outbox rows not yet confirmed and deleted.
func (e *env) outboxLen() int {
	var n int
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM outbox`).Scan(&n))
	return n
}

// actionRows counts the ledger's action rows over all sagas.
func (e *env) actionRows() int {
	var n int
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM `+e.ledger+`.ledger WHERE kind = 'action'`).Scan(&n))
	return n
}

func chain(name string, steps ...*pb.StepDefinition) *pb.SagaDefinition {
	return &pb.SagaDefinition{Name: name, Steps: steps}
}

func step(name, participant string) *pb.StepDefinition {
	return &pb.StepDefinition{
		Name: name, Participant: participant, Action: "do_" + name, Compensation: "undo_" + name,
		Timeout: durationpb.New(5 * time.Second),
		Retry:   &pb.RetryPolicy{MaxAttempts: 3, InitialBackoff: durationpb.New(20 * time.Millisecond), MaxBackoff: durationpb.New(100 * time.Millisecond)},
	}
}

// policy is a retry policy with short backoffs.
func policy(maxAttempts int32) *pb.RetryPolicy {
	return &pb.RetryPolicy{MaxAttempts: maxAttempts, InitialBackoff: durationpb.New(20 * time.Millisecond), MaxBackoff: durationpb.New(50 * time.Millisecond)}
}

// dag returns a definition whose steps name their dependencies explicitly.
func dag(name string, steps ...*pb.StepDefinition) *pb.SagaDefinition { return chain(name, steps...) }

// after sets a step's dependencies.
func after(s *pb.StepDefinition, deps ...string) *pb.StepDefinition { s.DependsOn = deps; return s }

// attempts sets a step's action retry budget.
func attempts(s *pb.StepDefinition, n int32) *pb.StepDefinition { s.Retry = policy(n); return s }

// compAttempts sets a step's compensation retry budget.
func compAttempts(s *pb.StepDefinition, n int32) *pb.StepDefinition {
	s.CompensationRetry = policy(n)
	return s
}

// timeout sets a step's per-attempt timeout (actions and compensations alike).
func timeout(s *pb.StepDefinition, d time.Duration) *pb.StepDefinition {
	s.Timeout = durationpb.New(d)
	return s
}

// pivot marks a step as the saga's pivot.
func pivot(s *pb.StepDefinition) *pb.StepDefinition { s.Pivot = true; return s }

// gate is a latch that tests close to release handlers they hold. Closing twice is safe, and
// every gate is closed when the test ends, before the participants stop, so that Stop never
// waits for a held handler.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

// newGate returns a closed latch owned by the env: it is opened before any participant stops.
func (e *env) newGate() *gate {
	g := &gate{ch: make(chan struct{})}
	e.gatesMu.Lock()
	e.gates = append(e.gates, g)
	e.gatesMu.Unlock()
	e.t.Cleanup(g.open)
	return g
}

func (e *env) openGates() {
	e.gatesMu.Lock()
	defer e.gatesMu.Unlock()
	for _, g := range e.gates {
		g.open()
	}
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// wait blocks until the gate opens or ctx ends.
func (g *gate) wait(ctx context.Context) error {
	select {
	case <-g.ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// counter counts calls per key, safely.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) inc(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[key]++
	return c.n[key]
}
