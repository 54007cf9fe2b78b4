package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// testenv calls the RabbitMQ management API with http.DefaultClient; its idle keep-alive
		// connections are not leaks of the code under test.
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const waitFor = 20 * time.Second

// simEnv runs simulators in-process against the real PostgreSQL and RabbitMQ, with a fake
// coordinator that sends commands and reads replies.
type simEnv struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	amqpURL string
	prefix  string
	coord   transport.Transport
	replies <-chan *transport.Delivery
}

func newSimEnv(t *testing.T) *simEnv {
	t.Helper()
	pool, _ := testenv.Pool(t)
	e := &simEnv{t: t, pool: pool, amqpURL: testenv.VHost(t), prefix: testenv.Name("t_") + "_"}
	t.Cleanup(func() {
		// Each participant has its own schema; drop them before the pool closes.
		rows, err := pool.Query(context.Background(), `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)`, e.prefix)
		if err != nil {
			t.Logf("list sim schemas: %v", err)
			return
		}
		schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Logf("list sim schemas: %v", err)
		}
		for _, s := range schemas {
			if _, err := pool.Exec(context.Background(), `DROP SCHEMA `+pgx.Identifier{s}.Sanitize()+` CASCADE`); err != nil {
				t.Logf("drop %s: %v", s, err)
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	e.ctx = ctx
	e.coord = e.dial()
	t.Cleanup(cancel)
	require.NoError(t, e.coord.DeclareTopology(ctx))
	var err error
	e.replies, err = e.coord.Consume(ctx, protocol.QueueReplies, 64)
	require.NoError(t, err)
	return e
}

func (e *simEnv) dial() transport.Transport {
	tr, err := amqptransport.New(context.Background(), amqptransport.Config{URL: e.amqpURL})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// running is one in-process simulator.
type running struct {
	s      *sim
	cancel context.CancelFunc
}

func (e *simEnv) start(cfg simConfig, exit func(int)) *running {
	e.t.Helper()
	cfg.SchemaPrefix = e.prefix
	cfg = cfg.withDefaults(0, 0)
	log := slog.New(slog.NewJSONHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := newSim(cfg, e.pool, e.dial(), log, exit)
	require.NoError(e.t, err)
	require.NoError(e.t, s.migrate(e.ctx, e.pool))
	require.NoError(e.t, s.migrate(e.ctx, e.pool), "migrate is idempotent")
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(e.t, s.start(ctx))
	r := &running{s: s, cancel: cancel}
	e.t.Cleanup(func() { r.s.shutdown(time.Minute, cancel) })
	return r
}

// call sends a command to its participant and returns the reply to it.
func (e *simEnv) call(cmd *protocol.StepCommand) *protocol.Reply {
	e.t.Helper()
	e.send(cmd)
	return e.await(cmd)
}

func (e *simEnv) send(cmd *protocol.StepCommand) {
	e.t.Helper()
	msg, err := cmd.Encode()
	require.NoError(e.t, err)
	errs := e.coord.Publish(e.ctx, []transport.Outgoing{{Exchange: protocol.ExchangeCommands, RoutingKey: cmd.Participant, Message: msg}})
	require.NoError(e.t, errs[0])
}

func (e *simEnv) await(cmd *protocol.StepCommand) *protocol.Reply {
	e.t.Helper()
	id := protocol.CommandRef{SagaID: cmd.SagaID, StepIndex: cmd.StepIndex, Kind: cmd.Kind, Attempt: cmd.Attempt}.ID()
	deadline := time.After(waitFor)
	for {
		select {
		case d := <-e.replies:
			require.NoError(e.t, d.Ack())
			if d.CorrelationID != id {
				continue // a re-sent reply to an earlier command
			}
			r, err := protocol.DecodeReply(d.Message)
			require.NoError(e.t, err)
			return r
		case <-deadline:
			e.t.Fatalf("no reply to %s within %v", id, waitFor)
		}
	}
}

func (e *simEnv) scalar(query string, args ...any) int64 {
	e.t.Helper()
	var n int64
	require.NoError(e.t, e.pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func (e *simEnv) balance(participant, account string) int64 {
	return e.scalar(`SELECT balance FROM `+pgx.Identifier{schemaOf(e.prefix, participant), "accounts"}.Sanitize()+` WHERE account = $1`, account)
}

// ledgerSum returns the number and the sum of a participant's ledger entries for a saga.
func (e *simEnv) ledgerSum(participant, saga string) (n, sum int64) {
	e.t.Helper()
	q := `SELECT count(*), coalesce(sum(amount), 0) FROM ` + pgx.Identifier{schemaOf(e.prefix, participant), "ledger"}.Sanitize() + ` WHERE gid = $1`
	require.NoError(e.t, e.pool.QueryRow(context.Background(), q, saga).Scan(&n, &sum))
	return n, sum
}

func step(saga, participant, stepName string, kind protocol.Kind, action string, input string) *protocol.StepCommand {
	return &protocol.StepCommand{SagaID: saga, Step: stepName, Kind: kind, Participant: participant, Action: action, Attempt: 1, Input: json.RawMessage(input)}
}

func TestSimTransferAndCompensation(t *testing.T) {
	t.Parallel()
	e := newSimEnv(t)
	e.start(simConfig{Seed: 1, Participants: []participantConfig{
		{Name: "bank-a", Kind: kindTransfer, SeedAccounts: 3, InitialBalance: 100},
		{Name: "bank-b", Kind: kindTransfer, SeedAccounts: 3, InitialBalance: 100},
	}}, func(code int) { t.Errorf("unexpected exit %d", code) })

	in := `{"from":"acct-1","to":"acct-2","amount":30}`
	debit := step("s1", "bank-a", "debit", protocol.KindAction, "debit", in)
	r := e.call(debit)
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome, r.Error)
	require.JSONEq(t, `{"account":"acct-1","amount":-30,"balance":70}`, string(r.Output))
	credit := step("s1", "bank-b", "credit", protocol.KindAction, "credit", in)
	credit.StepIndex = 1
	c := e.call(credit)
	require.EqualValues(t, protocol.OutcomeSucceeded, c.Outcome, c.Error)
	require.EqualValues(t, 70, e.balance("bank-a", "acct-1"))
	require.EqualValues(t, 130, e.balance("bank-b", "acct-2"))

	// A duplicate credit changes nothing.
	require.Equal(t, *c, *e.call(credit))
	require.EqualValues(t, 130, e.balance("bank-b", "acct-2"))

	// Compensate the credit, as the coordinator would, with the action's output.
	undo := step("s1", "bank-b", "credit", protocol.KindCompensate, "undo_credit", in)
	undo.StepIndex = 1
	undo.Output = c.Output
	u := e.call(undo)
	require.EqualValues(t, protocol.OutcomeSucceeded, u.Outcome, u.Error)
	require.EqualValues(t, 100, e.balance("bank-b", "acct-2"))
	n, sum := e.ledgerSum("bank-b", "s1")
	require.EqualValues(t, 2, n, "the credit and its reversal")
	require.EqualValues(t, 0, sum, "a compensated step nets to zero (G3)")

	refund := step("s1", "bank-a", "debit", protocol.KindCompensate, "refund_debit", in)
	refund.Output = r.Output
	require.EqualValues(t, protocol.OutcomeSucceeded, e.call(refund).Outcome)
	require.EqualValues(t, 100, e.balance("bank-a", "acct-1"))
	total := e.scalar(`SELECT (SELECT sum(balance) FROM ` + pgx.Identifier{schemaOf(e.prefix, "bank-a"), "accounts"}.Sanitize() + `) + (SELECT sum(balance) FROM ` + pgx.Identifier{schemaOf(e.prefix, "bank-b"), "accounts"}.Sanitize() + `)`)
	require.EqualValues(t, 600, total, "money is conserved (G6)")

	// Business failures.
	over := e.call(step("s2", "bank-a", "debit", protocol.KindAction, "debit", `{"from":"acct-1","to":"acct-2","amount":1000}`))
	require.EqualValues(t, protocol.OutcomeFailed, over.Outcome)
	require.Equal(t, "insufficient funds in acct-1: 1000 requested", over.Error)
	nobody := e.call(step("s3", "bank-b", "credit", protocol.KindAction, "credit", `{"from":"acct-1","to":"acct-99","amount":1}`))
	require.EqualValues(t, protocol.OutcomeFailed, nobody.Outcome)
	require.Equal(t, "account acct-99 does not exist", nobody.Error)
	unknown := e.call(step("s4", "bank-a", "teleport", protocol.KindAction, "teleport", in))
	require.EqualValues(t, protocol.OutcomeFailed, unknown.Outcome)
	require.Equal(t, `participant bank-a (kind transfer) has no action "teleport"; it knows credit, debit, refund_debit, undo_credit`, unknown.Error)
	n, _ = e.ledgerSum("bank-a", "s2")
	require.Zero(t, n)
}

func TestSimInventoryAndPayment(t *testing.T) {
	t.Parallel()
	e := newSimEnv(t)
	e.start(simConfig{Participants: []participantConfig{
		{Name: "inventory", Kind: kindInventory, SeedAccounts: 1, InitialBalance: 5},
		{Name: "payments", Kind: kindPayment},
		{Name: "bench", Kind: kindNoop},
	}}, func(code int) { t.Errorf("unexpected exit %d", code) })

	in := `{"sku":"sku-1","qty":2,"account":"cust-1","amount":40}`
	res := e.call(step("s1", "inventory", "reserve", protocol.KindAction, "reserve", in))
	require.EqualValues(t, protocol.OutcomeSucceeded, res.Outcome, res.Error)
	require.EqualValues(t, 3, e.balance("inventory", "sku-1"))
	too := e.call(step("s2", "inventory", "reserve", protocol.KindAction, "reserve", `{"sku":"sku-1","qty":4}`))
	require.EqualValues(t, protocol.OutcomeFailed, too.Outcome)
	require.Equal(t, "insufficient stock in sku-1: 4 requested", too.Error)
	rel := step("s1", "inventory", "reserve", protocol.KindCompensate, "release", in)
	rel.Output = res.Output
	require.EqualValues(t, protocol.OutcomeSucceeded, e.call(rel).Outcome)
	require.EqualValues(t, 5, e.balance("inventory", "sku-1"))

	ch := e.call(step("s1", "payments", "charge", protocol.KindAction, "charge", in))
	require.EqualValues(t, protocol.OutcomeSucceeded, ch.Outcome, ch.Error)
	require.JSONEq(t, `{"account":"cust-1","amount":40}`, string(ch.Output))
	// The compensation carries no output here: the SDK fills it from the barrier.
	require.EqualValues(t, protocol.OutcomeSucceeded, e.call(step("s1", "payments", "charge", protocol.KindCompensate, "refund", in)).Outcome)
	n, sum := e.ledgerSum("payments", "s1")
	require.EqualValues(t, 2, n)
	require.Zero(t, sum)

	nop := e.call(step("s1", "bench", "anything", protocol.KindAction, "whatever_name", `{}`))
	require.EqualValues(t, protocol.OutcomeSucceeded, nop.Outcome)
	require.JSONEq(t, `{}`, string(nop.Output))
	require.EqualValues(t, 1, e.scalar(`SELECT count(*) FROM `+pgx.Identifier{schemaOf(e.prefix, "bench"), "barrier"}.Sanitize()))
}

func TestSimFaultKnobs(t *testing.T) {
	t.Parallel()
	e := newSimEnv(t)
	exits := make(chan int, 8)
	e.start(simConfig{Seed: 9, Participants: []participantConfig{{
		Name: "bank-a", Kind: kindTransfer, SeedAccounts: 2, InitialBalance: 100,
		Faults: map[string]faults{
			"debit":  {FailProbability: 1, CrashAfterCommitProbability: 1},
			"credit": {RetryProbability: 1, CrashAfterCommitProbability: 1},
		},
	}}}, func(code int) { exits <- code })

	in := `{"from":"acct-1","to":"acct-2","amount":10}`
	f := e.call(step("s1", "bank-a", "debit", protocol.KindAction, "debit", in))
	require.EqualValues(t, protocol.OutcomeFailed, f.Outcome)
	require.Contains(t, f.Error, "injected business failure")
	require.EqualValues(t, 100, e.balance("bank-a", "acct-1"))
	select {
	case code := <-exits:
		require.Equal(t, 137, code, "the failure was committed, then the injected crash fired")
	case <-time.After(waitFor):
		t.Fatal("no injected crash")
	}

	r := e.call(step("s2", "bank-a", "credit", protocol.KindAction, "credit", in))
	require.EqualValues(t, protocol.OutcomeRetry, r.Outcome)
	require.Contains(t, r.Error, "injected transient failure")
	select {
	case code := <-exits:
		t.Fatalf("exit %d after a retry, which commits nothing", code)
	default:
	}
}

func TestSimHangEndsAtShutdownAndIsRedelivered(t *testing.T) {
	t.Parallel()
	e := newSimEnv(t)
	cfg := simConfig{Participants: []participantConfig{{Name: "bench", Kind: kindNoop, Faults: map[string]faults{"*": {HangProbability: 1}}}}}
	first := e.start(cfg, func(code int) { t.Errorf("unexpected exit %d", code) })

	cmd := step("s1", "bench", "x", protocol.KindAction, "x", `{}`)
	e.send(cmd)
	require.Eventually(t, func() bool {
		_, hung, _ := first.s.track.counts()
		return hung == 1
	}, waitFor, 5*time.Millisecond)

	// Only a hung handler is left, so shutdown ends it without waiting out the grace period.
	stopped := make(chan struct{})
	go func() {
		first.s.shutdown(time.Hour, first.cancel)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("shutdown waited for the hung handler")
	}

	// The next process gets the command redelivered, and a redelivery does not hang.
	e.start(cfg, func(code int) { t.Errorf("unexpected exit %d", code) })
	r := e.await(cmd)
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome)
}

// TestSimBoundedHangRepliesAfterIt: a hang with hang_for holds the handler, then it goes on and
// replies as if nothing happened; the SDK's deadline stays on, so a hang longer than the
// command's timeout is cut there and answered "retry", with no effect.
func TestSimBoundedHangRepliesAfterIt(t *testing.T) {
	t.Parallel()
	e := newSimEnv(t)
	hangFor := duration(300 * time.Millisecond)
	cfg := simConfig{Participants: []participantConfig{{
		Name: "bank-a", Kind: kindTransfer, SeedAccounts: 2, InitialBalance: 100,
		Faults: map[string]faults{
			"debit":  {HangProbability: 1, HangFor: &hangFor},
			"credit": {HangProbability: 1, HangFor: ptr(duration(time.Hour))},
		},
	}}}
	r := e.start(cfg, func(code int) { t.Errorf("unexpected exit %d", code) })

	in := `{"from":"acct-1","to":"acct-2","amount":10}`
	debit := step("s1", "bank-a", "debit", protocol.KindAction, "debit", in)
	e.send(debit)
	require.Eventually(t, func() bool {
		_, hung, _ := r.s.track.counts()
		return hung == 1
	}, waitFor, time.Millisecond, "the debit never hung")
	reply := e.await(debit)
	require.EqualValues(t, protocol.OutcomeSucceeded, reply.Outcome, "after its hang the handler goes on: %+v", reply)
	require.EqualValues(t, 90, e.balance("bank-a", "acct-1"), "the debit took effect after the hang")
	_, hung, _ := r.s.track.counts()
	require.Zero(t, hung, "the hang is over once the reply is out")

	credit := step("s2", "bank-a", "credit", protocol.KindAction, "credit", in)
	credit.TimeoutMillis = 200
	reply = e.call(credit)
	require.EqualValues(t, protocol.OutcomeRetry, reply.Outcome, "a hang past the command's timeout ends at the SDK's deadline: %+v", reply)
	require.EqualValues(t, 100, e.balance("bank-a", "acct-2"), "the cut-off credit left no effect")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
