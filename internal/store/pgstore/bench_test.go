package pgstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
)

// benchStore returns a store on a fresh schema, or skips the benchmark when PostgreSQL is not
// reachable.
func benchStore(b *testing.B) *pgstore.Store {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL())
	if err != nil {
		where := "(unparseable URL)"
		if u, perr := url.Parse(testenv.DatabaseURL()); perr == nil {
			where = u.Redacted()
		}
		b.Skipf("PostgreSQL is not reachable at %s: %v; start it with scripts/services.sh (docs/contributing.md) or point SAGACOORD_TEST_DATABASE_URL at one", where, err)
	}
	_ = conn.Close(ctx)
	return newStore(b, pgstore.Config{})
}

// benchSaga is a three-step saga whose messages are encoded as the engine encodes them.
type benchSaga struct {
	def saga.Definition
	m   *saga.Machine
}

func newBenchSaga(b *testing.B, s store.Store) *benchSaga {
	def := registerDefinition(b, s, "transfer", 3)
	return &benchSaga{def: def, m: saga.NewMachine(&def)}
}

var benchInput = json.RawMessage(`{"from":"acct-0001","to":"acct-0002","amount":4200,"currency":"EUR","reference":"invoice 2026-000123"}`)

// command returns the message of one step command, as the engine builds it.
func (bs *benchSaga) command(b *testing.B, st *saga.State, step, attempt int) transport.Outgoing {
	sd := bs.def.Steps[step]
	cmd := protocol.StepCommand{
		SagaID: st.ID, Step: sd.Name, StepIndex: step, Kind: protocol.KindAction, Participant: sd.Participant,
		Action: sd.Action, Attempt: attempt, Input: st.Input,
	}
	msg, err := cmd.Encode()
	if err != nil {
		b.Fatal(err)
	}
	msg.Headers[protocol.HeaderTraceparent] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	return transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: sd.Participant, Message: msg}
}

func (bs *benchSaga) newSaga(b *testing.B, id uuid.UUID) store.NewSaga {
	return store.NewSaga{ID: id, Build: func(now time.Time) (store.Change, error) {
		st, fx := bs.m.Start(id.String(), benchInput, time.Time{}, now)
		sg := &store.Saga{ID: id, DefinitionName: bs.def.Name, DefinitionVersion: bs.def.Version, State: st, RequestHash: "bench"}
		sg.WakeAt = bs.m.WakeAt(st)
		msgs := make([]transport.Outgoing, len(fx.Commands))
		for i, c := range fx.Commands {
			msgs[i] = bs.command(b, st, c.StepIndex, c.Attempt)
		}
		return store.Change{Row: sg, Messages: msgs}, nil
	}}
}

// BenchmarkCreateSagas measures CreateSagas: one transaction per call, each saga with its first
// command. sagas/s is the throughput of one caller; the engine's group commit fills batches.
func BenchmarkCreateSagas(b *testing.B) {
	for _, size := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := benchStore(b)
			bs := newBenchSaga(b, s)
			ctx := context.Background()
			batch := make([]store.NewSaga, size)
			for b.Loop() {
				for i := range batch {
					batch[i] = bs.newSaga(b, uuid.New())
				}
				res, _, err := s.CreateSagas(ctx, batch)
				if err != nil {
					b.Fatal(err)
				}
				if !res[0].Created {
					b.Fatal("not created")
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "sagas/s")
		})
	}
}

// BenchmarkMutateReplyBatch measures what the engine does for a batch of 64 replies: Mutate
// locks 64 sagas, changes each, and writes each with 3 commands to the outbox, in one
// transaction. It cycles through 8 sets of 64 sagas so that consecutive batches do not wait on
// the same rows' dead versions.
func BenchmarkMutateReplyBatch(b *testing.B) {
	const (
		batch = 64
		sets  = 8
		msgs  = 3
	)
	s := benchStore(b)
	bs := newBenchSaga(b, s)
	ctx := context.Background()
	ids := make([][]uuid.UUID, sets)
	for i := range ids {
		ids[i] = make([]uuid.UUID, batch)
		create := make([]store.NewSaga, batch)
		for j := range ids[i] {
			ids[i][j] = uuid.New()
			create[j] = bs.newSaga(b, ids[i][j])
		}
		if _, _, err := s.CreateSagas(ctx, create); err != nil {
			b.Fatal(err)
		}
	}
	n := 0
	for b.Loop() {
		set := ids[n%sets]
		n++
		rows, err := s.Mutate(ctx, set, func(now time.Time, sagas []*store.Saga) ([]store.Change, error) {
			changes := make([]store.Change, len(sagas))
			for i, sg := range sagas {
				st := sg.State
				st.Steps[0].Attempt++
				st.Steps[0].Output = json.RawMessage(`{"debited":4200,"balance":95800}`)
				sg.WakeAt = now.Add(30 * time.Second)
				out := make([]transport.Outgoing, msgs)
				for k := range out {
					out[k] = bs.command(b, st, k%len(st.Steps), st.Steps[0].Attempt)
				}
				changes[i] = store.Change{Row: sg, Messages: out}
			}
			return changes, nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if len(rows) != batch*msgs {
			b.Fatalf("%d outbox rows, want %d", len(rows), batch*msgs)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "sagas/s")
	b.ReportMetric(float64(b.N*batch*msgs)/b.Elapsed().Seconds(), "msgs/s")
}
