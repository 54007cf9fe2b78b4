package saga_test

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
)

// Step states, short.
const (
	pending      = saga.StepPending
	running      = saga.StepRunning
	succeeded    = saga.StepSucceeded
	failed       = saga.StepFailed
	compensating = saga.StepCompensating
	compensated  = saga.StepCompensated
	skipped      = saga.StepSkipped
)

// t0 is the fake clock's start: the machine takes time with each event, so tests never sleep.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// step is a step with a participant, an action and a compensation named after it.
func step(name string, deps ...string) saga.StepDefinition {
	return saga.StepDefinition{
		Name:         name,
		Participant:  "svc-" + name,
		Action:       "do-" + name,
		Compensation: "undo-" + name,
		DependsOn:    deps,
	}
}

// normalize builds and normalizes a definition named "test", failing the test if it is invalid.
func normalize(t testing.TB, steps ...saga.StepDefinition) *saga.Definition {
	t.Helper()
	d, err := saga.Normalize(saga.Definition{Name: "test", Steps: steps})
	require.NoError(t, err)
	return &d
}

func act(i, attempt int) saga.Command {
	return saga.Command{StepIndex: i, Kind: protocol.KindAction, Attempt: attempt}
}

func comp(i, attempt int) saga.Command {
	return saga.Command{StepIndex: i, Kind: protocol.KindCompensate, Attempt: attempt}
}

// sim drives one saga through a Machine on a fake clock and checks the recorded history after
// every event.
type sim struct {
	t   testing.TB
	m   *saga.Machine
	s   *saga.State
	now time.Time
}

// start begins a saga of def at t0 and returns the commands of its first steps.
func start(t testing.TB, def *saga.Definition, deadline time.Time) (*sim, []saga.Command) {
	t.Helper()
	x := &sim{t: t, m: saga.NewMachine(def), now: t0}
	var fx saga.Effects
	x.s, fx = x.m.Start("saga-1", json.RawMessage(`{"amount":10}`), deadline, t0)
	x.check()
	return x, fx.Commands
}

func (x *sim) wait(d time.Duration) *sim {
	x.now = x.now.Add(d)
	return x
}

// check asserts G7 on the history and that the state agrees with the last recorded transitions.
func (x *sim) check() {
	x.t.Helper()
	require.NoError(x.t, saga.CheckHistory(x.s.History, len(x.s.Steps)))
	sagaStatus := ""
	stepStatus := make([]string, len(x.s.Steps))
	for i := range stepStatus {
		stepStatus[i] = string(saga.StepPending)
	}
	for _, tr := range x.s.History {
		if tr.Step < 0 {
			sagaStatus = tr.To
		} else {
			stepStatus[tr.Step] = tr.To
		}
	}
	require.Equal(x.t, sagaStatus, string(x.s.Status), "saga status vs history")
	for i, st := range x.s.Steps {
		require.Equal(x.t, stepStatus[i], string(st.Status), "step %d status vs history", i)
	}
}

// reply answers the attempt in flight of step i's action or compensation.
func (x *sim) reply(i int, kind protocol.Kind, outcome protocol.Outcome) ([]saga.Command, bool) {
	x.t.Helper()
	attempt := x.s.Steps[i].Attempt
	if kind == protocol.KindCompensate {
		attempt = x.s.Steps[i].CompAttempt
	}
	r := protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: i, Kind: kind, Attempt: attempt}, Outcome: outcome}
	switch outcome {
	case protocol.OutcomeSucceeded:
		r.Output = json.RawMessage(`{"step":` + strconv.Itoa(i) + `}`)
	default:
		r.Error = "boom"
	}
	return x.apply(r)
}

func (x *sim) apply(r protocol.Reply) ([]saga.Command, bool) {
	x.t.Helper()
	fx, changed := x.m.Reply(x.s, r, x.now)
	x.check()
	return fx.Commands, changed
}

// must answers like reply and requires that the reply changed the state.
func (x *sim) must(i int, kind protocol.Kind, outcome protocol.Outcome) []saga.Command {
	x.t.Helper()
	cmds, changed := x.reply(i, kind, outcome)
	require.True(x.t, changed, "reply %s %s to step %d changed nothing", kind, outcome, i)
	return cmds
}

func (x *sim) ok(i int) []saga.Command {
	return x.must(i, protocol.KindAction, protocol.OutcomeSucceeded)
}

func (x *sim) fail(i int) []saga.Command {
	return x.must(i, protocol.KindAction, protocol.OutcomeFailed)
}

func (x *sim) retry(i int) []saga.Command {
	return x.must(i, protocol.KindAction, protocol.OutcomeRetry)
}

func (x *sim) compOK(i int) []saga.Command {
	return x.must(i, protocol.KindCompensate, protocol.OutcomeSucceeded)
}

func (x *sim) tick() ([]saga.Command, bool) {
	x.t.Helper()
	fx, changed := x.m.Tick(x.s, x.now)
	x.check()
	return fx.Commands, changed
}

// wake moves the clock to the machine's next timer and fires it; the timer must exist and fire.
func (x *sim) wake() []saga.Command {
	x.t.Helper()
	at := x.m.WakeAt(x.s)
	require.False(x.t, at.IsZero(), "no timer set")
	require.False(x.t, at.Before(x.now), "timer %s is in the past (now %s)", at, x.now)
	x.now = at
	cmds, changed := x.tick()
	require.True(x.t, changed, "the timer at %s changed nothing", at)
	return cmds
}

func (x *sim) abort(reason string) ([]saga.Command, error) {
	x.t.Helper()
	fx, err := x.m.Abort(x.s, reason, x.now)
	x.check()
	return fx.Commands, err
}

func (x *sim) resume() ([]saga.Command, error) {
	x.t.Helper()
	fx, err := x.m.Retry(x.s, x.now)
	x.check()
	return fx.Commands, err
}

func (x *sim) statuses() []saga.StepStatus {
	out := make([]saga.StepStatus, len(x.s.Steps))
	for i, st := range x.s.Steps {
		out[i] = st.Status
	}
	return out
}

// cloneState copies everything an event may change, so a test can show that one changed nothing.
func cloneState(s *saga.State) *saga.State {
	c := *s
	c.Steps = slices.Clone(s.Steps)
	c.History = slices.Clone(s.History)
	return &c
}

// transitions is a history without timestamps, for comparing paths.
func transitions(h []saga.Transition) []string {
	out := make([]string, len(h))
	for i, t := range h {
		subject := "saga"
		if t.Step >= 0 {
			subject = "step" + strconv.Itoa(t.Step)
		}
		out[i] = subject + ":" + t.From + "->" + t.To
	}
	return out
}
