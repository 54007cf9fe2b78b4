package saga_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/saga"
)

func sg(from, to saga.Status) saga.Transition {
	return saga.Transition{Step: -1, From: string(from), To: string(to)}
}

func st(i int, from, to saga.StepStatus) saga.Transition {
	return saga.Transition{Step: i, From: string(from), To: string(to)}
}

// timed gives the transitions one second apart from t0.
func timed(h ...saga.Transition) []saga.Transition {
	for i := range h {
		h[i].At = t0.Add(time.Duration(i) * time.Second)
	}
	return h
}

var (
	sRunning      = saga.StatusRunning
	sCompleted    = saga.StatusCompleted
	sCompensating = saga.StatusCompensating
	sCompensated  = saga.StatusCompensated
	sFailed       = saga.StatusFailed
)

func TestCheckHistoryAcceptsLegalPaths(t *testing.T) {
	t.Parallel()
	for name, h := range map[string][]saga.Transition{
		"completed": timed(sg("", sRunning),
			st(0, pending, running), st(0, running, succeeded),
			st(1, pending, running), st(1, running, succeeded), sg(sRunning, sCompleted)),
		"compensated, with an uncertain failure and a step without compensation": timed(sg("", sRunning),
			st(0, pending, running), st(0, running, succeeded),
			st(1, pending, running), st(1, running, failed), sg(sRunning, sCompensating),
			st(1, failed, compensating), st(1, compensating, compensated),
			st(0, succeeded, compensated), sg(sCompensating, sCompensated)),
		"skipped and failed": timed(sg("", sRunning), st(0, pending, running), st(0, running, failed),
			sg(sRunning, sCompensating), st(1, pending, skipped), sg(sCompensating, sCompensated)),
		"failed forward, retried": timed(sg("", sRunning), st(0, pending, running), sg(sRunning, sFailed),
			sg(sFailed, sRunning), st(0, running, succeeded), sg(sRunning, sCompleted)),
		"failed compensating, a compensation and an action reply while FAILED": timed(sg("", sRunning),
			st(0, pending, running), st(1, pending, running), st(0, running, succeeded), st(2, pending, running),
			st(2, running, failed), sg(sRunning, sCompensating), st(0, succeeded, compensating),
			sg(sCompensating, sFailed), st(1, running, succeeded), sg(sFailed, sCompensating),
			st(1, succeeded, compensating), st(1, compensating, compensated), sg(sCompensating, sFailed),
			st(0, compensating, compensated), sg(sFailed, sCompensating), sg(sCompensating, sCompensated)),
		"equal timestamps": {sg("", sRunning), st(0, pending, running)},
		"still running":    timed(sg("", sRunning)),
	} {
		nsteps := 1
		for _, tr := range h {
			nsteps = max(nsteps, tr.Step+1)
		}
		require.NoError(t, saga.CheckHistory(h, nsteps), name)
	}
}

func TestCheckHistoryRejects(t *testing.T) {
	t.Parallel()
	start := []saga.Transition{sg("", sRunning), st(0, pending, running)}
	for _, tc := range []struct {
		name   string
		h      []saga.Transition
		nsteps int
		index  int
		step   int
		reason string
	}{
		{"empty", nil, 2, 0, -1, "the history is empty"},
		{"no steps", nil, 0, 0, -1, "at least one step, not 0"},
		{"starts with a step", timed(st(0, pending, running)), 2, 0, 0, "before the saga started"},
		{"starts elsewhere", timed(sg(sRunning, sCompleted)), 2, 0, -1, `from is not the saga's state ""`},
		{"starts twice", timed(sg("", sRunning), sg("", sRunning)), 2, 1, -1, `from is not the saga's state "RUNNING"`},
		{"illegal saga transition", timed(sg("", sRunning), sg(sRunning, sCompensated)), 2, 1, -1, "not a legal saga transition"},
		{"unknown saga state", timed(sg("", sRunning), sg(sRunning, "PAUSED")), 2, 1, -1, "not a legal saga transition"},
		{"saga from mismatch", timed(sg("", sRunning), sg(sCompensating, sCompensated)), 2, 1, -1, `from is not the saga's state "RUNNING"`},
		{"step skips running", timed(sg("", sRunning), st(0, pending, succeeded)), 2, 1, 0, "not a legal step transition"},
		{"step runs again", timed(append(slices.Clone(start), st(0, running, succeeded), st(0, succeeded, running))...), 2, 3, 0, "not a legal step transition"},
		{"step from mismatch", timed(append(slices.Clone(start), st(0, pending, running))...), 2, 2, 0, `from is not the step's state "RUNNING"`},
		{"step out of range", timed(sg("", sRunning), st(2, pending, running)), 2, 1, 2, "out of range: the saga has 2 steps"},
		{"negative step", timed(sg("", sRunning), st(-2, pending, running)), 2, 1, -2, "out of range"},
		{"time goes back", []saga.Transition{{Step: -1, To: "RUNNING", At: t0}, {Step: 0, From: "PENDING", To: "RUNNING", At: t0.Add(-time.Nanosecond)}}, 2, 1, 0, "is before the previous transition's"},
		{"after COMPLETED", timed(sg("", sRunning), st(0, pending, running), st(0, running, succeeded),
			sg(sRunning, sCompleted), sg(sCompleted, sCompensating)), 1, 4, -1, "already COMPLETED, which is terminal"},
		{"step after COMPENSATED", timed(sg("", sRunning), st(0, pending, running), st(0, running, failed),
			sg(sRunning, sCompensating), sg(sCompensating, sCompensated), st(0, failed, compensating)), 1, 5, 0, "already COMPENSATED"},
		{"start while compensating", timed(sg("", sRunning), sg(sRunning, sCompensating), st(0, pending, running)), 2, 2, 0, "not legal while the saga is COMPENSATING"},
		{"compensate while running", timed(append(slices.Clone(start), st(0, running, succeeded), st(0, succeeded, compensating))...), 2, 3, 0, "not legal while the saga is RUNNING"},
		{"skip while running", timed(sg("", sRunning), st(1, pending, skipped)), 2, 1, 1, "not legal while the saga is RUNNING"},
		{"start while FAILED", timed(sg("", sRunning), st(0, pending, running), sg(sRunning, sFailed), st(1, pending, running)), 2, 3, 1, "not legal while the saga is FAILED"},
		{"completed with a step running", timed(append(slices.Clone(start), sg(sRunning, sCompleted))...), 1, 2, -1, "step 0 is RUNNING; a saga completes only when every step SUCCEEDED"},
		{"completed with a step pending", timed(append(slices.Clone(start), st(0, running, succeeded), sg(sRunning, sCompleted))...), 2, 3, -1, "step 1 is PENDING"},
		{"compensated holding an effect", timed(append(slices.Clone(start), st(0, running, succeeded), sg(sRunning, sCompensating), sg(sCompensating, sCompensated))...), 1, 4, -1, "step 0 is SUCCEEDED; a saga is compensated only when"},
		{"retry to the other state", timed(sg("", sRunning), sg(sRunning, sFailed), sg(sFailed, sCompensating)), 1, 2, -1, "the saga failed while RUNNING, so RetrySaga resumes it to RUNNING"},
		{"retry forward after compensation failed", timed(sg("", sRunning), sg(sRunning, sCompensating), sg(sCompensating, sFailed), sg(sFailed, sRunning)), 1, 3, -1, "resumes it to COMPENSATING"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := saga.CheckHistory(tc.h, tc.nsteps)
			require.Error(t, err)
			var herr *saga.HistoryError
			require.ErrorAs(t, err, &herr)
			require.Equal(t, tc.index, herr.Index)
			require.Equal(t, tc.step, herr.Step)
			require.Contains(t, herr.Reason, tc.reason)
			if tc.index < len(tc.h) {
				tr := tc.h[tc.index]
				require.Equal(t, tr.From, herr.From)
				require.Equal(t, tr.To, herr.To)
				require.Contains(t, err.Error(), "history[")
				require.Contains(t, err.Error(), `"`+tr.From+`" -> "`+tr.To+`"`)
			}
		})
	}
}

func TestHistoryErrorMessage(t *testing.T) {
	t.Parallel()
	err := saga.CheckHistory(timed(sg("", sRunning), st(1, pending, succeeded)), 2)
	require.EqualError(t, err, `history[1]: step 1 "PENDING" -> "SUCCEEDED": not a legal step transition`)
	err = saga.CheckHistory(timed(sg("", sRunning), sg(sRunning, sCompensated)), 2)
	require.EqualError(t, err, `history[1]: saga "RUNNING" -> "COMPENSATED": not a legal saga transition`)
}

func TestTransitionTables(t *testing.T) {
	t.Parallel()
	sagaStates := map[saga.Status]bool{}
	seen := map[[2]saga.Status]bool{}
	for _, e := range saga.Transitions() {
		require.False(t, seen[[2]saga.Status{e.From, e.To}], "duplicate %s -> %s", e.From, e.To)
		seen[[2]saga.Status{e.From, e.To}] = true
		require.NotEmpty(t, e.Cause)
		require.False(t, e.From.Terminal(), "%s is terminal but has a way out", e.From)
		sagaStates[e.From], sagaStates[e.To] = true, true
	}
	for _, s := range []saga.Status{"", sRunning, sCompleted, sCompensating, sCompensated, sFailed} {
		require.True(t, sagaStates[s], "saga state %q has no transition", s)
	}

	stepStates := map[saga.StepStatus]bool{}
	seenStep := map[[2]saga.StepStatus]bool{}
	for _, e := range saga.StepTransitions() {
		require.False(t, seenStep[[2]saga.StepStatus{e.From, e.To}], "duplicate %s -> %s", e.From, e.To)
		seenStep[[2]saga.StepStatus{e.From, e.To}] = true
		require.NotEmpty(t, e.Cause)
		require.NotEmpty(t, e.During)
		for _, s := range e.During {
			require.False(t, s.Terminal(), "a step cannot change while the saga is %s", s)
		}
		stepStates[e.From], stepStates[e.To] = true, true
	}
	for _, s := range []saga.StepStatus{pending, running, succeeded, failed, compensating, compensated, skipped} {
		require.True(t, stepStates[s], "step state %s has no transition", s)
	}

	// The tables are copies: changing one does not change what CheckHistory accepts.
	edges := saga.StepTransitions()
	edges[0].During[0] = saga.StatusCompensating
	edges[0].To = saga.StepCompensated
	require.NoError(t, saga.CheckHistory(timed(sg("", sRunning), st(0, pending, running)), 1))
	sagaEdges := saga.Transitions()
	sagaEdges[1].To = saga.StatusCompensated
	require.Equal(t, saga.StatusCompleted, saga.Transitions()[1].To)
}
