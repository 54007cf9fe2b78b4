package participant

import (
	"context"
	"encoding/json"
	"errors"
	"math"
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
	w      *Worker
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
	return &barrierEnv{pool: pool, schema: schema, b: w.barrier, w: w}
}

func searchPath(t testing.TB, dbURL string) string {
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

func (e *barrierEnv) barrierRows(t *testing.T, kind protocol.Kind) int {
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
	res, err := e.b.runStep(context.Background(), cmd, h)
	require.NoError(t, err)
	return res
}

func TestBarrierActionRunsOnceAndDuplicateGetsStoredReply(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	h := &recorder{out: `{"balance": 95,  "id":"x"}`}

	first := e.run(t, action("s1"), h.handle)
	require.EqualValues(t, protocol.OutcomeSucceeded, first.reply.Outcome)
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
	require.EqualValues(t, protocol.OutcomeSucceeded, c.reply.Outcome)
	require.False(t, c.handlerRan)
	require.EqualValues(t, 0, comp.calls.Load())

	a := e.run(t, action("s1"), act.handle)
	require.EqualValues(t, protocol.OutcomeFailed, a.reply.Outcome)
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
	require.EqualValues(t, protocol.OutcomeFailed, a.reply.Outcome)
	require.Equal(t, "insufficient funds in acct-1", a.reply.Error)
	require.Equal(t, 0, e.effects(t), "the handler's effect is rolled back to the savepoint")
	require.Equal(t, 1, e.barrierRows(t, protocol.KindAction), "the failure is decided and stored")

	dup := e.run(t, action("s1"), act.handle)
	require.Equal(t, a.reply, dup.reply)
	require.EqualValues(t, 1, act.calls.Load())

	c := e.run(t, compensation("s1"), comp.handle)
	require.EqualValues(t, protocol.OutcomeSucceeded, c.reply.Outcome)
	require.EqualValues(t, 0, comp.calls.Load(), "nothing to undo after a failed action")
}

func TestBarrierCompensationAfterSuccessRunsOnceWithActionOutput(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	act, comp := &recorder{out: `{"entry":7}`}, &recorder{out: `{"reversed":7}`}

	e.run(t, action("s1"), act.handle)
	c := e.run(t, compensation("s1"), comp.handle) // carries no output: filled from the barrier
	require.EqualValues(t, protocol.OutcomeSucceeded, c.reply.Outcome)
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
	require.EqualValues(t, protocol.OutcomeRetry, r.reply.Outcome)
	require.Equal(t, "downstream timeout", r.reply.Error)
	require.False(t, r.committed)
	require.Equal(t, 0, e.barrierRows(t, protocol.KindAction))
	require.Equal(t, 0, e.effects(t))

	flaky.err = nil
	r = e.run(t, action("s1"), flaky.handle)
	require.EqualValues(t, protocol.OutcomeSucceeded, r.reply.Outcome, "the retry runs the handler again")
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
	require.EqualValues(t, protocol.OutcomeRetry, r.reply.Outcome)
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
		require.EqualValues(t, protocol.OutcomeRetry, r.reply.Outcome, "a compensation is retried, even after a business failure")
		require.Equal(t, err.Error(), r.reply.Error)
		require.Equal(t, 0, e.barrierRows(t, protocol.KindCompensate))
	}
	comp := &recorder{}
	r := e.run(t, compensation("s1"), comp.handle)
	require.EqualValues(t, protocol.OutcomeSucceeded, r.reply.Outcome)
	require.Equal(t, 2, e.effects(t), "the action's and one compensation's")
}

func TestBarrierBadHandlerResults(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)

	r := e.run(t, action("s1"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return json.RawMessage(`{not json`), nil
	})
	require.EqualValues(t, protocol.OutcomeFailed, r.reply.Outcome)
	require.Contains(t, r.reply.Error, "not valid JSON")

	// Output nested deeper than the coordinator accepts (protocol.MaxJSONDepth) is a business
	// failure, not a reply the coordinator would dead-letter.
	r = e.run(t, action("s4"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return json.RawMessage(strings.Repeat("[", 100) + strings.Repeat("]", 100)), nil
	})
	require.EqualValues(t, protocol.OutcomeFailed, r.reply.Outcome)
	require.Contains(t, r.reply.Error, "nested 100 levels deep")

	r = e.run(t, action("s3"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return nil, Fail(errors.New("nul\x00byte " + strings.Repeat("x", 2*maxErrorBytes)))
	})
	require.EqualValues(t, protocol.OutcomeFailed, r.reply.Outcome)
	require.True(t, strings.HasPrefix(r.reply.Error, "nulbyte xxx"), "NUL bytes are dropped so jsonb can store the error")
	require.LessOrEqual(t, len(r.reply.Error), maxErrorBytes+len("…"))

	// A handler that swallows an SQL error leaves the transaction aborted: not a success.
	r = e.run(t, action("s2"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		_, _ = tx.Exec(ctx, `INSERT INTO no_such_table VALUES (1)`)
		return nil, nil
	})
	require.EqualValues(t, protocol.OutcomeRetry, r.reply.Outcome)
	require.Equal(t, 3, e.barrierRows(t, protocol.KindAction), "only the failures of s1, s3 and s4 are stored")
}

func TestBarrierWithoutTableIsAnInfrastructureError(t *testing.T) {
	t.Parallel()
	pool, dbURL := testenv.Pool(t)
	w, err := New(Config{Name: "p", Transport: noTransport{}, DB: pool, Schema: searchPath(t, dbURL)})
	require.NoError(t, err)
	_, err = w.barrier.runStep(context.Background(), action("s1"), (&recorder{}).handle)
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
		r, err := e.b.runStep(context.Background(), action("s1"), h.handle)
		results <- r
		errs <- err
	}()
	<-h.entered
	go func() {
		r, err := e.b.runStep(context.Background(), action("s1"), h.handle)
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
		r, err := e.b.runStep(context.Background(), action("s1"), act.handle)
		if err != nil {
			t.Error(err)
		}
		actDone <- r
	}()
	<-act.entered
	compDone := make(chan result, 1)
	go func() {
		r, err := e.b.runStep(context.Background(), compensation("s1"), comp.handle)
		if err != nil {
			t.Error(err)
		}
		compDone <- r
	}()
	e.waitLockWaiters(t, 1)
	close(act.release)

	require.EqualValues(t, protocol.OutcomeSucceeded, (<-actDone).reply.Outcome)
	c := <-compDone
	require.EqualValues(t, protocol.OutcomeSucceeded, c.reply.Outcome)
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
		_, err := e.b.runStep(ctx, action("s1"), h.handle)
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

func actionAttempt(saga string, attempt int) *protocol.StepCommand {
	cmd := action(saga)
	cmd.Attempt = attempt
	return cmd
}

// actionRow reads the action barrier row of (saga, "debit"): its outcome, error and attempt.
func (e *barrierEnv) actionRow(t *testing.T, saga string) (outcome, errText string, attempt int) {
	t.Helper()
	require.NoError(t, e.pool.QueryRow(context.Background(),
		`SELECT reply->>'outcome', coalesce(reply->>'error', ''), attempt FROM barrier WHERE gid = $1 AND step = 'debit' AND kind = 'action'`,
		saga).Scan(&outcome, &errText, &attempt))
	return outcome, errText, attempt
}

// TestBarrierLaterAttemptReopensBusinessFailure: a business failure is final for its attempt, but
// a later attempt (forward recovery after the pivot, or a retry after a timeout) runs the handler
// again, until one succeeds; a success is never reopened.
func TestBarrierLaterAttemptReopensBusinessFailure(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	h := &recorder{err: Failf("insufficient funds")}

	first := e.run(t, actionAttempt("s1", 1), h.handle)
	require.Equal(t, protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "insufficient funds"}, first.reply)
	require.True(t, first.committed)
	outcome, _, attempt := e.actionRow(t, "s1")
	require.EqualValues(t, protocol.OutcomeFailed, outcome)
	require.Equal(t, 1, attempt, "the row records the attempt that decided it")

	dup := e.run(t, actionAttempt("s1", 1), h.handle)
	require.True(t, dup.duplicate, "a redelivery of the same attempt does not reopen its failure")
	require.Equal(t, first.reply, dup.reply)
	require.EqualValues(t, 1, h.calls.Load())

	h.err = Failf("still insufficient")
	second := e.run(t, actionAttempt("s1", 2), h.handle)
	require.True(t, second.handlerRan)
	require.True(t, second.committed)
	require.False(t, second.duplicate)
	require.Equal(t, protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "still insufficient"}, second.reply)
	_, _, attempt = e.actionRow(t, "s1")
	require.Equal(t, 2, attempt)
	require.EqualValues(t, 2, h.calls.Load())

	// The row holds one decision per key, the latest: a redelivery of attempt 1 now gets attempt
	// 2's failure. The coordinator counts a failure only for the attempt in flight, so a failure
	// sent for attempt 1 changes nothing there.
	for _, n := range []int{1, 2} {
		r := e.run(t, actionAttempt("s1", n), h.handle)
		require.True(t, r.duplicate, "attempt %d", n)
		require.Equal(t, second.reply, r.reply, "attempt %d", n)
	}
	require.EqualValues(t, 2, h.calls.Load())
	require.Equal(t, 0, e.effects(t), "each failure rolled its effect back")

	h.err, h.out = nil, `{"entry":3}`
	third := e.run(t, actionAttempt("s1", 3), h.handle)
	require.EqualValues(t, protocol.OutcomeSucceeded, third.reply.Outcome)
	require.JSONEq(t, `{"entry":3}`, string(third.reply.Output))
	require.True(t, third.committed)
	require.Equal(t, 1, e.effects(t))

	// After the success every attempt, earlier or later, gets that success and nothing runs again.
	// That is safe: the effect was applied exactly once, a success is true whichever attempt asks,
	// and the coordinator takes a success from any attempt up to its current one (a late success),
	// so an old attempt answered with it tells the coordinator the truth.
	for _, n := range []int{1, 2, 3, 4} {
		r := e.run(t, actionAttempt("s1", n), h.handle)
		require.True(t, r.duplicate, "attempt %d", n)
		require.False(t, r.handlerRan, "attempt %d", n)
		require.Equal(t, third.reply, r.reply, "attempt %d", n)
	}
	require.EqualValues(t, 3, h.calls.Load())
	require.Equal(t, 1, e.effects(t))
	outcome, _, attempt = e.actionRow(t, "s1")
	require.EqualValues(t, protocol.OutcomeSucceeded, outcome)
	require.Equal(t, 3, attempt, "a success is not reopened")
}

// TestBarrierReopenIsPartOfTheAttemptsTransaction: a later attempt that meets a transient error
// rolls back with the reopening, so the earlier failure stays stored and a redelivery of the later
// attempt reopens it again.
func TestBarrierReopenIsPartOfTheAttemptsTransaction(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	h := &recorder{err: Failf("insufficient funds")}
	first := e.run(t, actionAttempt("s1", 1), h.handle)

	h.err = errors.New("deadlock detected")
	r := e.run(t, actionAttempt("s1", 2), h.handle)
	require.EqualValues(t, protocol.OutcomeRetry, r.reply.Outcome)
	require.False(t, r.committed)
	outcome, errText, attempt := e.actionRow(t, "s1")
	require.Equal(t, []any{string(protocol.OutcomeFailed), "insufficient funds", 1}, []any{outcome, errText, attempt},
		"the reopening was rolled back with the attempt")
	dup := e.run(t, actionAttempt("s1", 1), h.handle)
	require.Equal(t, first.reply, dup.reply)

	h.err = nil
	r = e.run(t, actionAttempt("s1", 2), h.handle)
	require.EqualValues(t, protocol.OutcomeSucceeded, r.reply.Outcome)
	require.EqualValues(t, 3, h.calls.Load())
	require.Equal(t, 1, e.effects(t))
}

// TestBarrierCompensationTurnsStoredFailureIntoRefusal: once a compensation has found a stored
// business failure, the action row holds the refusal, so no later attempt runs the action: the
// saga gave the step up and will not undo an effect applied after that.
func TestBarrierCompensationTurnsStoredFailureIntoRefusal(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	act := &recorder{err: Failf("insufficient funds")}
	comp := &recorder{}

	e.run(t, actionAttempt("s1", 1), act.handle)
	c := e.run(t, compensation("s1"), comp.handle)
	require.Equal(t, protocol.StepReply{Outcome: protocol.OutcomeSucceeded}, c.reply)
	require.True(t, c.committed)
	require.False(t, c.handlerRan, "nothing to undo")
	outcome, errText, _ := e.actionRow(t, "s1")
	require.EqualValues(t, protocol.OutcomeFailed, outcome)
	require.Equal(t, errCompensatedFirst, errText, "the business failure became the refusal")

	act.err, act.out = nil, `{"entry":1}`
	refusal := protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: errCompensatedFirst}
	for _, n := range []int{2, 1, 3} {
		r := e.run(t, actionAttempt("s1", n), act.handle)
		require.Equal(t, refusal, r.reply, "attempt %d", n)
		require.True(t, r.duplicate, "attempt %d", n)
		require.False(t, r.handlerRan, "attempt %d", n)
	}
	require.EqualValues(t, 1, act.calls.Load(), "only the first attempt ran")
	require.Equal(t, 0, e.effects(t))

	for _, n := range []int{1, 2} {
		cmd := compensation("s1")
		cmd.Attempt = n
		again := e.run(t, cmd, comp.handle)
		require.True(t, again.duplicate)
		require.Equal(t, c.reply, again.reply)
	}
	require.EqualValues(t, 0, comp.calls.Load())
}

// TestBarrierCompensationWaitsForReopenedAction: a compensation that arrives while a later attempt
// is running after a stored failure waits for it, and undoes its effect if it succeeded.
func TestBarrierCompensationWaitsForReopenedAction(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	e.run(t, actionAttempt("s1", 1), (&recorder{err: Failf("insufficient funds")}).handle)

	act := newBlocker(`{"entry":2}`)
	comp := &recorder{out: `{"reversed":2}`}
	actDone := make(chan result, 1)
	go func() {
		r, err := e.b.runStep(context.Background(), actionAttempt("s1", 2), act.handle)
		if err != nil {
			t.Error(err)
		}
		actDone <- r
	}()
	select {
	case <-act.entered:
	case r := <-actDone:
		t.Fatalf("attempt 2 did not run its handler: got %+v", r.reply)
	}
	compDone := make(chan result, 1)
	go func() {
		r, err := e.b.runStep(context.Background(), compensation("s1"), comp.handle)
		if err != nil {
			t.Error(err)
		}
		compDone <- r
	}()
	e.waitLockWaiters(t, 1)
	close(act.release)

	a := <-actDone
	require.EqualValues(t, protocol.OutcomeSucceeded, a.reply.Outcome)
	c := <-compDone
	require.EqualValues(t, protocol.OutcomeSucceeded, c.reply.Outcome)
	require.True(t, c.handlerRan, "the reopened attempt committed a success first, so the compensation undoes it")
	require.JSONEq(t, `{"entry":2}`, string(comp.last.Load().Output), "with the output of the attempt that succeeded")
	require.Equal(t, 2, e.effects(t), "the action's and its compensation's")
}

// TestBarrierMigrateAddsAttemptToOldTable: a barrier table made before rows recorded their attempt
// gets the column from Migrate, keeps its rows, and works on.
func TestBarrierMigrateAddsAttemptToOldTable(t *testing.T) {
	t.Parallel()
	pool, dbURL := testenv.Pool(t)
	schema := searchPath(t, dbURL)
	ctx := context.Background()
	// The table as Migrate made it before the attempt column existed.
	_, err := pool.Exec(ctx, `CREATE TABLE barrier (
	gid        text        NOT NULL,
	step       text        NOT NULL,
	kind       text        NOT NULL,
	reply      jsonb       NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (gid, step, kind)
)`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO barrier (gid, step, kind, reply) VALUES ('old', 'debit', 'action', '{"outcome":"succeeded","output":{"entry":1}}')`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE effects (gid text, step text, kind text, note text)`)
	require.NoError(t, err)

	w, err := New(Config{Name: "p", Transport: noTransport{}, DB: pool, Schema: schema})
	require.NoError(t, err)
	require.NoError(t, w.Migrate(ctx))
	require.NoError(t, w.Migrate(ctx), "Migrate is idempotent on a migrated table")

	var dataType, nullable, def string
	require.NoError(t, pool.QueryRow(ctx, `SELECT data_type, is_nullable, coalesce(column_default, '') FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = 'barrier' AND column_name = 'attempt'`, schema).Scan(&dataType, &nullable, &def))
	require.Equal(t, []string{"integer", "NO", "0"}, []string{dataType, nullable, def})
	e := &barrierEnv{pool: pool, schema: schema, b: w.barrier}
	require.Equal(t, 1, e.barrierRows(t, protocol.KindAction), "the old row is kept")
	outcome, _, attempt := e.actionRow(t, "old")
	require.EqualValues(t, protocol.OutcomeSucceeded, outcome)
	require.Equal(t, math.MaxInt32, attempt, "rows from before the column hold an attempt no command carries, so none reopens them")

	// The old row still answers its duplicates and feeds its compensation.
	h := &recorder{out: `{"entry":2}`}
	dup := e.run(t, actionAttempt("old", 2), h.handle)
	require.True(t, dup.duplicate)
	require.JSONEq(t, `{"entry":1}`, string(dup.reply.Output))
	comp := &recorder{out: `{}`}
	c := e.run(t, compensation("old"), comp.handle)
	require.True(t, c.handlerRan)
	require.JSONEq(t, `{"entry":1}`, string(comp.last.Load().Output))

	// New rows record their attempt.
	r := e.run(t, actionAttempt("new", 3), h.handle)
	require.EqualValues(t, protocol.OutcomeSucceeded, r.reply.Outcome)
	_, _, attempt = e.actionRow(t, "new")
	require.Equal(t, 3, attempt)
	require.EqualValues(t, 1, h.calls.Load())
}
