package saga_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
)

func TestChainCompletes(t *testing.T) {
	t.Parallel()
	a, b, c := step("a"), step("b"), step("c")
	a.Timeout, b.Timeout, c.Timeout = time.Second, 2*time.Second, 3*time.Second
	x, cmds := start(t, normalize(t, a, b, c), time.Time{})

	require.Equal(t, []saga.Command{act(0, 1)}, cmds)
	require.Equal(t, []saga.StepStatus{running, pending, pending}, x.statuses())
	require.Equal(t, t0.Add(time.Second), x.m.WakeAt(x.s), "WakeAt is the timeout of the attempt in flight")
	require.Equal(t, t0, x.s.Steps[0].StartedAt)

	x.wait(100 * time.Millisecond)
	require.Equal(t, []saga.Command{act(1, 1)}, x.ok(0))
	require.Equal(t, x.now.Add(2*time.Second), x.m.WakeAt(x.s))
	require.Equal(t, x.now, x.s.Steps[0].FinishedAt)
	require.JSONEq(t, `{"step":0}`, string(x.s.Steps[0].Output))

	x.wait(200 * time.Millisecond)
	require.Equal(t, []saga.Command{act(2, 1)}, x.ok(1))
	require.Equal(t, x.now.Add(3*time.Second), x.m.WakeAt(x.s))

	x.wait(300 * time.Millisecond)
	cmds = x.ok(2)
	require.Empty(t, cmds)
	require.Equal(t, saga.StatusCompleted, x.s.Status)
	require.Equal(t, []saga.StepStatus{succeeded, succeeded, succeeded}, x.statuses())
	require.True(t, x.m.WakeAt(x.s).IsZero(), "a terminal saga has no timer")
	for i, st := range x.s.Steps {
		require.Equal(t, 1, st.Attempt, "step %d", i)
		require.Zero(t, st.CompAttempt, "step %d", i)
		require.True(t, st.TimerAt.IsZero(), "step %d", i)
		require.Empty(t, st.LastError, "step %d", i)
	}
	require.Equal(t, []string{
		"saga:->RUNNING",
		"step0:PENDING->RUNNING",
		"step0:RUNNING->SUCCEEDED", "step1:PENDING->RUNNING",
		"step1:RUNNING->SUCCEEDED", "step2:PENDING->RUNNING",
		"step2:RUNNING->SUCCEEDED", "saga:RUNNING->COMPLETED",
	}, transitions(x.s.History))
}

// TestBusinessFailureCompensatesInReverse fails each step of a chain in turn: the steps before it
// are compensated last to first, the ones after it are skipped.
func TestBusinessFailureCompensatesInReverse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fails int
		// comps is the expected compensation command after each compensation succeeds.
		comps [][]saga.Command
		final []saga.StepStatus
	}{
		{"first", 0, [][]saga.Command{nil}, []saga.StepStatus{failed, skipped, skipped}},
		{"second", 1, [][]saga.Command{{comp(0, 1)}, nil}, []saga.StepStatus{compensated, failed, skipped}},
		{"third", 2, [][]saga.Command{{comp(1, 1)}, {comp(0, 1)}, nil}, []saga.StepStatus{compensated, compensated, failed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x, _ := start(t, normalize(t, step("a"), step("b"), step("c")), time.Time{})
			for i := 0; i < tc.fails; i++ {
				x.ok(i)
			}
			cmds := x.fail(tc.fails)
			require.Contains(t, x.s.Reason, `step "`+x.m.Definition().Steps[tc.fails].Name+`" failed: boom`)
			for k, want := range tc.comps {
				require.Equal(t, want, cmds, "compensation %d", k)
				if want == nil {
					break
				}
				require.Equal(t, saga.StatusCompensating, x.s.Status)
				require.Equal(t, x.now.Add(saga.DefaultTimeout), x.m.WakeAt(x.s))
				cmds = x.compOK(want[0].StepIndex)
			}
			require.Equal(t, saga.StatusCompensated, x.s.Status)
			require.Equal(t, tc.final, x.statuses())
			require.Equal(t, "boom", x.s.Steps[tc.fails].LastError)
		})
	}
}

// TestParallelSteps runs a -> {b, c} -> d -> e: b and c are dispatched together, and when e fails
// d is undone before b and c, and both of them before a.
func TestParallelSteps(t *testing.T) {
	t.Parallel()
	def := normalize(t, step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"), step("e", "d"))
	x, cmds := start(t, def, time.Time{})
	require.Equal(t, []saga.Command{act(0, 1)}, cmds)
	require.ElementsMatch(t, []saga.Command{act(1, 1), act(2, 1)}, x.ok(0))
	require.Empty(t, x.ok(2), "d waits for b")
	require.Equal(t, []saga.Command{act(3, 1)}, x.ok(1))
	require.Equal(t, []saga.Command{act(4, 1)}, x.ok(3))

	require.Equal(t, []saga.Command{comp(3, 1)}, x.fail(4), "only d: b, c and a still have an undone dependent")
	require.ElementsMatch(t, []saga.Command{comp(1, 1), comp(2, 1)}, x.compOK(3))
	require.Empty(t, x.compOK(2), "a waits for b")
	require.Equal(t, []saga.StepStatus{succeeded, compensating, compensated, compensated, failed}, x.statuses())
	require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
	require.Empty(t, x.compOK(0))
	require.Equal(t, saga.StatusCompensated, x.s.Status)
}

func TestStepWithoutCompensation(t *testing.T) {
	t.Parallel()
	t.Run("middle", func(t *testing.T) {
		t.Parallel()
		b := step("b")
		b.Compensation = ""
		x, _ := start(t, normalize(t, step("a"), b, step("c")), time.Time{})
		x.ok(0)
		x.ok(1)
		require.Equal(t, []saga.Command{comp(0, 1)}, x.fail(2), "b is undone at once, so a is compensated in the same event")
		require.Equal(t, compensated, x.s.Steps[1].Status)
		require.Zero(t, x.s.Steps[1].CompAttempt, "no command for b")
		require.Contains(t, transitions(x.s.History), "step1:SUCCEEDED->COMPENSATED")
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
	t.Run("none", func(t *testing.T) {
		t.Parallel()
		steps := []saga.StepDefinition{step("a"), step("b"), step("c")}
		for i := range steps {
			steps[i].Compensation = ""
		}
		x, _ := start(t, normalize(t, steps...), time.Time{})
		x.ok(0)
		x.ok(1)
		require.Empty(t, x.fail(2))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
		require.Equal(t, []saga.StepStatus{compensated, compensated, failed}, x.statuses())
	})
}

// pivotSaga is a, b, p (the pivot), d, e; retries of d and e wait 1s.
func pivotSaga(t *testing.T, maxAttempts int) *saga.Definition {
	p, d, e := step("p"), step("d"), step("e")
	p.Pivot = true
	for _, s := range []*saga.StepDefinition{&d, &e} {
		s.Retry = saga.RetryPolicy{MaxAttempts: maxAttempts, InitialBackoff: time.Second, MaxBackoff: time.Second}
	}
	return normalize(t, step("a"), step("b"), p, d, e)
}

func TestPivot(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fails int
		// comps are the compensations expected, in order; nil means the saga goes forward.
		comps []int
	}{
		{"before the pivot, first step", 0, []int{}},
		{"before the pivot", 1, []int{0}},
		{"at the pivot", 2, []int{1, 0}},
		{"after the pivot", 3, nil},
		{"last step after the pivot", 4, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x, _ := start(t, pivotSaga(t, 3), time.Time{})
			for i := 0; i < tc.fails; i++ {
				x.ok(i)
			}
			cmds := x.fail(tc.fails)
			if tc.comps == nil {
				require.Empty(t, cmds)
				require.Equal(t, saga.StatusRunning, x.s.Status, "no compensation after the pivot")
				st := x.s.Steps[tc.fails]
				require.Equal(t, running, st.Status)
				require.True(t, st.Waiting)
				require.Contains(t, st.LastError, "after the pivot")
				require.Equal(t, st.TimerAt, x.m.WakeAt(x.s))
				require.Equal(t, []saga.Command{act(tc.fails, 2)}, x.wake())
				for i := tc.fails; i < 5; i++ {
					x.ok(i)
				}
				require.Equal(t, saga.StatusCompleted, x.s.Status)
				return
			}
			for _, i := range tc.comps {
				require.Equal(t, []saga.Command{comp(i, 1)}, cmds)
				cmds = x.compOK(i)
			}
			require.Empty(t, cmds)
			require.Equal(t, saga.StatusCompensated, x.s.Status)
		})
	}
}

// TestForwardRecoveryExhausted parks the saga in FAILED when a step after the pivot runs out of
// attempts; RetrySaga gives it a fresh budget.
func TestForwardRecoveryExhausted(t *testing.T) {
	t.Parallel()
	x, _ := start(t, pivotSaga(t, 2), time.Time{})
	for i := 0; i < 3; i++ {
		x.ok(i)
	}
	require.Empty(t, x.fail(3))
	require.Equal(t, []saga.Command{act(3, 2)}, x.wake())
	require.Empty(t, x.retry(3))

	require.Equal(t, saga.StatusFailed, x.s.Status)
	require.Equal(t, saga.StatusRunning, x.s.ResumeStatus)
	require.Contains(t, x.s.Reason, `step "d" exhausted 2 attempts after the pivot: boom`)
	st := x.s.Steps[3]
	require.Equal(t, running, st.Status)
	require.True(t, st.Waiting)
	require.True(t, st.TimerAt.IsZero(), "parked for the operator")
	require.True(t, x.m.WakeAt(x.s).IsZero())

	x.wait(time.Hour)
	_, changed := x.tick()
	require.False(t, changed, "a FAILED saga waits for the operator")
	_, changed = x.apply(protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 3, Kind: protocol.KindAction, Attempt: 2}, Outcome: protocol.OutcomeFailed})
	require.False(t, changed, "no attempt is in flight: a late failure changes nothing")
	_, err := x.abort("")
	require.ErrorIs(t, err, saga.ErrWrongState)

	cmds, err := x.resume()
	require.NoError(t, err)
	require.Equal(t, []saga.Command{act(3, 3)}, cmds)
	require.Equal(t, saga.StatusRunning, x.s.Status)
	require.Empty(t, x.s.ResumeStatus)
	require.Equal(t, 2, x.s.Steps[3].AttemptBase)
	require.Equal(t, x.now.Add(saga.DefaultTimeout), x.m.WakeAt(x.s))

	require.Empty(t, x.fail(3), "a fresh budget of 2: the first failure after RetrySaga is retried")
	require.Equal(t, saga.StatusRunning, x.s.Status)
	require.Equal(t, []saga.Command{act(3, 4)}, x.wake())
	require.Equal(t, []saga.Command{act(4, 1)}, x.ok(3))
	require.Empty(t, x.ok(4))
	require.Equal(t, saga.StatusCompleted, x.s.Status)
	require.Equal(t, []string{"saga:->RUNNING", "saga:RUNNING->FAILED", "saga:FAILED->RUNNING", "saga:RUNNING->COMPLETED"},
		sagaTransitions(x.s.History))
}

func sagaTransitions(h []saga.Transition) []string {
	var out []string
	for _, s := range transitions(h) {
		if s[:5] == "saga:" {
			out = append(out, s)
		}
	}
	return out
}

func TestRetryBackoff(t *testing.T) {
	t.Parallel()
	b := step("b")
	b.Timeout = time.Second
	b.Retry = saga.RetryPolicy{MaxAttempts: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Multiplier: 2}
	def := normalize(t, step("a"), b)
	run := func() []time.Duration {
		x, _ := start(t, def, time.Time{})
		x.ok(0)
		var waits []time.Duration
		for attempt := 1; attempt < 5; attempt++ {
			x.wait(10 * time.Millisecond)
			require.Empty(t, x.retry(1))
			st := x.s.Steps[1]
			require.True(t, st.Waiting)
			require.True(t, st.Uncertain, "a redelivery of the attempt that answered retry may still succeed")
			require.Equal(t, "boom", st.LastError)
			wait := st.TimerAt.Sub(x.now)
			want := min(100*time.Millisecond<<(attempt-1), 300*time.Millisecond)
			require.GreaterOrEqual(t, wait, want/2, "attempt %d", attempt)
			require.LessOrEqual(t, wait, want, "attempt %d", attempt)
			require.Equal(t, st.TimerAt, x.m.WakeAt(x.s))
			waits = append(waits, wait)

			x.now = st.TimerAt.Add(-time.Nanosecond)
			_, changed := x.tick()
			require.False(t, changed, "the backoff has not passed")
			require.Equal(t, []saga.Command{act(1, attempt+1)}, x.wake())
			require.False(t, x.s.Steps[1].Waiting)
			require.Equal(t, x.now.Add(time.Second), x.s.Steps[1].TimerAt, "the new attempt times out")
		}
		require.Equal(t, []saga.Command{comp(1, 1)}, x.retry(1),
			"the fifth attempt was the last: b is uncertain, so b is undone before a")
		require.Contains(t, x.s.Reason, `step "b" exhausted 5 attempts: boom`)
		require.Equal(t, []saga.StepStatus{succeeded, compensating}, x.statuses())
		require.Equal(t, 5, x.s.Steps[1].Attempt, "no sixth attempt")
		require.Contains(t, transitions(x.s.History), "step1:RUNNING->FAILED")
		require.Contains(t, transitions(x.s.History), "step1:FAILED->COMPENSATING")
		require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
		return waits
	}
	require.Equal(t, run(), run(), "jitter is deterministic for a saga, step and attempt")
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	p := saga.RetryPolicy{MaxAttempts: 20, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, Multiplier: 3}
	for next := 2; next <= 20; next++ {
		want := 100 * time.Millisecond
		for i := 2; i < next && want < p.MaxBackoff; i++ {
			want *= 3
		}
		want = min(want, p.MaxBackoff)
		seen := map[time.Duration]bool{}
		for k := 0; k < 50; k++ {
			key := fmt.Sprintf("saga-%d/1/a/%d", k, next)
			got := p.Backoff(next, key)
			require.GreaterOrEqual(t, got, want/2, "next %d", next)
			require.LessOrEqual(t, got, want, "next %d", next)
			require.Equal(t, got, p.Backoff(next, key), "deterministic")
			seen[got] = true
		}
		require.Greater(t, len(seen), 10, "jitter spreads the retries of different sagas")
	}
}

// TestTimeoutMakesStepUncertain: an attempt that timed out may have been applied, so a step that
// exhausts its attempts by timing out is compensated though it never reported success.
func TestTimeoutMakesStepUncertain(t *testing.T) {
	t.Parallel()
	b := step("b")
	b.Timeout = 2 * time.Second
	b.Retry = saga.RetryPolicy{MaxAttempts: 2, InitialBackoff: 500 * time.Millisecond, MaxBackoff: time.Second}
	x, _ := start(t, normalize(t, step("a"), b, step("c")), time.Time{})
	require.Equal(t, []saga.Command{act(1, 1)}, x.ok(0))
	require.Equal(t, x.now.Add(2*time.Second), x.m.WakeAt(x.s))

	require.Empty(t, x.wake())
	st := x.s.Steps[1]
	require.True(t, st.Uncertain)
	require.True(t, st.Waiting)
	require.Equal(t, "attempt 1 timed out after 2s", st.LastError)
	_, changed := x.apply(protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeRetry})
	require.False(t, changed, "a late failure of the timed-out attempt is ignored; the retry will learn the outcome")

	require.Equal(t, []saga.Command{act(1, 2)}, x.wake())
	require.Equal(t, []saga.Command{comp(1, 1)}, x.wake(), "the last attempt timed out: compensate b itself first")
	require.Equal(t, []saga.StepStatus{succeeded, compensating, skipped}, x.statuses())
	require.Equal(t, saga.StatusCompensating, x.s.Status)
	require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
	require.Empty(t, x.compOK(0))
	require.Equal(t, saga.StatusCompensated, x.s.Status)
	require.Contains(t, transitions(x.s.History), "step1:FAILED->COMPENSATING")
}

// TestRetryReplyMakesStepUncertain: a participant that publishes retry and dies before its ack has
// the same attempt redelivered, and that delivery may succeed. So a retry reply leaves the step
// uncertain like a timeout, and a step given up after one is compensated before its dependencies.
func TestRetryReplyMakesStepUncertain(t *testing.T) {
	t.Parallel()
	// chain is a, b, c where b may be attempted twice.
	chain := func(t *testing.T, bComp string) *sim {
		b := step("b")
		b.Compensation = bComp
		b.Retry = saga.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Second, MaxBackoff: time.Second}
		x, _ := start(t, normalize(t, step("a"), b, step("c")), time.Time{})
		require.Equal(t, []saga.Command{act(1, 1)}, x.ok(0))
		require.Empty(t, x.retry(1))
		st := x.s.Steps[1]
		require.True(t, st.Uncertain)
		require.True(t, st.Waiting)
		require.Equal(t, running, st.Status)
		require.Equal(t, saga.StatusRunning, x.s.Status)
		require.Equal(t, []saga.Command{act(1, 2)}, x.wake())
		return x
	}
	t.Run("exhausted: compensated before its dependencies", func(t *testing.T) {
		t.Parallel()
		x := chain(t, "undo-b")
		require.Equal(t, []saga.Command{comp(1, 1)}, x.retry(1), "b may have been applied: undo b first")
		require.Equal(t, []saga.StepStatus{succeeded, compensating, skipped}, x.statuses())
		require.Equal(t, saga.StatusCompensating, x.s.Status)
		require.Contains(t, x.s.Reason, `step "b" exhausted 2 attempts: boom`)
		require.True(t, x.s.Steps[1].Uncertain)
		require.Equal(t, 2, x.s.Steps[1].Attempt, "no third attempt")

		_, changed := x.apply(protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeSucceeded})
		require.False(t, changed, "a success that comes after b was given up changes nothing: its compensation covers it")

		require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
		require.Equal(t, []saga.StepStatus{compensated, compensated, skipped}, x.statuses())
		require.Subset(t, transitions(x.s.History), []string{"step1:RUNNING->FAILED", "step1:FAILED->COMPENSATING", "step1:COMPENSATING->COMPENSATED"})
	})
	t.Run("exhausted without a compensation", func(t *testing.T) {
		t.Parallel()
		x := chain(t, "")
		require.Equal(t, []saga.Command{comp(0, 1)}, x.retry(1), "b has nothing to send: it is undone at once, then a")
		require.Equal(t, []saga.StepStatus{compensating, compensated, skipped}, x.statuses())
		require.Zero(t, x.s.Steps[1].CompAttempt)
		require.Contains(t, transitions(x.s.History), "step1:FAILED->COMPENSATED")
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
	t.Run("then a business failure", func(t *testing.T) {
		t.Parallel()
		// Conservative: attempt 2's failure does not clear what attempt 1 left uncertain. The
		// participant's barrier makes this compensation a no-op and plants the refusal.
		x := chain(t, "undo-b")
		require.Equal(t, []saga.Command{comp(1, 1)}, x.fail(1))
		require.Equal(t, "boom", x.s.Steps[1].LastError)
		require.Equal(t, []saga.StepStatus{succeeded, compensating, skipped}, x.statuses())
		require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
	t.Run("the redelivered attempt succeeds", func(t *testing.T) {
		t.Parallel()
		b := step("b")
		b.Retry = saga.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Second, MaxBackoff: time.Second}
		x, _ := start(t, normalize(t, step("a"), b, step("c")), time.Time{})
		x.ok(0)
		require.Empty(t, x.retry(1))
		require.True(t, x.s.Steps[1].Waiting)
		cmds, changed := x.apply(protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"b":1}`)})
		require.True(t, changed, "attempt 1 answered retry, was redelivered and succeeded: that success is final")
		require.Equal(t, []saga.Command{act(2, 1)}, cmds)
		require.Equal(t, succeeded, x.s.Steps[1].Status)
		require.False(t, x.s.Steps[1].Waiting)
		require.Equal(t, 1, x.s.Steps[1].Attempt, "the retry was not sent")
		require.Empty(t, x.ok(2))
		require.Equal(t, saga.StatusCompleted, x.s.Status)
	})
	t.Run("a single step", func(t *testing.T) {
		t.Parallel()
		a := step("a")
		a.Retry = saga.RetryPolicy{MaxAttempts: 1}
		x, _ := start(t, normalize(t, a), time.Time{})
		require.Equal(t, []saga.Command{comp(0, 1)}, x.retry(0), "the only step answered retry: it is compensated, not left as done")
		require.Equal(t, saga.StatusCompensating, x.s.Status)
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
}

// TestForwardRecoveryAfterBusinessFailures: after the pivot a step that keeps failing is sent
// again with a new attempt each time (the participant's barrier lets a later attempt reopen a
// stored business failure), and its eventual success completes the saga without compensating.
func TestForwardRecoveryAfterBusinessFailures(t *testing.T) {
	t.Parallel()
	x, _ := start(t, pivotSaga(t, 4), time.Time{})
	for i := 0; i < 3; i++ {
		x.ok(i)
	}
	for attempt := 1; attempt <= 3; attempt++ {
		if attempt == 2 {
			require.Empty(t, x.retry(3), "a transient failure in between")
		} else {
			require.Empty(t, x.fail(3))
		}
		st := x.s.Steps[3]
		require.Equal(t, running, st.Status)
		require.True(t, st.Waiting)
		require.Equal(t, saga.StatusRunning, x.s.Status)
		require.Equal(t, []saga.Command{act(3, attempt+1)}, x.wake())
	}
	require.Equal(t, []saga.Command{act(4, 1)}, x.ok(3))
	require.Empty(t, x.s.Steps[3].LastError)
	require.Empty(t, x.ok(4))
	require.Equal(t, saga.StatusCompleted, x.s.Status)
	for i, st := range x.s.Steps {
		require.Zero(t, st.CompAttempt, "step %d: nothing is compensated past the pivot", i)
	}
	require.Equal(t, []string{"saga:->RUNNING", "saga:RUNNING->COMPLETED"}, sagaTransitions(x.s.History))
}

func TestIgnoredReplies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		r    protocol.Reply
	}{
		{"duplicate success", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeSucceeded}},
		{"duplicate as failure", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeFailed}},
		{"stale attempt failed", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeFailed}},
		{"stale attempt retry", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeRetry}},
		{"future attempt", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: protocol.KindAction, Attempt: 3}, Outcome: protocol.OutcomeSucceeded}},
		{"zero attempt", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: protocol.KindAction, Attempt: 0}, Outcome: protocol.OutcomeFailed}},
		{"compensation of a running step", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: protocol.KindCompensate, Attempt: 0}, Outcome: protocol.OutcomeSucceeded}},
		{"compensation of a succeeded step", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 0, Kind: protocol.KindCompensate, Attempt: 0}, Outcome: protocol.OutcomeSucceeded}},
		{"pending step", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 2, Kind: protocol.KindAction, Attempt: 0}, Outcome: protocol.OutcomeSucceeded}},
		{"negative step", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: -1, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeSucceeded}},
		{"step out of range", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 3, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeSucceeded}},
		{"unknown kind", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: "bogus", Attempt: 2}, Outcome: protocol.OutcomeSucceeded}},
		{"unknown outcome", protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 1, Kind: protocol.KindAction, Attempt: 2}, Outcome: "maybe"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x, _ := start(t, normalize(t, step("a"), step("b"), step("c")), time.Time{})
			x.ok(0)
			x.wake()                                              // b's first attempt times out
			require.Equal(t, []saga.Command{act(1, 2)}, x.wake()) // and is retried
			before := cloneState(x.s)
			x.wait(time.Second)
			cmds, changed := x.apply(tc.r)
			require.False(t, changed)
			require.Nil(t, cmds)
			require.Equal(t, before, x.s)
		})
	}
	t.Run("failure while waiting for a retry", func(t *testing.T) {
		t.Parallel()
		x, _ := start(t, normalize(t, step("a"), step("b")), time.Time{})
		x.retry(0)
		before := cloneState(x.s)
		_, changed := x.apply(protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeFailed})
		require.False(t, changed)
		require.Equal(t, before, x.s)
	})
	t.Run("late success of a timed-out attempt is taken", func(t *testing.T) {
		t.Parallel()
		x, _ := start(t, normalize(t, step("a"), step("b")), time.Time{})
		x.wake() // a's first attempt times out; a waits for its retry
		require.True(t, x.s.Steps[0].Waiting)
		cmds, changed := x.apply(protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}, Outcome: protocol.OutcomeSucceeded, Output: []byte(`1`)})
		require.True(t, changed, "the barrier applied the action once: its success is final")
		require.Equal(t, []saga.Command{act(1, 1)}, cmds)
		require.Equal(t, succeeded, x.s.Steps[0].Status)
		require.False(t, x.s.Steps[0].Waiting)
	})
	t.Run("late compensation success heals a FAILED saga", func(t *testing.T) {
		t.Parallel()
		b := step("b")
		b.CompensationRetry = saga.RetryPolicy{MaxAttempts: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}
		x, _ := start(t, normalize(t, b, step("c")), time.Time{})
		x.ok(0)
		require.Equal(t, []saga.Command{comp(0, 1)}, x.fail(1))
		x.wake() // the only compensation attempt times out: FAILED, parked
		require.Equal(t, saga.StatusFailed, x.s.Status)
		_, changed := x.apply(protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 0, Kind: protocol.KindCompensate, Attempt: 1}, Outcome: protocol.OutcomeSucceeded})
		require.True(t, changed)
		require.Equal(t, saga.StatusCompensated, x.s.Status)
		require.NoError(t, saga.CheckHistory(x.s.History, len(x.s.Steps)))
	})
	t.Run("duplicate compensation reply", func(t *testing.T) {
		t.Parallel()
		x, _ := start(t, normalize(t, step("a"), step("b")), time.Time{})
		x.ok(0)
		require.Equal(t, []saga.Command{comp(0, 1)}, x.fail(1))
		x.compOK(0)
		require.Equal(t, saga.StatusCompensated, x.s.Status)
		before := cloneState(x.s)
		_, changed := x.apply(protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: 0, Kind: protocol.KindCompensate, Attempt: 1}, Outcome: protocol.OutcomeSucceeded})
		require.False(t, changed)
		require.Equal(t, before, x.s)
	})
}

// compSaga is a, b, c where b's compensation may be attempted maxAttempts times, and c fails.
func compSaga(t *testing.T, maxAttempts int) *sim {
	b := step("b")
	b.CompensationRetry = saga.RetryPolicy{MaxAttempts: maxAttempts, InitialBackoff: 100 * time.Millisecond}
	x, _ := start(t, normalize(t, step("a"), b, step("c")), time.Time{})
	x.ok(0)
	x.ok(1)
	require.Equal(t, []saga.Command{comp(1, 1)}, x.fail(2))
	return x
}

func TestCompensationRetries(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("fails %d times", n), func(t *testing.T) {
			t.Parallel()
			x := compSaga(t, 5)
			for k := 1; k <= n; k++ {
				switch k % 3 {
				case 0:
					require.Empty(t, x.wake(), "attempt %d times out", k)
					require.Contains(t, x.s.Steps[1].LastError, "compensation attempt")
				case 1:
					require.Empty(t, x.must(1, protocol.KindCompensate, protocol.OutcomeFailed))
				default:
					require.Empty(t, x.must(1, protocol.KindCompensate, protocol.OutcomeRetry))
				}
				st := x.s.Steps[1]
				require.Equal(t, compensating, st.Status)
				require.True(t, st.Waiting)
				require.Equal(t, saga.StatusCompensating, x.s.Status)
				require.Equal(t, []saga.Command{comp(1, k+1)}, x.wake())
			}
			require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
			require.Empty(t, x.s.Steps[1].LastError)
			require.Empty(t, x.compOK(0))
			require.Equal(t, saga.StatusCompensated, x.s.Status)
		})
	}
}

func TestCompensationExhausted(t *testing.T) {
	t.Parallel()
	x := compSaga(t, 2)
	require.Empty(t, x.must(1, protocol.KindCompensate, protocol.OutcomeFailed))
	require.Equal(t, []saga.Command{comp(1, 2)}, x.wake())
	require.Empty(t, x.must(1, protocol.KindCompensate, protocol.OutcomeFailed))

	require.Equal(t, saga.StatusFailed, x.s.Status)
	require.Equal(t, saga.StatusCompensating, x.s.ResumeStatus)
	require.Equal(t, `compensation of step "b" exhausted 2 attempts: boom`, x.s.Reason)
	require.True(t, x.s.Steps[1].Waiting)
	require.True(t, x.m.WakeAt(x.s).IsZero())
	x.wait(24 * time.Hour)
	_, changed := x.tick()
	require.False(t, changed)
	_, err := x.abort("")
	require.ErrorIs(t, err, saga.ErrWrongState)

	cmds, err := x.resume()
	require.NoError(t, err)
	require.Equal(t, []saga.Command{comp(1, 3)}, cmds)
	require.Equal(t, saga.StatusCompensating, x.s.Status)
	require.Equal(t, 2, x.s.Steps[1].CompAttemptBase)
	require.Empty(t, x.must(1, protocol.KindCompensate, protocol.OutcomeRetry), "a fresh budget")
	require.Equal(t, []saga.Command{comp(1, 4)}, x.wake())
	require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
	require.Empty(t, x.compOK(0))
	require.Equal(t, saga.StatusCompensated, x.s.Status)
	require.Equal(t, []string{
		"saga:->RUNNING", "saga:RUNNING->COMPENSATING", "saga:COMPENSATING->FAILED",
		"saga:FAILED->COMPENSATING", "saga:COMPENSATING->COMPENSATED",
	}, sagaTransitions(x.s.History))
}

func TestDeadline(t *testing.T) {
	t.Parallel()
	long := func(s saga.StepDefinition) saga.StepDefinition {
		s.Timeout = 10 * time.Second
		return s
	}
	t.Run("before the pivot", func(t *testing.T) {
		t.Parallel()
		p := long(step("p"))
		p.Pivot = true
		deadline := t0.Add(5 * time.Second)
		x, _ := start(t, normalize(t, long(step("a")), long(step("b")), p, long(step("d"))), deadline)
		require.Equal(t, deadline, x.m.WakeAt(x.s), "the deadline comes before the timeout")
		x.wait(time.Second)
		require.Equal(t, []saga.Command{act(1, 1)}, x.ok(0))
		require.Empty(t, x.wake(), "b is in flight: a waits for it")
		require.Equal(t, deadline, x.now)
		require.Equal(t, saga.StatusCompensating, x.s.Status)
		require.Equal(t, "deadline exceeded at 2030-01-02T03:04:10Z", x.s.Reason)
		require.Equal(t, []saga.StepStatus{succeeded, running, skipped, skipped}, x.statuses())
		require.Equal(t, []saga.Command{comp(1, 1)}, x.ok(1), "b succeeded late: undo it")
		require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
	t.Run("after the pivot", func(t *testing.T) {
		t.Parallel()
		p := long(step("p"))
		p.Pivot = true
		deadline := t0.Add(5 * time.Second)
		x, _ := start(t, normalize(t, p, long(step("b"))), deadline)
		x.wait(time.Second)
		require.Equal(t, []saga.Command{act(1, 1)}, x.ok(0))
		require.Equal(t, x.now.Add(10*time.Second), x.m.WakeAt(x.s), "the deadline no longer counts")
		x.wait(5 * time.Second)
		_, changed := x.tick()
		require.False(t, changed)
		require.Empty(t, x.ok(1))
		require.Equal(t, saga.StatusCompleted, x.s.Status)
	})
	t.Run("already passed at start", func(t *testing.T) {
		t.Parallel()
		x, cmds := start(t, normalize(t, step("a")), t0.Add(-time.Second))
		require.Equal(t, []saga.Command{act(0, 1)}, cmds)
		require.Equal(t, t0.Add(-time.Second), x.m.WakeAt(x.s))
		cmds, changed := x.tick()
		require.True(t, changed)
		require.Empty(t, cmds)
		require.Equal(t, saga.StatusCompensating, x.s.Status)
	})
}

func TestAbort(t *testing.T) {
	t.Parallel()
	t.Run("step in flight", func(t *testing.T) {
		t.Parallel()
		x, _ := start(t, normalize(t, step("a"), step("b"), step("c")), time.Time{})
		cmds, err := x.abort("")
		require.NoError(t, err)
		require.Empty(t, cmds, "a is in flight: wait for its reply")
		require.Equal(t, "aborted by operator", x.s.Reason)
		require.Equal(t, []saga.StepStatus{running, skipped, skipped}, x.statuses())
		require.Equal(t, []saga.Command{comp(0, 1)}, x.ok(0))
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
	t.Run("step waiting for a retry", func(t *testing.T) {
		t.Parallel()
		x, _ := start(t, normalize(t, step("a"), step("b")), time.Time{})
		x.ok(0)
		x.retry(1)
		cmds, err := x.abort("customer cancelled")
		require.NoError(t, err)
		require.Equal(t, []saga.Command{comp(1, 1)}, cmds,
			"the retry is cancelled, but the attempt that answered retry may be redelivered and succeed: b is undone before a")
		require.Equal(t, "customer cancelled", x.s.Reason)
		require.Equal(t, 1, x.s.Steps[1].Attempt, "the retry is not sent")
		require.Equal(t, "cancelled: the saga is compensating", x.s.Steps[1].LastError)
		require.Equal(t, []saga.StepStatus{succeeded, compensating}, x.statuses())
		require.Subset(t, transitions(x.s.History), []string{"step1:RUNNING->FAILED", "step1:FAILED->COMPENSATING"})
		require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
	t.Run("past the pivot", func(t *testing.T) {
		t.Parallel()
		p := step("p")
		p.Pivot = true
		x, _ := start(t, normalize(t, step("a"), p, step("c")), time.Time{})
		x.ok(0)
		_, err := x.abort("")
		require.ErrorIs(t, err, saga.ErrWrongState, "the pivot is in flight and may succeed")

		x, _ = start(t, normalize(t, step("a"), p, step("c")), time.Time{})
		x.ok(0)
		x.ok(1)
		before := cloneState(x.s)
		_, err = x.abort("")
		require.ErrorIs(t, err, saga.ErrPastPivot)
		require.Contains(t, err.Error(), `step "p" succeeded`)
		require.Equal(t, before, x.s)
	})
}

// states builds sagas in each status: a, b with b's action and compensation allowed one attempt.
func states(t *testing.T) map[saga.Status]*sim {
	b := step("b")
	b.Retry.MaxAttempts = 1
	b.CompensationRetry.MaxAttempts = 1
	a := step("a")
	a.CompensationRetry.MaxAttempts = 1
	def := normalize(t, a, b)
	out := map[saga.Status]*sim{}

	x, _ := start(t, def, time.Time{})
	out[saga.StatusRunning] = x

	x, _ = start(t, def, time.Time{})
	x.ok(0)
	x.ok(1)
	out[saga.StatusCompleted] = x

	x, _ = start(t, def, time.Time{})
	x.ok(0)
	x.fail(1)
	out[saga.StatusCompensating] = x

	x, _ = start(t, def, time.Time{})
	x.ok(0)
	x.fail(1)
	x.compOK(0)
	out[saga.StatusCompensated] = x

	x, _ = start(t, def, time.Time{})
	x.ok(0)
	x.fail(1)
	x.must(0, protocol.KindCompensate, protocol.OutcomeFailed)
	out[saga.StatusFailed] = x

	for st, x := range out {
		require.Equal(t, st, x.s.Status)
	}
	return out
}

func TestOperatorActionsInWrongState(t *testing.T) {
	t.Parallel()
	for status, x := range states(t) {
		before := cloneState(x.s)
		if status != saga.StatusRunning {
			_, err := x.abort("")
			require.ErrorIs(t, err, saga.ErrWrongState, "abort %s", status)
			require.Contains(t, err.Error(), "saga is "+string(status))
		}
		if status != saga.StatusFailed {
			_, err := x.resume()
			require.ErrorIs(t, err, saga.ErrWrongState, "retry %s", status)
			require.Contains(t, err.Error(), "only a FAILED saga can be retried")
		}
		require.Equal(t, before, x.s, "a refused operator action changes nothing (%s)", status)
	}
}

func TestTerminalSagasIgnoreEverything(t *testing.T) {
	t.Parallel()
	for status, x := range states(t) {
		if !status.Terminal() {
			continue
		}
		before := cloneState(x.s)
		require.True(t, x.m.WakeAt(x.s).IsZero(), "%s", status)
		for i := range x.s.Steps {
			for _, kind := range []protocol.Kind{protocol.KindAction, protocol.KindCompensate} {
				for attempt := 0; attempt < 3; attempt++ {
					for _, outcome := range []protocol.Outcome{protocol.OutcomeSucceeded, protocol.OutcomeFailed, protocol.OutcomeRetry} {
						cmds, changed := x.apply(protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: i, Kind: kind, Attempt: attempt}, Outcome: outcome})
						require.False(t, changed)
						require.Nil(t, cmds)
					}
				}
			}
		}
		x.wait(1000 * time.Hour)
		cmds, changed := x.tick()
		require.False(t, changed)
		require.Nil(t, cmds)
		require.Equal(t, before, x.s, "%s", status)
	}
	require.False(t, saga.StatusFailed.Terminal(), "RetrySaga resumes a FAILED saga")
	require.False(t, saga.StatusRunning.Terminal())
	require.False(t, saga.StatusCompensating.Terminal())
}

// TestRepliesWhileCompensating: a -> {b, c}; b fails while c is in flight, and a's compensation
// waits for c to settle.
func TestRepliesWhileCompensating(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// settle answers c and returns the commands.
		settle func(x *sim) []saga.Command
		want   []saga.Command
		c      saga.StepStatus
	}{
		{"succeeded", func(x *sim) []saga.Command { return x.ok(2) }, []saga.Command{comp(2, 1)}, compensating},
		{"failed", func(x *sim) []saga.Command { return x.fail(2) }, []saga.Command{comp(0, 1)}, failed},
		// The retry is not sent, but the attempt that answered retry may be redelivered and
		// succeed: c is FAILED and uncertain, so it is compensated like a timed-out one.
		{"retry is cancelled: uncertain", func(x *sim) []saga.Command { return x.retry(2) }, []saga.Command{comp(2, 1)}, compensating},
		{"timed out: uncertain", func(x *sim) []saga.Command { return x.wake() }, []saga.Command{comp(2, 1)}, compensating},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x, _ := start(t, normalize(t, step("a"), step("b", "a"), step("c", "a")), time.Time{})
			x.ok(0)
			x.wait(time.Second)
			require.Empty(t, x.fail(1), "a waits for c")
			require.Equal(t, saga.StatusCompensating, x.s.Status)
			require.Equal(t, running, x.s.Steps[2].Status)
			require.Equal(t, tc.want, tc.settle(x))
			require.Equal(t, tc.c, x.s.Steps[2].Status)
			require.Equal(t, 1, x.s.Steps[2].Attempt, "no action is sent while compensating")
			if tc.c == compensating {
				require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(2))
			}
			require.Empty(t, x.compOK(0))
			require.Equal(t, saga.StatusCompensated, x.s.Status)
		})
	}
}

// TestRetryDoesNotResendCancelledActions: a saga that failed while compensating resumes
// compensating; an action retry that was pending when it failed is cancelled, not sent. Whether the
// step was left waiting by a retry reply or by a timeout, its attempt may still be applied, so it
// is compensated; a step whose attempt failed is certainly not applied and needs nothing.
func TestRetryDoesNotResendCancelledActions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// settle answers b's action, in flight while the saga is FAILED.
		settle func(x *sim)
		// waiting: b is parked for a retry when RetrySaga comes.
		waiting bool
		want    []saga.Command
		b       saga.StepStatus
	}{
		{"retry reply: uncertain", func(x *sim) { require.Empty(t, x.retry(1)) }, true, []saga.Command{comp(0, 2), comp(1, 1)}, compensating},
		{"timeout: uncertain", func(x *sim) { require.Empty(t, x.wake()) }, true, []saga.Command{comp(0, 2), comp(1, 1)}, compensating},
		{"business failure: nothing to undo", func(x *sim) { require.Empty(t, x.fail(1)) }, false, []saga.Command{comp(0, 2)}, failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// a and b are roots; c depends on a.
			a := step("a")
			a.CompensationRetry.MaxAttempts = 1
			b := step("b")
			b.Timeout = time.Minute
			x, cmds := start(t, normalize(t, a, b, step("c", "a")), time.Time{})
			require.Equal(t, []saga.Command{act(0, 1), act(1, 1)}, cmds)
			require.Equal(t, []saga.Command{act(2, 1)}, x.ok(0))
			require.Equal(t, []saga.Command{comp(0, 1)}, x.fail(2))
			require.Empty(t, x.must(0, protocol.KindCompensate, protocol.OutcomeFailed))
			require.Equal(t, saga.StatusFailed, x.s.Status)
			require.Equal(t, saga.StatusCompensating, x.s.ResumeStatus)

			tc.settle(x)
			if tc.waiting {
				require.Equal(t, running, x.s.Steps[1].Status)
				require.True(t, x.s.Steps[1].Waiting)
				require.True(t, x.s.Steps[1].Uncertain)
			} else {
				require.Equal(t, failed, x.s.Steps[1].Status)
				require.False(t, x.s.Steps[1].Uncertain)
			}
			cmds, err := x.resume()
			require.NoError(t, err)
			require.ElementsMatch(t, tc.want, cmds, "no action is sent to a compensating saga")
			require.Equal(t, 1, x.s.Steps[1].Attempt)
			require.Equal(t, tc.b, x.s.Steps[1].Status)
			for _, c := range cmds {
				x.compOK(c.StepIndex)
			}
			require.Equal(t, saga.StatusCompensated, x.s.Status)
		})
	}
}

// TestTickSendsNoActionOnceCompensating: timers that fall due together with the event that makes
// the saga compensate do not send action retries. The step whose retry is cancelled had answered
// retry, so it is uncertain and is compensated, before its dependencies.
func TestTickSendsNoActionOnceCompensating(t *testing.T) {
	t.Parallel()
	noActions := func(t *testing.T, cmds []saga.Command) {
		t.Helper()
		for _, c := range cmds {
			require.EqualValues(t, protocol.KindCompensate, c.Kind, "%+v sent to a compensating saga", c)
		}
	}
	t.Run("a sibling exhausts its attempts", func(t *testing.T) {
		t.Parallel()
		b, c := step("b", "a"), step("c", "a")
		b.Timeout = time.Second
		b.Retry.MaxAttempts = 1
		c.Retry.InitialBackoff = time.Millisecond
		x, _ := start(t, normalize(t, step("a"), b, c), time.Time{})
		x.ok(0)
		require.Empty(t, x.retry(2))
		x.wait(time.Second) // b times out and c's backoff has passed
		cmds, changed := x.tick()
		require.True(t, changed)
		noActions(t, cmds)
		require.ElementsMatch(t, []saga.Command{comp(1, 1), comp(2, 1)}, cmds,
			"b and c may have been applied (b timed out, c answered retry); c's retry is cancelled; a waits for both")
		require.Equal(t, 1, x.s.Steps[2].Attempt, "c's retry is not sent")
		require.Equal(t, saga.StatusCompensating, x.s.Status)
		require.Equal(t, []saga.StepStatus{succeeded, compensating, compensating}, x.statuses())
		require.Empty(t, x.compOK(1), "a waits for c")
		require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(2))
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
	t.Run("a later step exhausts its attempts", func(t *testing.T) {
		t.Parallel()
		a, b := step("a"), step("b")
		a.Retry.InitialBackoff = time.Millisecond
		b.Timeout = time.Second
		b.Retry.MaxAttempts = 1
		x, cmds := start(t, normalize(t, a, b, step("c", "a", "b")), time.Time{})
		require.Equal(t, []saga.Command{act(0, 1), act(1, 1)}, cmds)
		require.Empty(t, x.retry(0))
		x.wait(time.Second) // b times out and a's backoff has passed
		cmds, changed := x.tick()
		require.True(t, changed)
		noActions(t, cmds)
		require.ElementsMatch(t, []saga.Command{comp(0, 1), comp(1, 1)}, cmds, "a's retry is cancelled whatever the step order")
		require.Equal(t, 1, x.s.Steps[0].Attempt, "a's retry is not sent")
		require.Equal(t, []saga.StepStatus{compensating, compensating, skipped}, x.statuses())
		x.compOK(0)
		x.compOK(1)
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
	t.Run("the deadline passes", func(t *testing.T) {
		t.Parallel()
		x, _ := start(t, normalize(t, step("a"), step("b")), t0.Add(time.Second))
		x.ok(0)
		require.Empty(t, x.retry(1))
		x.wait(time.Hour)
		cmds, changed := x.tick()
		require.True(t, changed)
		require.Equal(t, []saga.Command{comp(1, 1)}, cmds, "b's retry is cancelled, and b is undone before a")
		require.Equal(t, 1, x.s.Steps[1].Attempt, "b's retry is not sent")
		require.Equal(t, []saga.StepStatus{succeeded, compensating}, x.statuses())
		require.Equal(t, []saga.Command{comp(0, 1)}, x.compOK(1))
		require.Empty(t, x.compOK(0))
		require.Equal(t, saga.StatusCompensated, x.s.Status)
	})
}

// TestStateSurvivesJSON stores the state as the engine does (ID and Status in their own columns)
// and carries on from the copy.
func TestStateSurvivesJSON(t *testing.T) {
	t.Parallel()
	x, _ := start(t, normalize(t, step("a"), step("b"), step("c")), t0.Add(time.Hour))
	x.ok(0)
	x.retry(1)
	b, err := json.Marshal(x.s)
	require.NoError(t, err)
	var got saga.State
	require.NoError(t, json.Unmarshal(b, &got))
	got.ID, got.Status, got.Input = x.s.ID, x.s.Status, x.s.Input
	require.Equal(t, x.s, &got)

	y := &sim{t: t, m: x.m, s: &got, now: x.now}
	require.Equal(t, x.wake(), y.wake())
	require.Equal(t, x.ok(1), y.ok(1))
	require.Equal(t, x.s, y.s)
}
