package chaos

import (
	"strings"

	"github.com/sagacoord/sagacoord/saga"
)

// deadlineReason starts the reason the saga machine gives when a saga's deadline fires.
const deadlineReason = "deadline exceeded at "

// g8: a saga's deadline fires at most once, and not before it is due. The machine turns a saga
// RUNNING -> COMPENSATING when its deadline fires (or a step fails, or an operator aborts it);
// only an operator's retry (FAILED -> RUNNING) can make it RUNNING again, so a saga has at most
// one such turn per retry. A saga whose reason is its deadline turned at or after that deadline.
func (c *sagaChecks) g8(v *verdict) {
	for _, s := range c.sagas {
		if s.state.Deadline.IsZero() {
			continue
		}
		v.Checked++
		turns, retries := 0, 0
		var lastTurn saga.Transition
		for _, t := range s.state.History {
			switch {
			case t.Step != -1:
			case t.From == string(saga.StatusRunning) && t.To == string(saga.StatusCompensating):
				turns++
				lastTurn = t
			case t.From == string(saga.StatusFailed) && t.To == string(saga.StatusRunning):
				retries++
			}
		}
		if turns > 1+retries {
			v.fail(s.id, "turned RUNNING -> COMPENSATING %d times with %d retry(ies) between: a deadline (or failure) fired more than once", turns, retries)
		}
		if strings.HasPrefix(s.state.Reason, deadlineReason) && turns > 0 && lastTurn.At.Before(s.state.Deadline) {
			v.fail(s.id, "compensating for its deadline %s since %s, before it was due", s.state.Deadline.UTC().Format("15:04:05.000"), lastTurn.At.UTC().Format("15:04:05.000"))
		}
	}
	if v.Checked == 0 {
		v.Detail = "no saga has a deadline"
	}
}

// g9: each compensation's effect is applied at most once per step, and only as the exact reverse
// of its action's: a compensate ledger entry has its step's one action entry at the same
// participant and account, with the opposite amount. For a noop participant, which keeps no
// ledger, its barrier holds at most one compensation per step. This holds in every status, FAILED
// included, where G3 looks at COMPENSATED sagas only.
func (c *sagaChecks) g9(v *verdict) {
	for _, s := range c.sagas {
		for _, st := range s.def.Steps {
			if kind := c.kinds[st.Participant]; kind == "noop" || kind == "" {
				if n := countKind(c.barrierOf[s.id], st, "compensate"); n > 1 {
					v.fail(s.id, "step %s at %s: %d compensations in the barrier", st.Name, st.Participant, n)
				}
				continue
			}
			var actions, comps []entry
			for _, e := range c.byGid[s.id] {
				if e.participant != st.Participant || e.step != st.Name {
					continue
				}
				switch e.kind {
				case "action":
					actions = append(actions, e)
				case "compensate":
					comps = append(comps, e)
				}
			}
			if len(comps) == 0 {
				continue
			}
			v.Checked++
			switch {
			case len(comps) > 1:
				v.fail(s.id, "step %s at %s: compensated %d times", st.Name, st.Participant, len(comps))
			case len(actions) != 1:
				v.fail(s.id, "step %s at %s: a compensation with %d action entr(ies)", st.Name, st.Participant, len(actions))
			case comps[0].account != actions[0].account || comps[0].amount != -actions[0].amount:
				v.fail(s.id, "step %s at %s: compensation %s %+d does not reverse action %s %+d", st.Name, st.Participant,
					comps[0].account, comps[0].amount, actions[0].account, actions[0].amount)
			}
		}
	}
}

// countKind counts the entries of step st at its participant with the given kind.
func countKind(es []entry, st saga.StepDefinition, kind string) int {
	n := 0
	for _, e := range es {
		if e.participant == st.Participant && e.step == st.Name && e.kind == kind {
			n++
		}
	}
	return n
}
