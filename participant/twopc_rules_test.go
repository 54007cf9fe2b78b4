package participant

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
)

// These tests drive the two-phase-commit barrier directly against the real PostgreSQL;
// twopc_test.go covers the worker end to end through RabbitMQ.

type txEnv struct {
	*barrierEnv
}

func newTxEnv(t *testing.T) *txEnv {
	t.Helper()
	pool, dbURL := testenv.Pool(t)
	schema := searchPath(t, dbURL)
	w, err := New(Config{Name: "p", Transport: noTransport{}, DB: pool, Schema: schema})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, w.Migrate(ctx))
	require.NoError(t, w.Migrate(ctx), "Migrate is idempotent")
	_, err = pool.Exec(ctx, `CREATE TABLE effects (gid text, step text, kind text, note text)`)
	require.NoError(t, err)
	return &txEnv{barrierEnv: &barrierEnv{pool: pool, schema: schema, b: w.barrier, w: w}}
}

// txRecorder is a set of handlers that write one effects row per call (with the payload they
// saw) and count their calls; err, when set, is what they return after writing.
type txRecorder struct {
	mu                        sync.Mutex
	prepares, commits, aborts atomic.Int32
	err                       map[protocol.Kind]error
	payloads                  map[protocol.Kind]string
}

func (r *txRecorder) handler(kind protocol.Kind, calls *atomic.Int32) TxHandler {
	return func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
		calls.Add(1)
		if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, $3, $4)`, cmd.TxID, cmd.Participant, kind, string(cmd.Payload)); err != nil {
			return err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.payloads == nil {
			r.payloads = map[protocol.Kind]string{}
		}
		r.payloads[kind] = string(cmd.Payload)
		return r.err[kind]
	}
}

func (r *txRecorder) fail(kind protocol.Kind, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = map[protocol.Kind]error{}
	}
	r.err[kind] = err
}

func (r *txRecorder) payload(kind protocol.Kind) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.payloads[kind]
}

func (r *txRecorder) handlers() *TxHandlers {
	return &TxHandlers{
		Prepare: r.handler(protocol.KindPrepare, &r.prepares),
		Commit:  r.handler(protocol.KindCommit, &r.commits),
		Abort:   r.handler(protocol.KindAbort, &r.aborts),
	}
}

func txCmd(id string, kind protocol.Kind) *protocol.TxCommand {
	return &protocol.TxCommand{TxID: id, Participant: "p", Kind: kind, Attempt: 1, Payload: json.RawMessage(`{"account":"acct-1","amount":10}`)}
}

func (e *txEnv) run(t *testing.T, cmd *protocol.TxCommand, h *TxHandlers) twopcResult {
	t.Helper()
	res, err := e.b.runTwoPC(context.Background(), cmd, h)
	require.NoError(t, err)
	return res
}

func (e *txEnv) prepared(t *testing.T) int { return e.count(t, `SELECT count(*) FROM prepared`) }

func (e *txEnv) effectsOf(t *testing.T, kind protocol.Kind) int {
	return e.count(t, `SELECT count(*) FROM effects WHERE kind = $1`, kind)
}

func TestTwoPCBarrierPrepareYesOnceThenCommitOnce(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	r := &txRecorder{}

	first := e.run(t, txCmd("t1", protocol.KindPrepare), r.handlers())
	require.Equal(t, protocol.TxReply{Outcome: protocol.OutcomeVoteYes}, first.reply)
	require.True(t, first.committed)
	require.Equal(t, 1, e.prepared(t), "a YES is recorded durably")
	var payload string
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT payload::text FROM prepared WHERE tx_id = 't1' AND participant = 'p'`).Scan(&payload))
	require.JSONEq(t, `{"account":"acct-1","amount":10}`, payload)

	dup := e.run(t, txCmd("t1", protocol.KindPrepare), r.handlers())
	require.True(t, dup.duplicate)
	require.Equal(t, first.reply, dup.reply)
	require.EqualValues(t, 1, r.prepares.Load(), "a duplicate PREPARE gets the stored vote")

	commit := txCmd("t1", protocol.KindCommit)
	commit.Payload = nil // filled from the prepared record
	c := e.run(t, commit, r.handlers())
	require.Equal(t, protocol.TxReply{Outcome: protocol.OutcomeAck}, c.reply)
	require.True(t, c.handlerRan)
	require.JSONEq(t, `{"account":"acct-1","amount":10}`, r.payload(protocol.KindCommit))
	require.Equal(t, 0, e.prepared(t), "the decision ends the prepared record")

	commit.Attempt = 2
	again := e.run(t, commit, r.handlers())
	require.True(t, again.duplicate)
	require.Equal(t, c.reply, again.reply)
	require.EqualValues(t, 1, r.commits.Load())
	require.Equal(t, 1, e.effectsOf(t, protocol.KindCommit))

	// A PREPARE redelivered after the decision is still answered from the barrier.
	late := e.run(t, txCmd("t1", protocol.KindPrepare), r.handlers())
	require.True(t, late.duplicate)
	require.EqualValues(t, protocol.OutcomeVoteYes, late.reply.Outcome)
	require.Equal(t, 0, e.prepared(t))
}

func TestTwoPCBarrierPrepareYesThenAbortReleasesOnce(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	r := &txRecorder{}
	e.run(t, txCmd("t1", protocol.KindPrepare), r.handlers())

	a := e.run(t, txCmd("t1", protocol.KindAbort), r.handlers())
	require.EqualValues(t, protocol.OutcomeAck, a.reply.Outcome)
	require.True(t, a.handlerRan)
	require.Equal(t, 0, e.prepared(t))
	dup := e.run(t, txCmd("t1", protocol.KindAbort), r.handlers())
	require.True(t, dup.duplicate)
	require.EqualValues(t, 1, r.aborts.Load())
}

func TestTwoPCBarrierVoteNoRollsBackAndAbortIsNoop(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	r := &txRecorder{}
	r.fail(protocol.KindPrepare, Failf("insufficient available funds in acct-1"))

	v := e.run(t, txCmd("t1", protocol.KindPrepare), r.handlers())
	require.Equal(t, protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: "insufficient available funds in acct-1"}, v.reply)
	require.True(t, v.committed)
	require.Equal(t, 0, e.effectsOf(t, protocol.KindPrepare), "the NO's writes are rolled back")
	require.Equal(t, 0, e.prepared(t))

	a := e.run(t, txCmd("t1", protocol.KindAbort), r.handlers())
	require.EqualValues(t, protocol.OutcomeAck, a.reply.Outcome)
	require.False(t, a.handlerRan, "nothing was reserved, so there is nothing to release")
	require.EqualValues(t, 0, r.aborts.Load())
}

func TestTwoPCBarrierAbortBeforePrepareRefusesLatePrepare(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	r := &txRecorder{}

	a := e.run(t, txCmd("t1", protocol.KindAbort), r.handlers())
	require.EqualValues(t, protocol.OutcomeAck, a.reply.Outcome)
	require.False(t, a.handlerRan)

	p := e.run(t, txCmd("t1", protocol.KindPrepare), r.handlers())
	require.True(t, p.duplicate)
	require.Equal(t, protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: errAbortedFirst}, p.reply)
	require.EqualValues(t, 0, r.prepares.Load(), "a PREPARE after its ABORT never runs")
	require.Equal(t, 0, e.prepared(t), "and reserves nothing")
}

func TestTwoPCBarrierTransientFailuresKeepNothing(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	r := &txRecorder{}
	r.fail(protocol.KindPrepare, errors.New("connection reset by peer"))

	p := e.run(t, txCmd("t1", protocol.KindPrepare), r.handlers())
	require.True(t, p.requeue)
	require.Empty(t, p.reply.Outcome, "a transient failure sends no vote")
	require.Equal(t, 0, e.count(t, `SELECT count(*) FROM barrier`))
	require.Equal(t, 0, e.effects(t))

	r.fail(protocol.KindPrepare, nil)
	r.fail(protocol.KindCommit, Failf("a business error cannot undo a decision"))
	require.EqualValues(t, protocol.OutcomeVoteYes, e.run(t, txCmd("t1", protocol.KindPrepare), r.handlers()).reply.Outcome)
	c := e.run(t, txCmd("t1", protocol.KindCommit), r.handlers())
	require.True(t, c.requeue, "COMMIT never fails: it is tried again")
	require.Equal(t, 1, e.prepared(t), "still prepared")
	require.Equal(t, 0, e.barrierRows(t, protocol.KindCommit))

	r.fail(protocol.KindCommit, nil)
	require.EqualValues(t, protocol.OutcomeAck, e.run(t, txCmd("t1", protocol.KindCommit), r.handlers()).reply.Outcome)
	require.Equal(t, 1, e.effectsOf(t, protocol.KindCommit))
	require.Equal(t, 0, e.prepared(t))
}

func TestTwoPCBarrierPanicIsTransient(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	h := (&txRecorder{}).handlers()
	h.Prepare = func(context.Context, pgx.Tx, *protocol.TxCommand) error { panic("nil map") }
	p := e.run(t, txCmd("t1", protocol.KindPrepare), h)
	require.True(t, p.requeue)
	var pe *panicError
	require.ErrorAs(t, p.cause, &pe)
}

func TestTwoPCBarrierProtocolViolations(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	r := &txRecorder{}
	violates := func(cmd *protocol.TxCommand, want string) {
		t.Helper()
		_, err := e.b.runTwoPC(context.Background(), cmd, r.handlers())
		var v *violationError
		require.ErrorAs(t, err, &v)
		require.ErrorContains(t, err, want)
	}

	violates(txCmd("never", protocol.KindCommit), "never prepared")
	require.Equal(t, 0, e.barrierRows(t, protocol.KindCommit), "a refused COMMIT leaves nothing behind")

	r.fail(protocol.KindPrepare, Fail(errors.New("out of stock")))
	e.run(t, txCmd("no", protocol.KindPrepare), r.handlers())
	violates(txCmd("no", protocol.KindCommit), "voted NO (out of stock)")
	r.fail(protocol.KindPrepare, nil)

	e.run(t, txCmd("aborted", protocol.KindPrepare), r.handlers())
	e.run(t, txCmd("aborted", protocol.KindAbort), r.handlers())
	violates(txCmd("aborted", protocol.KindCommit), "already aborted")

	e.run(t, txCmd("committed", protocol.KindPrepare), r.handlers())
	e.run(t, txCmd("committed", protocol.KindCommit), r.handlers())
	violates(txCmd("committed", protocol.KindAbort), "already committed")
	require.EqualValues(t, 1, r.commits.Load())
	require.EqualValues(t, 1, r.aborts.Load())
}

// txBlocker is a Prepare handler that signals when it has begun and waits for release, then
// returns err.
type txBlocker struct {
	entered, release chan struct{}
	once             sync.Once
	err              error
}

func newTxBlocker(err error) *txBlocker {
	return &txBlocker{entered: make(chan struct{}), release: make(chan struct{}), err: err}
}

func (b *txBlocker) handle(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
	b.once.Do(func() { close(b.entered) })
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, 'prepare', '')`, cmd.TxID, cmd.Participant); err != nil {
		return err
	}
	return b.err
}

// TestTwoPCBarrierAbortWaitsForPrepareInFlight is the frozen participant: the coordinator's prepare
// timeout sends ABORT while the PREPARE is still running here. The ABORT waits on the barrier
// row; whatever the PREPARE decides, the ABORT then undoes exactly that.
func TestTwoPCBarrierAbortWaitsForPrepareInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		err       error
		wantAbort bool // Abort runs: the PREPARE committed a YES first
		wantVote  protocol.TxReply
	}{
		{"late yes is released", nil, true, protocol.TxReply{Outcome: protocol.OutcomeVoteYes}},
		{"late no needs nothing", Failf("no"), false, protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: "no"}},
		{"transient failure leaves a refusal", errors.New("deadlock"), false, protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: errAbortedFirst}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTxEnv(t)
			r := &txRecorder{}
			blocked := newTxBlocker(tc.err)
			h := r.handlers()
			h.Prepare = blocked.handle

			prepared := make(chan twopcResult, 1)
			go func() {
				res, err := e.b.runTwoPC(context.Background(), txCmd("t1", protocol.KindPrepare), h)
				if err != nil {
					t.Error(err)
				}
				prepared <- res
			}()
			<-blocked.entered
			aborted := make(chan twopcResult, 1)
			go func() {
				res, err := e.b.runTwoPC(context.Background(), txCmd("t1", protocol.KindAbort), h)
				if err != nil {
					t.Error(err)
				}
				aborted <- res
			}()
			e.waitLockWaiters(t, 1)
			close(blocked.release)

			<-prepared
			a := <-aborted
			require.EqualValues(t, protocol.OutcomeAck, a.reply.Outcome)
			require.Equal(t, tc.wantAbort, a.handlerRan)
			require.Equal(t, 0, e.prepared(t), "nothing is left prepared")

			// The PREPARE redelivered (a transient failure requeues it) gets the final vote.
			again := e.run(t, txCmd("t1", protocol.KindPrepare), h)
			require.True(t, again.duplicate)
			require.Equal(t, tc.wantVote, again.reply)
		})
	}
}

func TestTwoPCBarrierInterruptedPrepareDecidesNothing(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	blocked := newTxBlocker(nil)
	h := (&txRecorder{}).handlers()
	h.Prepare = blocked.handle
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.b.runTwoPC(ctx, txCmd("t1", protocol.KindPrepare), h)
		done <- err
	}()
	<-blocked.entered
	cancel()
	require.Error(t, <-done)
	require.Equal(t, 0, e.barrierRows(t, protocol.KindPrepare))
	require.Equal(t, 0, e.prepared(t))
}

func TestTwoPCBarrierSharesTableWithSagaSteps(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	r := &txRecorder{}
	// A saga and a transaction with the same id and a step named like the participant do not
	// collide: their kinds differ.
	e.barrierEnv.run(t, &protocol.StepCommand{SagaID: "same", Step: "p", Kind: protocol.KindAction, Participant: "p", Action: "debit", Attempt: 1}, (&recorder{out: `{}`}).handle)
	require.EqualValues(t, protocol.OutcomeVoteYes, e.run(t, txCmd("same", protocol.KindPrepare), r.handlers()).reply.Outcome)
	require.Equal(t, 2, e.count(t, `SELECT count(*) FROM barrier WHERE gid = 'same'`))
}

func TestTxConfigDefaultsAndValidation(t *testing.T) {
	t.Parallel()
	c := Config{}.WithDefaults()
	require.Equal(t, DefaultQueryInterval, c.QueryInterval)
	require.Equal(t, DefaultPreparedSilence, c.PreparedSilence)
	c = Config{Name: "p", Transport: noTransport{}, DB: &pgxpool.Pool{}, PreparedSilence: -time.Second}.WithDefaults()
	require.ErrorContains(t, c.validate(), "Config.PreparedSilence -1s must not be negative")
}

// TestTwoPCBarrierRoundTrips: two-phase-commit commands go through the same pipelined
// transaction as saga steps. A PREPARE costs two round trips, a COMMIT or an ABORT after a YES
// three (the prepared record is forgotten once the vote is known), a duplicate three.
func TestTwoPCBarrierRoundTrips(t *testing.T) {
	t.Parallel()
	e, m := newMeteredEnv(t)
	te := &txEnv{barrierEnv: e}
	// Handlers without statements of their own: only the barrier's round trips are counted.
	none := func(context.Context, pgx.Tx, *protocol.TxCommand) error { return nil }
	yes := &TxHandlers{Prepare: none, Commit: none, Abort: none}
	no := &TxHandlers{Prepare: func(context.Context, pgx.Tx, *protocol.TxCommand) error { return Failf("no") }, Commit: none, Abort: none}
	cmd := func(kind protocol.Kind) func(string) *protocol.TxCommand {
		return func(id string) *protocol.TxCommand { return txCmd(id, kind) }
	}
	done := func(kinds ...protocol.Kind) func(string, *TxHandlers) {
		return func(id string, h *TxHandlers) {
			for _, k := range kinds {
				te.run(t, txCmd(id, k), h)
			}
		}
	}
	paths := []struct {
		name       string
		setup      func(string, *TxHandlers)
		cmd        func(string) *protocol.TxCommand
		h          *TxHandlers
		want       protocol.Outcome
		roundTrips int64
	}{
		{"prepare votes yes", nil, cmd(protocol.KindPrepare), yes, protocol.OutcomeVoteYes, 2},
		{"prepare votes no", nil, cmd(protocol.KindPrepare), no, protocol.OutcomeVoteNo, 2},
		{"duplicate prepare", done(protocol.KindPrepare), cmd(protocol.KindPrepare), yes, protocol.OutcomeVoteYes, 3},
		{"commit after yes", done(protocol.KindPrepare), cmd(protocol.KindCommit), yes, protocol.OutcomeAck, 3},
		{"duplicate commit", done(protocol.KindPrepare, protocol.KindCommit), cmd(protocol.KindCommit), yes, protocol.OutcomeAck, 3},
		{"abort after yes", done(protocol.KindPrepare), cmd(protocol.KindAbort), yes, protocol.OutcomeAck, 3},
		{"abort after no", done(protocol.KindPrepare), cmd(protocol.KindAbort), no, protocol.OutcomeAck, 2},
		{"abort first", nil, cmd(protocol.KindAbort), yes, protocol.OutcomeAck, 2},
		{"late prepare", done(protocol.KindAbort), cmd(protocol.KindPrepare), yes, protocol.OutcomeVoteNo, 3},
	}
	for round, prefix := range []string{"warm-", ""} {
		for _, p := range paths {
			id := prefix + p.name
			if p.setup != nil {
				p.setup(id, p.h)
			}
			before := m.writes.Load()
			r := te.run(t, p.cmd(id), p.h)
			require.Equal(t, p.want, r.reply.Outcome, p.name)
			if round == 1 {
				require.Equal(t, p.roundTrips, m.writes.Load()-before, "round trips of %s", p.name)
			}
		}
	}

	// A violation rolls back what it did and leaves the connection fit for reuse.
	_, err := e.b.runTwoPC(context.Background(), txCmd("never", protocol.KindCommit), yes)
	var v *violationError
	require.ErrorAs(t, err, &v)
	require.Len(t, m.connections(), 1, "every path leaves its connection fit for reuse")
	require.Equal(t, 0, e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND pid = $1`, m.connections()[0]))
	require.Equal(t, 0, e.count(t, `SELECT count(*) FROM barrier WHERE gid = 'never'`))
}

// TestTwoPCBarrierHandlerCannotEndTheTransaction: the 2PC handlers get the same savepoint Tx as a
// saga step's handler; one that ends it keeps nothing and is tried again.
func TestTwoPCBarrierHandlerCannotEndTheTransaction(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	r := &txRecorder{}
	h := r.handlers()
	prepare := h.Prepare
	h.Prepare = func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
		if err := prepare(ctx, tx, cmd); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	p := e.run(t, txCmd("t1", protocol.KindPrepare), h)
	require.True(t, p.requeue)
	require.EqualError(t, p.cause, "handler returned success but its transaction cannot be kept: tx is closed")
	require.Equal(t, 0, e.count(t, `SELECT count(*) FROM barrier`))
	require.Equal(t, 0, e.effects(t), "the savepoint the handler released is rolled back with the rest")
	require.Equal(t, 0, e.prepared(t))

	h.Prepare = prepare
	require.EqualValues(t, protocol.OutcomeVoteYes, e.run(t, txCmd("t1", protocol.KindPrepare), h).reply.Outcome)
	require.Equal(t, 1, e.prepared(t))
}
