package saga_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5a6a)) }

var propRuns = flag.Int("saga.runs", 2000, "random sagas TestMachineProperties drives")

// randomDefinition draws a valid DAG of 1 to 7 steps, sometimes with a pivot (which every other
// step must precede or follow), steps without compensation, small retry budgets, and sometimes a
// deadline.
func randomDefinition(t testing.TB, rng *rand.Rand) (*saga.Definition, time.Duration) {
	n := 1 + rng.IntN(7)
	pivot := -1
	if rng.IntN(3) == 0 {
		pivot = rng.IntN(n)
	}
	steps := make([]saga.StepDefinition, n)
	for i := range steps {
		s := step(fmt.Sprintf("s%d", i))
		switch {
		case i == pivot:
			for j := 0; j < i; j++ {
				s.DependsOn = append(s.DependsOn, steps[j].Name)
			}
			s.Pivot = true
		case pivot >= 0 && i > pivot:
			for j := pivot + 1; j < i; j++ {
				if rng.IntN(3) == 0 {
					s.DependsOn = append(s.DependsOn, steps[j].Name)
				}
			}
			if len(s.DependsOn) == 0 {
				s.DependsOn = []string{steps[pivot].Name}
			}
		default:
			for j := 0; j < i; j++ {
				if rng.IntN(3) == 0 {
					s.DependsOn = append(s.DependsOn, steps[j].Name)
				}
			}
		}
		if rng.IntN(4) == 0 {
			s.Compensation = ""
		}
		s.Timeout = time.Duration(1+rng.IntN(10)) * time.Second
		s.Retry = saga.RetryPolicy{MaxAttempts: 1 + rng.IntN(3), InitialBackoff: time.Duration(1+rng.IntN(1000)) * time.Millisecond}
		s.CompensationRetry = saga.RetryPolicy{MaxAttempts: 1 + rng.IntN(3), InitialBackoff: time.Duration(1+rng.IntN(1000)) * time.Millisecond}
		steps[i] = s
	}
	var deadline time.Duration
	if rng.IntN(3) == 0 {
		deadline = time.Duration(rng.IntN(30)) * time.Second
	}
	return normalize(t, steps...), deadline
}

// inFlight lists the replies that would answer the attempts now in flight.
func inFlight(s *saga.State) []saga.Command {
	var out []saga.Command
	for i, st := range s.Steps {
		switch {
		case st.Waiting:
		case st.Status == saga.StepRunning:
			out = append(out, act(i, st.Attempt))
		case st.Status == saga.StepCompensating:
			out = append(out, comp(i, st.CompAttempt))
		}
	}
	return out
}

// openFor reports whether a success for c may still be taken: its step still waits for the
// outcome of that kind (a late success of an earlier attempt is final, since the participant's
// barrier applies the effect once whatever the attempt).
func openFor(s *saga.State, c saga.Command) bool {
	st := s.Steps[c.StepIndex]
	if c.Kind == protocol.KindAction {
		return st.Status == saga.StepRunning && c.Attempt <= st.Attempt
	}
	return st.Status == saga.StepCompensating && c.Attempt <= st.CompAttempt
}

// prop drives one random saga and checks the invariants after each event.
type prop struct {
	*sim
	rng  *rand.Rand
	sent map[saga.Command]bool
	// pastPivot is set once the pivot succeeded while the saga was going forward.
	pastPivot bool
	// exposed records, independently of the machine's flags, each step whose action may have been
	// applied, and why: "succeeded" (a success was taken), "retry" (an attempt answered retry:
	// a redelivery of it may still succeed) or "timeout" (an attempt timed out).
	exposed map[int]protocol.Outcome
}

// expose records that step i's action may have been applied; a success outranks the others.
func (p *prop) expose(i int, why protocol.Outcome) {
	if p.exposed == nil {
		p.exposed = map[int]protocol.Outcome{}
	}
	if p.exposed[i] == "" || why == protocol.OutcomeSucceeded {
		p.exposed[i] = why
	}
}

// applyReply applies r and records what a taken action reply exposes.
func (p *prop) applyReply(r protocol.Reply) ([]saga.Command, bool) {
	cmds, changed := p.apply(r)
	if changed && r.Kind == protocol.KindAction && (r.Outcome == protocol.OutcomeRetry || r.Outcome == protocol.OutcomeSucceeded) {
		p.expose(r.StepIndex, r.Outcome)
	}
	return cmds, changed
}

// tickTracked runs Tick and records the action attempts it timed out.
func (p *prop) tickTracked() ([]saga.Command, bool) {
	var due []int
	if !p.s.Status.Terminal() {
		for i, st := range p.s.Steps {
			if st.Status == saga.StepRunning && !st.Waiting && !st.TimerAt.IsZero() && !st.TimerAt.After(p.now) {
				due = append(due, i)
			}
		}
	}
	cmds, changed := p.tick()
	for _, i := range due {
		p.expose(i, "timeout")
	}
	return cmds, changed
}

func settled(st saga.StepState) bool {
	return st.Status == saga.StepCompensated || st.Status == saga.StepSkipped ||
		st.Status == saga.StepFailed && !st.Uncertain
}

// event applies f and checks what it did and the state it left.
func (p *prop) event(name string, f func() ([]saga.Command, bool)) {
	t := p.t
	t.Helper()
	before := cloneState(p.s)
	cmds, changed := f()
	s, def, g := p.s, p.m.Definition(), p.m.Graph()
	if s.Status.Terminal() {
		require.Empty(t, cmds, "%s: a terminal saga sends nothing", name)
	}
	if before.Status.Terminal() {
		require.Equal(t, before, s, "%s: a terminal saga does not change", name)
	}
	if !changed {
		require.Empty(t, cmds, "%s: commands without a change", name)
		require.Equal(t, before, s, "%s: reported no change but changed", name)
	}
	for _, c := range cmds {
		require.False(t, p.sent[c], "%s: %+v sent twice: its message id would repeat", name, c)
		p.sent[c] = true
		st := s.Steps[c.StepIndex]
		require.False(t, st.Waiting, "%s: %+v sent for a waiting step", name, c)
		require.False(t, st.TimerAt.IsZero(), "%s: %+v sent without a timeout", name, c)
		switch c.Kind {
		case protocol.KindAction:
			require.Equal(t, saga.StatusRunning, s.Status, "%s: action %+v sent while the saga is %s", name, c, s.Status)
			require.Equal(t, saga.StepRunning, st.Status)
			require.Equal(t, st.Attempt, c.Attempt)
			for _, d := range g.Deps[c.StepIndex] {
				require.Equal(t, saga.StepSucceeded, s.Steps[d].Status, "%s: %+v sent before dependency %d succeeded", name, c, d)
			}
		case protocol.KindCompensate:
			require.Equal(t, saga.StatusCompensating, s.Status, "%s: compensation %+v sent while the saga is %s", name, c, s.Status)
			require.NotEmpty(t, def.Steps[c.StepIndex].Compensation, "%s: %+v for a step without compensation", name, c)
			require.Equal(t, saga.StepCompensating, st.Status)
			require.Equal(t, st.CompAttempt, c.Attempt)
			for _, d := range g.Dependents[c.StepIndex] {
				require.True(t, settled(s.Steps[d]), "%s: %+v sent while dependent %d is %s", name, c, d, s.Steps[d].Status)
			}
		default:
			t.Fatalf("%s: unknown command kind %q", name, c.Kind)
		}
	}

	switch s.Status {
	case saga.StatusCompleted:
		for i, st := range s.Steps {
			require.Equal(t, saga.StepSucceeded, st.Status, "%s: COMPLETED saga, step %d", name, i)
		}
	case saga.StatusCompensated:
		for i, st := range s.Steps {
			require.True(t, settled(st), "%s: COMPENSATED saga holds an effect in step %d (%s, uncertain %v)", name, i, st.Status, st.Uncertain)
		}
	case saga.StatusFailed:
		require.Contains(t, []saga.Status{saga.StatusRunning, saga.StatusCompensating}, s.ResumeStatus)
		require.True(t, slices.ContainsFunc(s.Steps, func(st saga.StepState) bool { return st.Waiting && st.TimerAt.IsZero() }),
			"%s: a FAILED saga parks the step that exhausted its attempts", name)
	default:
		require.False(t, p.m.WakeAt(s).IsZero(), "%s: a %s saga with no timer would never move", name, s.Status)
	}
	for i, st := range s.Steps {
		if !st.Waiting && (st.Status == saga.StepRunning || st.Status == saga.StepCompensating) {
			require.False(t, st.TimerAt.IsZero(), "%s: step %d is in flight without a timeout", name, i)
		}
	}
	if pv := pivotIndex(def); pv >= 0 && s.Steps[pv].Status == saga.StepSucceeded && (s.Status == saga.StatusRunning || s.Status == saga.StatusFailed) {
		p.pastPivot = true
	}
	if p.pastPivot {
		require.NotContains(t, []saga.Status{saga.StatusCompensating, saga.StatusCompensated}, s.Status, "%s: compensating past the pivot", name)
	}
	for i, why := range p.exposed {
		st := s.Steps[i]
		if why != "succeeded" {
			// A retry reply is as uncertain as a timeout: both leave the step to be compensated
			// if the saga gives it up.
			require.True(t, st.Uncertain, "%s: step %d took a %s but is not uncertain", name, i, why)
		}
		require.NotEqual(t, saga.StepSkipped, st.Status, "%s: step %d was started", name, i)
		if st.Status == saga.StepFailed && s.Status == saga.StatusCompensating {
			require.True(t, st.Uncertain, "%s: step %d (%s) is FAILED and would not be compensated", name, i, why)
		}
		if s.Status == saga.StatusCompensated {
			require.Equal(t, saga.StepCompensated, st.Status, "%s: COMPENSATED saga left step %d (%s) uncompensated", name, i, why)
		}
	}
}

func pivotIndex(d *saga.Definition) int {
	return slices.IndexFunc(d.Steps, func(s saga.StepDefinition) bool { return s.Pivot })
}

var outcomes = []protocol.Outcome{protocol.OutcomeSucceeded, protocol.OutcomeSucceeded, protocol.OutcomeSucceeded, protocol.OutcomeFailed, protocol.OutcomeRetry}

// randomEvent applies one event drawn at random.
func (p *prop) randomEvent() {
	p.t.Helper()
	p.wait(time.Duration(p.rng.IntN(500)) * time.Millisecond)
	switch k := p.rng.IntN(100); {
	case k < 50:
		live := inFlight(p.s)
		if len(live) == 0 {
			return
		}
		c := live[p.rng.IntN(len(live))]
		r := protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: c.StepIndex, Kind: c.Kind, Attempt: c.Attempt}, Outcome: outcomes[p.rng.IntN(len(outcomes))], Error: "random"}
		p.event("reply "+string(r.Outcome), func() ([]saga.Command, bool) { return p.applyReply(r) })
	case k < 60:
		// A redelivered or late reply: any command ever sent, answered any way. Unless it
		// answers the attempt in flight, it must change nothing.
		var all []saga.Command
		for c := range p.sent {
			all = append(all, c)
		}
		if len(all) == 0 {
			return
		}
		slices.SortFunc(all, func(a, b saga.Command) int {
			return a.StepIndex*1e6 + len(a.Kind)*1e3 + a.Attempt - (b.StepIndex*1e6 + len(b.Kind)*1e3 + b.Attempt)
		})
		c := all[p.rng.IntN(len(all))]
		live := slices.Contains(inFlight(p.s), c)
		before := cloneState(p.s)
		r := protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: c.StepIndex, Kind: c.Kind, Attempt: c.Attempt}, Outcome: outcomes[p.rng.IntN(len(outcomes))]}
		p.event("late reply", func() ([]saga.Command, bool) {
			cmds, changed := p.applyReply(r)
			if !live && !(r.Outcome == protocol.OutcomeSucceeded && openFor(before, c)) {
				require.False(p.t, changed, "a reply to %+v, which is not in flight, changed the saga", c)
			}
			return cmds, changed
		})
	case k < 80:
		at := p.m.WakeAt(p.s)
		if at.IsZero() {
			return
		}
		if at.After(p.now) {
			p.now = at
		}
		p.event("wake", func() ([]saga.Command, bool) {
			cmds, changed := p.tickTracked()
			require.True(p.t, changed, "the timer at %s changed nothing", at)
			return cmds, changed
		})
	case k < 88:
		p.wait(time.Duration(p.rng.IntN(5000)) * time.Millisecond)
		p.event("tick", p.tickTracked)
	case k < 92:
		p.event("abort", func() ([]saga.Command, bool) {
			status := p.s.Status
			cmds, err := p.abort("random")
			if status != saga.StatusRunning {
				require.ErrorIs(p.t, err, saga.ErrWrongState)
			} else if p.pastPivot {
				require.ErrorIs(p.t, err, saga.ErrPastPivot)
			}
			return cmds, err == nil
		})
	default:
		p.event("retry", func() ([]saga.Command, bool) {
			status := p.s.Status
			cmds, err := p.resume()
			if status != saga.StatusFailed {
				require.ErrorIs(p.t, err, saga.ErrWrongState)
			} else {
				require.NoError(p.t, err)
			}
			return cmds, err == nil
		})
	}
}

// drain answers every attempt in flight with success, retries a FAILED saga and fires timers
// until the saga is terminal.
func (p *prop) drain() {
	p.t.Helper()
	for range 10000 {
		if p.s.Status.Terminal() {
			return
		}
		p.wait(time.Millisecond)
		if p.s.Status == saga.StatusFailed {
			p.event("retry", func() ([]saga.Command, bool) {
				cmds, err := p.resume()
				require.NoError(p.t, err)
				return cmds, true
			})
			continue
		}
		if live := inFlight(p.s); len(live) > 0 {
			c := live[0]
			r := protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: c.StepIndex, Kind: c.Kind, Attempt: c.Attempt}, Outcome: protocol.OutcomeSucceeded}
			p.event("drain reply", func() ([]saga.Command, bool) { return p.applyReply(r) })
			continue
		}
		at := p.m.WakeAt(p.s)
		require.False(p.t, at.IsZero(), "a %s saga with nothing in flight has no timer", p.s.Status)
		if at.After(p.now) {
			p.now = at
		}
		p.event("drain wake", p.tickTracked)
	}
	p.t.Fatalf("saga still %s after draining", p.s.Status)
}

func TestMachineProperties(t *testing.T) {
	t.Parallel()
	runs := *propRuns
	if testing.Short() {
		runs = min(runs, 200)
	}
	outcomes := map[saga.Status]int{}
	for seed := range runs {
		rng := newRand(uint64(seed))
		def, deadline := randomDefinition(t, rng)
		var at time.Time
		if deadline > 0 {
			at = t0.Add(deadline)
		}
		var x *sim
		var cmds []saga.Command
		p := &prop{rng: rng, sent: map[saga.Command]bool{}}
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			x, cmds = start(t, def, at)
			p.sim = x
			p.event("start", func() ([]saga.Command, bool) { return cmds, true })
			for range rng.IntN(60) {
				p.randomEvent()
			}
			p.drain()
		})
		if !ok {
			t.Fatalf("seed %d failed; definition: %s", seed, def.CanonicalJSON())
		}
		outcomes[p.s.Status]++
	}
	t.Logf("final states over %d runs: %v", runs, outcomes)
	require.Positive(t, outcomes[saga.StatusCompleted], "some sagas complete")
	require.Positive(t, outcomes[saga.StatusCompensated], "some sagas compensate")
}
