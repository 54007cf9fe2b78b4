package participant

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// These tests drive the barrier directly against the real PostgreSQL; worker_test.go covers the
// same rules end to end through RabbitMQ.

type barrierEnv struct {
	pool   *pgxpool.Pool
	schema string
	b      *barrier
}

func newBarrierEnv(t *testing.T) *barrierEnv {
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
	return &barrierEnv{pool: pool, schema: schema, b: w.barrier}
}

func searchPath(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	s := u.Query().Get("search_path")
	require.NotEmpty(t, s)
	return s
}

func (e *barrierEnv) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func (e *barrierEnv) effects(t *testing.T) int { return e.count(t, `SELECT count(*) FROM effects`) }

func (e *barrierEnv) barrierRows(t *testing.T, kind string) int {
	return e.count(t, `SELECT count(*) FROM barrier WHERE kind = $1`, kind)
}

// recorder is a handler that writes one effects row and counts its calls.
type recorder struct {
	calls atomic.Int32
	out   string
	err   error
	last  atomic.Pointer[protocol.StepCommand]
}

func (r *recorder) handle(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
	r.calls.Add(1)
	r.last.Store(cmd)
	if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, $3, $4)`, cmd.SagaID, cmd.Step, cmd.Kind, cmd.Action); err != nil {
		return nil, err
	}
	if r.err != nil {
		return nil, r.err
	}
	return json.RawMessage(r.out), nil
}

func action(saga string) *protocol.StepCommand {
	return &protocol.StepCommand{SagaID: saga, Step: "debit", Kind: protocol.KindAction, Participant: "p", Action: "debit", Attempt: 1, Input: json.RawMessage(`{"amount":5}`)}
}

func compensation(saga string) *protocol.StepCommand {
	return &protocol.StepCommand{SagaID: saga, Step: "debit", Kind: protocol.KindCompensate, Participant: "p", Action: "refund_debit", Attempt: 1}
}

func (e *barrierEnv) run(t *testing.T, cmd *protocol.StepCommand, h Handler) result {
	t.Helper()
	res, err := e.b.run(context.Background(), cmd, h)
	require.NoError(t, err)
	return res
}

func TestBarrierActionRunsOnceAndDuplicateGetsStoredReply(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	h := &recorder{out: `{"balance": 95,  "id":"x"}`}

	first := e.run(t, action("s1"), h.handle)
	require.Equal(t, protocol.OutcomeSucceeded, first.reply.Outcome)
	require.True(t, first.committed)
	require.JSONEq(t, `{"balance":95,"id":"x"}`, string(first.reply.Output))

	second := e.run(t, action("s1"), h.handle)
	require.True(t, second.duplicate)
	require.False(t, second.committed)
	require.Equal(t, first.reply, second.reply, "a duplicate gets the stored reply byte for byte")

	retried := action("s1")
	retried.Attempt = 2
	third := e.run(t, retried, h.handle)
	require.True(t, third.duplicate, "a later attempt of a decided step is a duplicate too")
	require.Equal(t, first.reply, third.reply)

	require.EqualValues(t, 1, h.calls.Load())
	require.Equal(t, 1, e.effects(t))
}

func TestBarrierCompensationBeforeActionIsNoopAndRefusesLateAction(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	act, comp := &recorder{out: `{}`}, &recorder{}

	c := e.run(t, compensation("s1"), comp.handle)
	require.Equal(t, protocol.OutcomeSucceeded, c.reply.Outcome)
	require.False(t, c.handlerRan)
	require.EqualValues(t, 0, comp.calls.Load())

	a := e.run(t, action("s1"), act.handle)
	require.Equal(t, protocol.OutcomeFailed, a.reply.Outcome)
	require.Equal(t, errCompensatedFirst, a.reply.Error)
	require.True(t, a.duplicate)
	require.EqualValues(t, 0, act.calls.Load(), "the late action is refused without running")

	again := e.run(t, compensation("s1"), comp.handle)
	require.True(t, again.duplicate)
	require.Equal(t, c.reply, again.reply)
	require.Equal(t, 0, e.effects(t))
}

func TestBarrierBusinessFailureRollsBackEffectAndCompensationIsNoop(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	act := &recorder{err: Failf("insufficient funds in %s", "acct-1")}
	comp := &recorder{}

	a := e.run(t, action("s1"), act.handle)
	require.Equal(t, protocol.OutcomeFailed, a.reply.Outcome)
	require.Equal(t, "insufficient funds in acct-1", a.reply.Error)
	require.Equal(t, 0, e.effects(t), "the handler's effect is rolled back to the savepoint")
	require.Equal(t, 1, e.barrierRows(t, protocol.KindAction), "the failure is decided and stored")

	dup := e.run(t, action("s1"), act.handle)
	require.Equal(t, a.reply, dup.reply)
	require.EqualValues(t, 1, act.calls.Load())

	c := e.run(t, compensation("s1"), comp.handle)
	require.Equal(t, protocol.OutcomeSucceeded, c.reply.Outcome)
	require.EqualValues(t, 0, comp.calls.Load(), "nothing to undo after a failed action")
}

func TestBarrierCompensationAfterSuccessRunsOnceWithActionOutput(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	act, comp := &recorder{out: `{"entry":7}`}, &recorder{out: `{"reversed":7}`}

	e.run(t, action("s1"), act.handle)
	c := e.run(t, compensation("s1"), comp.handle) // carries no output: filled from the barrier
	require.Equal(t, protocol.OutcomeSucceeded, c.reply.Outcome)
	require.JSONEq(t, `{"reversed":7}`, string(c.reply.Output))
	require.JSONEq(t, `{"entry":7}`, string(comp.last.Load().Output))

	withOutput := compensation("s1")
	withOutput.Output = json.RawMessage(`{"entry":7}`)
	dup := e.run(t, withOutput, comp.handle)
	require.True(t, dup.duplicate)
	require.Equal(t, c.reply, dup.reply)
	require.EqualValues(t, 1, comp.calls.Load())
	require.Equal(t, 2, e.effects(t))
}

func TestBarrierRetryableErrorKeepsNoRow(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	flaky := &recorder{err: errors.New("downstream timeout")}

	r := e.run(t, action("s1"), flaky.handle)
	require.Equal(t, protocol.OutcomeRetry, r.reply.Outcome)
	require.Equal(t, "downstream timeout", r.reply.Error)
	require.False(t, r.committed)
	require.Equal(t, 0, e.barrierRows(t, protocol.KindAction))
	require.Equal(t, 0, e.effects(t))

	flaky.err = nil
	r = e.run(t, action("s1"), flaky.handle)
	require.Equal(t, protocol.OutcomeSucceeded, r.reply.Outcome, "the retry runs the handler again")
	require.EqualValues(t, 2, flaky.calls.Load())
	require.Equal(t, 1, e.effects(t))
}

func TestBarrierPanicIsRetryable(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	r := e.run(t, action("s1"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ('s1','debit','action','x')`); err != nil {
			return nil, err
		}
		panic("nil map somewhere")
	})
	require.Equal(t, protocol.OutcomeRetry, r.reply.Outcome)
	require.Contains(t, r.reply.Error, "handler panicked: nil map somewhere")
	require.Equal(t, 0, e.barrierRows(t, protocol.KindAction))
	require.Equal(t, 0, e.effects(t))
}

func TestBarrierFailingCompensationIsRetriedAndKeepsNoRow(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	e.run(t, action("s1"), (&recorder{out: `{}`}).handle)

	for _, err := range []error{Failf("ledger closed"), errors.New("deadlock")} {
		comp := &recorder{err: err}
		r := e.run(t, compensation("s1"), comp.handle)
		require.Equal(t, protocol.OutcomeRetry, r.reply.Outcome, "a compensation is retried, even after a business failure")
		require.Equal(t, err.Error(), r.reply.Error)
		require.Equal(t, 0, e.barrierRows(t, protocol.KindCompensate))
	}
	comp := &recorder{}
	r := e.run(t, compensation("s1"), comp.handle)
	require.Equal(t, protocol.OutcomeSucceeded, r.reply.Outcome)
	require.Equal(t, 2, e.effects(t), "the action's and one compensation's")
}

func TestBarrierBadHandlerResults(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)

	r := e.run(t, action("s1"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return json.RawMessage(`{not json`), nil
	})
	require.Equal(t, protocol.OutcomeFailed, r.reply.Outcome)
	require.Contains(t, r.reply.Error, "not valid JSON")

	r = e.run(t, action("s3"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return nil, Fail(errors.New("nul\x00byte " + strings.Repeat("x", 2*maxErrorBytes)))
	})
	require.Equal(t, protocol.OutcomeFailed, r.reply.Outcome)
	require.True(t, strings.HasPrefix(r.reply.Error, "nulbyte xxx"), "NUL bytes are dropped so jsonb can store the error")
	require.LessOrEqual(t, len(r.reply.Error), maxErrorBytes+len("…"))

	// A handler that swallows an SQL error leaves the transaction aborted: not a success.
	r = e.run(t, action("s2"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		_, _ = tx.Exec(ctx, `INSERT INTO no_such_table VALUES (1)`)
		return nil, nil
	})
	require.Equal(t, protocol.OutcomeRetry, r.reply.Outcome)
	require.Equal(t, 2, e.barrierRows(t, protocol.KindAction), "only the failures of s1 and s3 are stored")
}

func TestBarrierWithoutTableIsAnInfrastructureError(t *testing.T) {
	t.Parallel()
	pool, dbURL := testenv.Pool(t)
	w, err := New(Config{Name: "p", Transport: noTransport{}, DB: pool, Schema: searchPath(t, dbURL)})
	require.NoError(t, err)
	_, err = w.barrier.run(context.Background(), action("s1"), (&recorder{}).handle)
	require.ErrorContains(t, err, "insert barrier row")
}

// blocker is a handler that signals when it has begun and waits for release.
type blocker struct {
	recorder
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newBlocker(out string) *blocker {
	return &blocker{recorder: recorder{out: out}, entered: make(chan struct{}), release: make(chan struct{})}
}

func (b *blocker) handle(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
	b.once.Do(func() { close(b.entered) })
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.recorder.handle(ctx, tx, cmd)
}

// waitLockWaiters waits until n statements on this test's barrier wait for a row lock.
func (e *barrierEnv) waitLockWaiters(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%barrier%'`, `"`+e.schema+`"`) >= n
	}, 10*time.Second, 5*time.Millisecond)
}

func TestBarrierConcurrentDuplicatesSerializeOnTheKey(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	h := newBlocker(`{"n":1}`)

	results := make(chan result, 2)
	errs := make(chan error, 2)
	go func() {
		r, err := e.b.run(context.Background(), action("s1"), h.handle)
		results <- r
		errs <- err
	}()
	<-h.entered
	go func() {
		r, err := e.b.run(context.Background(), action("s1"), h.handle)
		results <- r
		errs <- err
	}()
	e.waitLockWaiters(t, 1)
	close(h.release)

	r1, r2 := <-results, <-results
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	require.Equal(t, r1.reply, r2.reply)
	require.True(t, r1.duplicate != r2.duplicate, "exactly one ran")
	require.EqualValues(t, 1, h.calls.Load())
	require.Equal(t, 1, e.effects(t))
}

func TestBarrierCompensationWaitsForActionInFlight(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	act := newBlocker(`{"entry":1}`)
	comp := &recorder{}

	actDone := make(chan result, 1)
	go func() {
		r, err := e.b.run(context.Background(), action("s1"), act.handle)
		if err != nil {
			t.Error(err)
		}
		actDone <- r
	}()
	<-act.entered
	compDone := make(chan result, 1)
	go func() {
		r, err := e.b.run(context.Background(), compensation("s1"), comp.handle)
		if err != nil {
			t.Error(err)
		}
		compDone <- r
	}()
	e.waitLockWaiters(t, 1)
	close(act.release)

	require.Equal(t, protocol.OutcomeSucceeded, (<-actDone).reply.Outcome)
	c := <-compDone
	require.Equal(t, protocol.OutcomeSucceeded, c.reply.Outcome)
	require.True(t, c.handlerRan, "the action committed first, so its compensation undoes it")
	require.EqualValues(t, 1, comp.calls.Load())
}

func TestBarrierInterruptedHandlerDecidesNothing(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	h := newBlocker(`{}`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.b.run(ctx, action("s1"), h.handle)
		done <- err
	}()
	<-h.entered
	cancel()
	require.Error(t, <-done)
	require.Equal(t, 0, e.barrierRows(t, protocol.KindAction))
}

// noTransport satisfies Config validation for tests that never start the worker; embedding the
// interface keeps it compiling as the interface grows (any call would panic).
type noTransport struct{ transport.Transport }
