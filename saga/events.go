package saga

import (
	"time"

	"github.com/sagacoord/sagacoord/protocol"
)

// Effects is what one call of a Machine method decided: the commands to send, which the caller
// commits together with the new state, and the events that telemetry observes once that commit
// succeeded. twopc.Effects has the same shape.
type Effects struct {
	Commands []Command
	Events   []Event
}

// Event is something a transition did: a StatusChanged or an AttemptEnded.
type Event interface{ sagaEvent() }

// StatusChanged is a change of the saga's status; the first of every saga is From "" to RUNNING.
type StatusChanged struct {
	From, To Status
	At       time.Time
}

// AttemptEnded is a step attempt that was in flight and ended: answered, or timed out.
type AttemptEnded struct {
	Step    int
	Kind    protocol.Kind
	Attempt int
	// AnsweredBy is the attempt whose reply ended this one, when it is another: a late success
	// of an attempt that timed out.
	AnsweredBy int
	// Outcome is the reply's outcome, or OutcomeTimeout.
	Outcome protocol.Outcome
	// Err is the reply's error, or why the attempt timed out; empty for a success.
	Err        string
	Start, End time.Time
}

// OutcomeTimeout is the outcome of an AttemptEnded whose attempt timed out.
const OutcomeTimeout protocol.Outcome = "timeout"

func (StatusChanged) sagaEvent() {}
func (AttemptEnded) sagaEvent()  {}

// effects returns the commands and events of a call that began with mark transitions in s's
// history: the attempts it ended and its status changes.
func (m *Machine) effects(s *State, mark int, ended []Event, cmds []Command) Effects {
	for _, t := range s.History[mark:] {
		if t.Step == -1 {
			ended = append(ended, StatusChanged{From: Status(t.From), To: Status(t.To), At: t.At})
		}
	}
	return Effects{Commands: cmds, Events: ended}
}

// inFlight returns the attempt of step i in flight, if any, as the event that would end it.
func (m *Machine) inFlight(s *State, i int, now time.Time) (AttemptEnded, bool) {
	st := &s.Steps[i]
	if st.Waiting || st.TimerAt.IsZero() {
		return AttemptEnded{}, false
	}
	a := AttemptEnded{Step: i, Start: st.TimerAt.Add(-m.def.Steps[i].Timeout), End: now}
	switch st.Status {
	case StepRunning:
		a.Kind, a.Attempt = protocol.KindAction, st.Attempt
	case StepCompensating:
		a.Kind, a.Attempt = protocol.KindCompensate, st.CompAttempt
	default:
		return AttemptEnded{}, false
	}
	return a, true
}
