package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/sagacoord/sagacoord/saga"
)

// sagaRow is a saga as the checks read it.
type sagaRow struct {
	id, status string
	def        *saga.Definition
	state      saga.State
}

func (r *run) readSagas(ctx context.Context) ([]sagaRow, error) {
	defs := map[string]*saga.Definition{}
	rows, err := r.admin.Query(ctx, `SELECT name, version, content FROM `+r.table("saga_definitions"))
	if err != nil {
		return nil, fmt.Errorf("read definitions: %w", err)
	}
	for rows.Next() {
		var name string
		var version int
		var content []byte
		if err := rows.Scan(&name, &version, &content); err != nil {
			rows.Close()
			return nil, err
		}
		d := &saga.Definition{}
		if err := json.Unmarshal(content, d); err != nil {
			rows.Close()
			return nil, fmt.Errorf("decode definition %s v%d: %w", name, version, err)
		}
		defs[fmt.Sprintf("%s/%d", name, version)] = d
	}
	rows.Close()
	rows, err = r.admin.Query(ctx, `SELECT id::text, status, definition_name, definition_version, state FROM `+r.table("sagas"))
	if err != nil {
		return nil, fmt.Errorf("read sagas: %w", err)
	}
	defer rows.Close()
	var out []sagaRow
	for rows.Next() {
		var s sagaRow
		var name string
		var version int
		var state []byte
		if err := rows.Scan(&s.id, &s.status, &name, &version, &state); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(state, &s.state); err != nil {
			return nil, fmt.Errorf("decode state of saga %s: %w", s.id, err)
		}
		s.def = defs[fmt.Sprintf("%s/%d", name, version)]
		if s.def == nil {
			return nil, fmt.Errorf("saga %s: definition %s v%d missing", s.id, name, version)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// sagaChecks holds what the saga invariants read: the sagas, and the ledger entries and barrier
// decisions by saga id.
type sagaChecks struct {
	r         *run
	sagas     []sagaRow
	kinds     map[string]string // participant -> kind
	byGid     map[string][]entry
	barrierOf map[string][]entry
	counts    map[string]int // sagas by status
}

func (r *run) checkSagas(verdicts map[string]*verdict, sagas []sagaRow, ledgers []entry, barriers map[string][]entry) {
	c := &sagaChecks{r: r, sagas: sagas, kinds: r.s.participants(), byGid: map[string][]entry{},
		barrierOf: map[string][]entry{}, counts: map[string]int{}}
	for _, e := range ledgers {
		c.byGid[e.gid] = append(c.byGid[e.gid], e)
	}
	for _, es := range barriers {
		for _, e := range es {
			c.barrierOf[e.gid] = append(c.barrierOf[e.gid], e)
		}
	}
	for _, s := range sagas {
		c.counts[s.status]++
	}
	for st, n := range c.counts {
		r.res.Final[st] += n
	}
	for _, inv := range []struct {
		name  string
		check func(*verdict)
	}{{G1, c.g1}, {G2, c.g2}, {G3, c.g3}, {G6, c.g6}, {G7, c.g7}, {G8, c.g8}, {G9, c.g9}} {
		if v := verdicts[inv.name]; v != nil {
			inv.check(v)
		}
	}
}

// g1: every saga final, every accepted start in the table, the expected counts reached.
func (c *sagaChecks) g1(v *verdict) {
	r := c.r
	v.Checked += len(c.sagas)
	known := map[string]bool{}
	for _, s := range c.sagas {
		known[s.id] = true
		if !r.terminal(s.status) {
			reason := s.state.Reason
			if reason != "" {
				reason = " (" + reason + ")"
			}
			v.fail(s.id, "%s%s", s.status, reason)
		}
	}
	for _, id := range r.res.Workload.idsOf(WorkloadSaga, r.s.mixed()) {
		if !known[id] {
			v.fail(id, "accepted by a coordinator but not in the sagas table")
		}
	}
	if n := c.counts["FAILED"]; n < r.s.Expect.MinFailed {
		v.fail("expect.min_failed", "%d FAILED sagas, the scenario expects at least %d", n, r.s.Expect.MinFailed)
	}
	if n := c.counts["COMPENSATED"]; n < r.s.Expect.MinCompensated {
		v.fail("expect.min_compensated", "%d COMPENSATED sagas, the scenario expects at least %d", n, r.s.Expect.MinCompensated)
	}
}

// g2: each step of a COMPLETED saga took effect exactly once and was not compensated.
func (c *sagaChecks) g2(v *verdict) {
	for _, s := range c.sagas {
		if s.status != "COMPLETED" {
			continue
		}
		v.Checked++
		for _, st := range s.def.Steps {
			kind := c.kinds[st.Participant]
			if kind == "noop" || kind == "" {
				// A noop participant keeps no ledger: its barrier says what it decided.
				actions, comps := c.count(c.barrierOf[s.id], st, func(b entry) bool { return b.kind == "action" && b.account == "succeeded" })
				if kind == "noop" && (actions != 1 || comps != 0) {
					v.fail(s.id, "step %s at %s: %d succeeded action(s) and %d compensation(s) in the barrier", st.Name, st.Participant, actions, comps)
				}
				continue
			}
			actions, comps := c.count(c.byGid[s.id], st, func(e entry) bool { return e.kind == "action" })
			if actions != 1 || comps != 0 {
				v.fail(s.id, "step %s at %s: %d action entr(ies), %d compensation(s); want 1 and 0", st.Name, st.Participant, actions, comps)
			}
		}
	}
}

// count counts the entries of step st at its participant that are actions (by isAction) and
// compensations.
func (c *sagaChecks) count(es []entry, st saga.StepDefinition, isAction func(entry) bool) (actions, comps int) {
	for _, e := range es {
		if e.participant != st.Participant || e.step != st.Name {
			continue
		}
		if isAction(e) {
			actions++
		}
		if e.kind == "compensate" {
			comps++
		}
	}
	return actions, comps
}

// g3: the ledger entries of a COMPENSATED saga net to zero at every participant and account.
func (c *sagaChecks) g3(v *verdict) {
	for _, s := range c.sagas {
		if s.status != "COMPENSATED" {
			continue
		}
		v.Checked++
		net := map[string]int64{}
		for _, e := range c.byGid[s.id] {
			net[e.participant+" "+e.account] += e.amount
		}
		var bad []string
		for k, n := range net {
			if n != 0 {
				bad = append(bad, fmt.Sprintf("%s nets %+d", k, n))
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			v.fail(s.id, "%s", strings.Join(bad, ", "))
		}
	}
}

// g6: the money is conserved; the effects of sagas parked in FAILED are legitimately
// outstanding.
func (c *sagaChecks) g6(v *verdict) {
	r := c.r
	var outstanding int64
	failed := 0
	for _, s := range c.sagas {
		if s.status == "FAILED" || (!r.terminal(s.status) && s.status != "COMPLETED" && s.status != "COMPENSATED") {
			failed++
			for _, e := range c.byGid[s.id] {
				if r.isTransfer(e.participant) {
					outstanding += e.amount
				}
			}
		}
	}
	r.checkMoney(v, outstanding, failed)
}

// g7: every recorded history is a legal path of the machine and ends in the saga's status.
func (c *sagaChecks) g7(v *verdict) {
	for _, s := range c.sagas {
		v.Checked++
		if err := saga.CheckHistory(s.state.History, len(s.state.Steps)); err != nil {
			v.fail(s.id, "%v", err)
		}
		if got := lastSagaStatus(s.state.History); got != "" && got != s.status {
			v.fail(s.id, "history ends in %s but the saga is %s", got, s.status)
		}
	}
}

func lastSagaStatus(h []saga.Transition) string {
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Step == -1 {
			return h[i].To
		}
	}
	return ""
}
