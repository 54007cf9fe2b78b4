package saga

import (
	"fmt"
	"slices"
	"time"
)

// Edge is one legal transition of the saga state machine and the event that causes it. The
// first transition of every saga is From "" (no state yet) To RUNNING.
type Edge struct {
	From, To Status
	Cause    string
}

// StepEdge is one legal transition of a step's state machine. Every step starts PENDING, which is
// not recorded. During lists the saga states in which the machine makes this transition.
type StepEdge struct {
	From, To StepStatus
	Cause    string
	During   []Status
}

// sagaEdges and stepEdges are the one description of both machines that CheckHistory, the docs
// (docs/state-machines.md, generated and checked by a test) and chaos checks share. They are
// derived from what Machine does; a change to Machine that adds a transition must add it here.
// A Cause is a mermaid label, so it holds no ':', ';' or '#'.
var sagaEdges = []Edge{
	{"", StatusRunning, "StartSaga"},
	{StatusRunning, StatusCompleted, "every step succeeded"},
	{StatusRunning, StatusCompensating, "a step failed before or at the pivot, the deadline passed, or AbortSaga"},
	{StatusRunning, StatusFailed, "a step after the pivot exhausted its retries"},
	{StatusCompensating, StatusCompensated, "every step with an effect is compensated"},
	{StatusCompensating, StatusFailed, "a compensation exhausted its retries"},
	{StatusFailed, StatusRunning, "RetrySaga after forward recovery failed"},
	{StatusFailed, StatusCompensating, "RetrySaga after compensation failed"},
}

var (
	anyLive     = []Status{StatusRunning, StatusCompensating, StatusFailed}
	compensates = []Status{StatusCompensating}
)

var stepEdges = []StepEdge{
	{StepPending, StepRunning, "its dependencies succeeded, action sent", []Status{StatusRunning}},
	{StepPending, StepSkipped, "the saga compensates before the step started", compensates},
	{StepRunning, StepSucceeded, "action reply succeeded", anyLive},
	{StepRunning, StepFailed, "business failure, retries exhausted, or retry cancelled by compensation", anyLive},
	{StepSucceeded, StepCompensating, "its dependents are undone, compensation sent", compensates},
	{StepSucceeded, StepCompensated, "its dependents are undone and it has no compensation", compensates},
	{StepFailed, StepCompensating, "uncertain (an attempt timed out or answered retry), dependents undone, compensation sent", compensates},
	{StepFailed, StepCompensated, "uncertain, dependents undone, no compensation defined", compensates},
	{StepCompensating, StepCompensated, "compensation reply succeeded", []Status{StatusCompensating, StatusFailed}},
}

// Transitions returns the legal transitions of the saga state machine. The slice is a copy.
func Transitions() []Edge { return slices.Clone(sagaEdges) }

// StepTransitions returns the legal transitions of the step state machine. The slice is a copy.
func StepTransitions() []StepEdge {
	out := slices.Clone(stepEdges)
	for i := range out {
		out[i].During = slices.Clone(out[i].During)
	}
	return out
}

// stepSettled reports whether a step may be in this state when its saga becomes COMPENSATED. A
// FAILED step is settled only when no attempt timed out, which a history does not record, so
// every FAILED step is accepted.
func stepSettled(st StepStatus) bool {
	return st == StepCompensated || st == StepSkipped || st == StepFailed
}

// HistoryError names the first transition of a history that is not a legal path of the state
// machines (invariant G7).
type HistoryError struct {
	// Index is the position in the history; Step is -1 for the saga itself.
	Index, Step int
	From, To    string
	Reason      string
}

func (e *HistoryError) Error() string {
	subject := "saga"
	if e.Step >= 0 {
		subject = fmt.Sprintf("step %d", e.Step)
	}
	return fmt.Sprintf("history[%d]: %s %q -> %q: %s", e.Index, subject, e.From, e.To, e.Reason)
}

// CheckHistory verifies that h, a recorded State.History of a saga with nsteps steps, is a legal
// path of the saga state machine and of each step's state machine (invariant G7): it starts with
// the saga entering RUNNING, every transition is in Transitions or StepTransitions and happens
// while the saga is in one of the edge's During states, each From is the previous To of the same
// subject, timestamps never decrease, nothing follows a terminal saga state, RetrySaga returns a
// FAILED saga to the state it failed in, and the saga completes only with every step SUCCEEDED
// and is compensated only with no step holding an effect. It returns
// a *HistoryError for the first problem.
func CheckHistory(h []Transition, nsteps int) error {
	if nsteps < 1 {
		return &HistoryError{Index: 0, Step: -1, Reason: fmt.Sprintf("a saga has at least one step, not %d", nsteps)}
	}
	if len(h) == 0 {
		return &HistoryError{Index: 0, Step: -1, Reason: "the history is empty; it must start with the saga entering RUNNING"}
	}
	saga := Status("")
	// failedFrom is the state the saga left for FAILED: RetrySaga returns it there.
	failedFrom := Status("")
	steps := make([]StepStatus, nsteps)
	for i := range steps {
		steps[i] = StepPending
	}
	for i, t := range h {
		bad := func(format string, args ...any) error {
			return &HistoryError{Index: i, Step: t.Step, From: t.From, To: t.To, Reason: fmt.Sprintf(format, args...)}
		}
		if i > 0 && t.At.Before(h[i-1].At) {
			return bad("at %s is before the previous transition's %s", t.At.Format(time.RFC3339Nano), h[i-1].At.Format(time.RFC3339Nano))
		}
		if saga.Terminal() {
			return bad("the saga was already %s, which is terminal", saga)
		}
		switch {
		case t.Step == -1:
			if from := Status(t.From); from != saga {
				return bad("from is not the saga's state %q", saga)
			}
			if !legalSaga(saga, Status(t.To)) {
				return bad("not a legal saga transition")
			}
			if saga == StatusFailed && Status(t.To) != failedFrom {
				return bad("the saga failed while %s, so RetrySaga resumes it to %s", failedFrom, failedFrom)
			}
			if t.To == string(StatusFailed) {
				failedFrom = saga
			}
			switch Status(t.To) {
			case StatusCompleted:
				for k, st := range steps {
					if st != StepSucceeded {
						return bad("step %d is %s; a saga completes only when every step SUCCEEDED", k, st)
					}
				}
			case StatusCompensated:
				for k, st := range steps {
					if !stepSettled(st) {
						return bad("step %d is %s; a saga is compensated only when every step is COMPENSATED, SKIPPED or FAILED", k, st)
					}
				}
			}
			saga = Status(t.To)
		case t.Step < -1 || t.Step >= nsteps:
			return bad("step index out of range: the saga has %d steps", nsteps)
		case saga == "":
			return bad("a step changed before the saga started")
		default:
			if from := StepStatus(t.From); from != steps[t.Step] {
				return bad("from is not the step's state %q", steps[t.Step])
			}
			e, ok := stepEdge(steps[t.Step], StepStatus(t.To))
			if !ok {
				return bad("not a legal step transition")
			}
			if !slices.Contains(e.During, saga) {
				return bad("not legal while the saga is %s (only %v)", saga, e.During)
			}
			steps[t.Step] = StepStatus(t.To)
		}
	}
	return nil
}

func legalSaga(from, to Status) bool {
	for _, e := range sagaEdges {
		if e.From == from && e.To == to {
			return true
		}
	}
	return false
}

func stepEdge(from, to StepStatus) (StepEdge, bool) {
	for _, e := range stepEdges {
		if e.From == from && e.To == to {
			return e, true
		}
	}
	return StepEdge{}, false
}
