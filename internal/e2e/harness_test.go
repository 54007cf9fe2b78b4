package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
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
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("SAGACOORD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, dbURL: testenv.Schema(t), amqpURL: testenv.VHost(t)}
	var err error
	e.pool, err = pgxpool.New(ctx, e.dbURL)
	require.NoError(t, err)
	t.Cleanup(e.pool.Close)
	e.ledger = testenv.Name("ledger_")
	_, err = e.pool.Exec(ctx, `CREATE SCHEMA `+e.ledger+`;
		CREATE TABLE `+e.ledger+`.ledger (id bigserial primary key, participant text, gid text, step text, kind text, amount bigint)`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = e.pool.Exec(context.Background(), `DROP SCHEMA `+e.ledger+` CASCADE`) })
	e.startCoordinator()
	return e
}

func (e *env) startCoordinator() {
	t := e.t
	c, err := coordinator.Start(e.ctx, coordinator.Config{
		DatabaseURL: e.dbURL, AMQPURL: e.amqpURL, ListenAddr: "127.0.0.1:0", Migrate: true,
		Logger: testLogger(t), Name: testenv.Name("coord-"),
	})
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	e.coord = c
	conn, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	e.client = pb.NewSagaServiceClient(conn)
}

// behaviour decides what a test participant does with one command.
type behaviour func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error)

// participantOpts configures a test participant.
type participantOpts struct {
	name     string
	behave   behaviour // nil: succeed with output {"by": name}
	prefetch int
}

// startParticipant runs a participant whose handlers write one ledger row per applied action or
// compensation, in the barrier's transaction.
func (e *env) startParticipant(o participantOpts) *participant.Worker {
	t := e.t
	tr, err := amqptransport.New(e.ctx, amqptransport.Config{URL: e.amqpURL, ConnectionName: testenv.Name("p-" + o.name + "-")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	w, err := participant.New(participant.Config{
		Name: o.name, Transport: tr, DB: e.pool, Schema: testenv.Name("p_"), Prefetch: o.prefetch, Logger: testLogger(t),
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
	t.Cleanup(w.Stop)
	return w
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

// waitTerminal waits until the saga is COMPLETED or COMPENSATED (or in want, if given) and returns
// it.
func (e *env) waitStatus(id string, timeout time.Duration, want ...pb.SagaStatus) *pb.Saga {
	e.t.Helper()
	if len(want) == 0 {
		want = []pb.SagaStatus{pb.SagaStatus_SAGA_STATUS_COMPLETED, pb.SagaStatus_SAGA_STATUS_COMPENSATED}
	}
	deadline := time.Now().Add(timeout)
	var last *pb.Saga
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(e.ctx, timeout)
		stream, err := e.client.WatchSaga(ctx, &pb.WatchSagaRequest{SagaId: id})
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
	}
	e.t.Fatalf("saga %s did not reach %v within %s; last seen: %v", id, want, timeout, last)
	return nil
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
