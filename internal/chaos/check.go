package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/saga"
)

// InvariantResult is the verdict on one invariant.
type InvariantResult struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	// Passed: no violation. A check that could not run (the database did not answer) fails.
	Passed bool `json:"passed"`
	// Checked counts what was looked at (sagas, entries, queues).
	Checked int `json:"checked"`
	// Violations counts offenders; Offending lists up to maxOffending of them by id.
	Violations int      `json:"violations"`
	Offending  []string `json:"offending,omitempty"`
	Detail     string   `json:"detail,omitempty"`
}

const maxOffending = 20

var invariantTitles = map[string]string{
	G1: "every saga and transaction terminal",
	G2: "COMPLETED: each step's effect exactly once, none compensated",
	G3: "COMPENSATED: effects net to zero at every participant",
	G4: "at most one ledger entry per (saga, step, kind)",
	G5: "outbox drained, queues empty but for injected dead letters",
	G6: "total money unchanged",
	G7: "every state history a legal path of the machine",
	T1: "2PC: one outcome at every participant, none left prepared",
}

type verdict struct {
	InvariantResult
}

func newVerdict(name string) *verdict {
	return &verdict{InvariantResult{Name: name, Title: invariantTitles[name], Passed: true}}
}

func (v *verdict) fail(id, format string, args ...any) {
	v.Passed = false
	v.Violations++
	if len(v.Offending) < maxOffending {
		v.Offending = append(v.Offending, id+": "+fmt.Sprintf(format, args...))
	}
}

func (v *verdict) broken(err error) {
	v.Passed = false
	v.Detail = "check could not run: " + err.Error()
}

// sagaRow is a saga as the checks read it.
type sagaRow struct {
	id, status string
	def        *saga.Definition
	state      saga.State
}

// entry is one ledger row.
type entry struct {
	participant, gid, step, kind, account string
	amount                                int64
}

func (r *run) check(ctx context.Context) []InvariantResult {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	verdicts := map[string]*verdict{}
	for _, n := range r.s.Invariants {
		verdicts[n] = newVerdict(n)
	}
	all := func(err error) {
		for _, v := range verdicts {
			if v.Detail == "" {
				v.broken(err)
			}
		}
	}
	ledgers, barriers, err := r.readLedgers(ctx)
	if err != nil {
		all(err)
		return r.collect(verdicts)
	}
	if r.s.Workload.Kind == WorkloadTwoPC {
		r.checkTwoPC(ctx, verdicts, ledgers)
	} else {
		sagas, err := r.readSagas(ctx)
		if err != nil {
			all(err)
			return r.collect(verdicts)
		}
		r.checkSagas(verdicts, sagas, ledgers, barriers)
	}
	if v := verdicts[G4]; v != nil {
		seen := map[string]int{}
		for _, e := range ledgers {
			seen[e.participant+"/"+e.gid+"/"+e.step+"/"+e.kind]++
		}
		v.Checked = len(ledgers)
		for k, n := range seen {
			if n > 1 {
				v.fail(k, "%d ledger entries", n)
			}
		}
	}
	if v := verdicts[G5]; v != nil {
		r.checkG5(ctx, v)
	}
	return r.collect(verdicts)
}

func (r *run) collect(verdicts map[string]*verdict) []InvariantResult {
	var out []InvariantResult
	for _, n := range AllInvariants {
		if v, ok := verdicts[n]; ok {
			sort.Strings(v.Offending)
			out = append(out, v.InvariantResult)
		}
	}
	return out
}

// readLedgers reads every ledger participant's entries, and the barrier decisions of noop
// participants (which keep no ledger).
func (r *run) readLedgers(ctx context.Context) ([]entry, map[string][]entry, error) {
	var out []entry
	barriers := map[string][]entry{}
	for _, sim := range r.s.Topology.Sims {
		for _, p := range sim.Participants {
			schema := schemaOf(r.schema+"_", p.Name)
			if p.Kind == "noop" {
				rows, err := r.admin.Query(ctx, `SELECT gid, step, kind, coalesce(reply->>'outcome', '') FROM `+pgx.Identifier{schema, "barrier"}.Sanitize())
				if err != nil {
					return nil, nil, fmt.Errorf("read barrier of %s: %w", p.Name, err)
				}
				for rows.Next() {
					e := entry{participant: p.Name}
					if err := rows.Scan(&e.gid, &e.step, &e.kind, &e.account); err != nil {
						rows.Close()
						return nil, nil, err
					}
					barriers[p.Name] = append(barriers[p.Name], e)
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					return nil, nil, err
				}
				continue
			}
			rows, err := r.admin.Query(ctx, `SELECT gid, step, kind, account, amount FROM `+pgx.Identifier{schema, "ledger"}.Sanitize())
			if err != nil {
				return nil, nil, fmt.Errorf("read ledger of %s: %w", p.Name, err)
			}
			for rows.Next() {
				e := entry{participant: p.Name}
				if err := rows.Scan(&e.gid, &e.step, &e.kind, &e.account, &e.amount); err != nil {
					rows.Close()
					return nil, nil, err
				}
				out = append(out, e)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, nil, err
			}
		}
	}
	return out, barriers, nil
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

func (r *run) checkSagas(verdicts map[string]*verdict, sagas []sagaRow, ledgers []entry, barriers map[string][]entry) {
	kinds := r.s.participants()
	byGid := map[string][]entry{}
	for _, e := range ledgers {
		byGid[e.gid] = append(byGid[e.gid], e)
	}
	barrierOf := map[string][]entry{}
	for _, es := range barriers {
		for _, e := range es {
			barrierOf[e.gid] = append(barrierOf[e.gid], e)
		}
	}
	known := map[string]bool{}
	counts := map[string]int{}
	for _, s := range sagas {
		known[s.id] = true
		counts[s.status]++
	}
	r.res.Final = counts
	if v := verdicts[G1]; v != nil {
		v.Checked = len(sagas)
		for _, s := range sagas {
			if !r.terminal(s.status) {
				reason := s.state.Reason
				if reason != "" {
					reason = " (" + reason + ")"
				}
				v.fail(s.id, "%s%s", s.status, reason)
			}
		}
		for _, id := range r.res.Workload.IDs {
			if !known[id] {
				v.fail(id, "accepted by a coordinator but not in the sagas table")
			}
		}
		if n := counts["FAILED"]; n < r.s.Expect.MinFailed {
			v.fail("expect.min_failed", "%d FAILED sagas, the scenario expects at least %d", n, r.s.Expect.MinFailed)
		}
		if n := counts["COMPENSATED"]; n < r.s.Expect.MinCompensated {
			v.fail("expect.min_compensated", "%d COMPENSATED sagas, the scenario expects at least %d", n, r.s.Expect.MinCompensated)
		}
	}
	if v := verdicts[G2]; v != nil {
		for _, s := range sagas {
			if s.status != "COMPLETED" {
				continue
			}
			v.Checked++
			es := byGid[s.id]
			for _, st := range s.def.Steps {
				if kinds[st.Participant] == "noop" || kinds[st.Participant] == "" {
					actions, comps := 0, 0
					for _, b := range barrierOf[s.id] {
						if b.participant == st.Participant && b.step == st.Name {
							if b.kind == "action" && b.account == "succeeded" {
								actions++
							}
							if b.kind == "compensate" {
								comps++
							}
						}
					}
					if kinds[st.Participant] == "noop" && (actions != 1 || comps != 0) {
						v.fail(s.id, "step %s at %s: %d succeeded action(s) and %d compensation(s) in the barrier", st.Name, st.Participant, actions, comps)
					}
					continue
				}
				actions, comps := 0, 0
				for _, e := range es {
					if e.participant == st.Participant && e.step == st.Name {
						switch e.kind {
						case "action":
							actions++
						case "compensate":
							comps++
						}
					}
				}
				if actions != 1 || comps != 0 {
					v.fail(s.id, "step %s at %s: %d action entr(ies), %d compensation(s); want 1 and 0", st.Name, st.Participant, actions, comps)
				}
			}
		}
	}
	if v := verdicts[G3]; v != nil {
		for _, s := range sagas {
			if s.status != "COMPENSATED" {
				continue
			}
			v.Checked++
			net := map[string]int64{}
			for _, e := range byGid[s.id] {
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
	if v := verdicts[G6]; v != nil {
		// Effects of sagas parked in FAILED are legitimately outstanding.
		var outstanding int64
		failed := 0
		for _, s := range sagas {
			if s.status == "FAILED" || (!r.terminal(s.status) && s.status != "COMPLETED" && s.status != "COMPENSATED") {
				failed++
				for _, e := range byGid[s.id] {
					if r.isTransfer(e.participant) {
						outstanding += e.amount
					}
				}
			}
		}
		r.checkMoney(v, outstanding, failed)
	}
	if v := verdicts[G7]; v != nil {
		for _, s := range sagas {
			v.Checked++
			if err := saga.CheckHistory(s.state.History, len(s.state.Steps)); err != nil {
				v.fail(s.id, "%v", err)
			}
			if got := lastSagaStatus(s.state.History); got != "" && got != s.status {
				v.fail(s.id, "history ends in %s but the saga is %s", got, s.status)
			}
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

func (r *run) isTransfer(participant string) bool {
	return r.s.participants()[participant] == "transfer"
}

// checkMoney compares the transfer participants' total balance with the initial one, allowing
// for outstanding effects (of FAILED sagas).
func (r *run) checkMoney(v *verdict, outstanding int64, failed int) {
	if len(r.transfer) == 0 {
		v.Detail = "no transfer participant: nothing to conserve"
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	total, err := r.money(ctx)
	if err != nil {
		v.broken(err)
		return
	}
	v.Checked = len(r.transfer)
	v.Detail = fmt.Sprintf("total before %d, after %d", r.initial, total)
	if outstanding != 0 {
		v.Detail += fmt.Sprintf("; %+d outstanding in %d unfinished or FAILED saga(s)", outstanding, failed)
	}
	if total != r.initial+outstanding {
		v.fail("money", "total is %d, want %d (initial %d %+d outstanding): %+d created or destroyed", total, r.initial+outstanding, r.initial, outstanding, total-r.initial-outstanding)
	}
}

func (r *run) checkG5(ctx context.Context, v *verdict) {
	var outbox int
	if err := r.admin.QueryRow(ctx, "SELECT count(*) FROM "+r.table("outbox")).Scan(&outbox); err != nil {
		v.broken(err)
		return
	}
	if outbox > 0 {
		var oldest time.Time
		_ = r.admin.QueryRow(ctx, "SELECT min(created_at) FROM "+r.table("outbox")).Scan(&oldest)
		v.fail("outbox", "%d row(s) never published (oldest from %s)", outbox, oldest.Format(time.RFC3339))
	}
	qs, err := r.queueStats(ctx)
	if err != nil {
		v.broken(err)
		return
	}
	v.Checked = len(qs) + 1
	dead := 0
	for _, q := range qs {
		if q.Name == deadQueue {
			dead = q.Ready + q.Unacked
			continue
		}
		if strings.HasPrefix(q.Name, tapPrefix) {
			continue
		}
		if q.Ready+q.Unacked > 0 {
			v.fail("queue "+q.Name, "%d ready, %d unacked", q.Ready, q.Unacked)
		}
	}
	allowed := r.injected + r.s.Expect.DeadLetters
	v.Detail = fmt.Sprintf("outbox %d rows; %d dead letter(s), %d injected poison", outbox, dead, r.injected)
	if dead > allowed {
		v.fail("queue "+deadQueue, "%d dead letters but only %d were injected (plus %d expected): real messages were dead-lettered", dead, r.injected, r.s.Expect.DeadLetters)
	}
	if dead < r.injected {
		v.fail("queue "+deadQueue, "%d poison message(s) injected but %d dead-lettered: the others were dropped or acked", r.injected, dead)
	}
}

// checkTwoPC checks G1, T1 and G6 for a 2PC workload, from the transactions table and the
// participants' holds and ledgers.
func (r *run) checkTwoPC(ctx context.Context, verdicts map[string]*verdict, ledgers []entry) {
	type txRow struct {
		id, status string
		state      struct {
			Participants []struct {
				Name  string `json:"name"`
				Vote  string `json:"vote"`
				Acked bool   `json:"acked"`
			} `json:"participants"`
			Reason string `json:"reason"`
		}
	}
	rows, err := r.admin.Query(ctx, `SELECT id::text, status, state FROM `+r.table("transactions"))
	var txs []txRow
	if err == nil {
		for rows.Next() {
			var t txRow
			var state []byte
			if err = rows.Scan(&t.id, &t.status, &state); err != nil {
				break
			}
			if err = json.Unmarshal(state, &t.state); err != nil {
				break
			}
			txs = append(txs, t)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		for _, v := range verdicts {
			v.broken(fmt.Errorf("read transactions: %w", err))
		}
		return
	}
	counts := map[string]int{}
	known := map[string]bool{}
	for _, t := range txs {
		counts[t.status]++
		known[t.id] = true
	}
	r.res.Final = counts
	holds, err := r.readHolds(ctx)
	if v := verdicts[G1]; v != nil {
		v.Checked = len(txs)
		for _, t := range txs {
			if !r.terminal(t.status) {
				v.fail(t.id, "%s %s", t.status, t.state.Reason)
			}
		}
		for _, id := range r.res.Workload.IDs {
			if !known[id] {
				v.fail(id, "accepted by a coordinator but not in the transactions table")
			}
		}
		if n := counts["ABORTED"]; n < r.s.Expect.MinCompensated {
			v.fail("expect.min_compensated", "%d ABORTED transactions, the scenario expects at least %d", n, r.s.Expect.MinCompensated)
		}
	}
	if v := verdicts[T1]; v != nil {
		if err != nil {
			v.broken(err)
		} else {
			byTx := map[string][]hold{}
			for _, h := range holds {
				byTx[h.tx] = append(byTx[h.tx], h)
				if h.state == "held" {
					v.fail(h.tx, "still prepared (held) at %s since %s", h.participant, h.preparedAt.Format(time.RFC3339))
				}
			}
			if err := r.checkPrepared(ctx, v); err != nil {
				v.broken(err)
			}
			committed := map[string]map[string]bool{}
			for _, e := range ledgers {
				if e.kind == "commit" {
					if committed[e.gid] == nil {
						committed[e.gid] = map[string]bool{}
					}
					committed[e.gid][e.participant] = true
				}
			}
			for _, t := range txs {
				v.Checked++
				for _, p := range t.state.Participants {
					if r.terminal(t.status) && !p.Acked && (t.status == "COMMITTED" || p.Vote == "YES") {
						v.fail(t.id, "%s is %s but %s never acknowledged the decision", t.id, t.status, p.Name)
					}
				}
				for _, h := range byTx[t.id] {
					switch {
					case t.status == "COMMITTED" && h.state == "aborted":
						v.fail(t.id, "COMMITTED but %s aborted", h.participant)
					case t.status == "ABORTED" && h.state == "committed":
						v.fail(t.id, "ABORTED but %s committed", h.participant)
					}
				}
				if t.status == "COMMITTED" {
					for _, p := range t.state.Participants {
						kind := r.s.participants()[p.Name]
						if kind != "noop" && kind != "" && !committed[t.id][p.Name] {
							v.fail(t.id, "COMMITTED but %s has no commit entry in its ledger", p.Name)
						}
					}
				}
				if t.status == "ABORTED" && len(committed[t.id]) > 0 {
					v.fail(t.id, "ABORTED but committed at %v", mapKeys(committed[t.id]))
				}
			}
			if r.s.Expect.AbortedAtCrashPoint {
				status := make(map[string]string, len(txs))
				for _, t := range txs {
					status[t.id] = t.status
				}
				r.checkCrashPoint(v, status)
			}
		}
	}
	if v := verdicts[G6]; v != nil {
		r.checkMoney(v, 0, 0)
	}
	if v := verdicts[G2]; v != nil {
		v.Detail = "not applicable to a 2pc workload"
	}
	if v := verdicts[G3]; v != nil {
		v.Detail = "not applicable to a 2pc workload"
	}
	if v := verdicts[G7]; v != nil {
		v.Detail = "not applicable to a 2pc workload (the 2PC machine records no step history)"
	}
}

// crashPointMessage is what a coordinator started with --test-crash-before-decision logs, with
// the transaction's tx_id, just before it kills itself.
const crashPointMessage = "test crash point reached: every vote YES, before the COMMIT decision is logged"

// checkCrashPoint fails v unless some coordinator reached the crash point before a COMMIT
// decision and every transaction it crashed on is ABORTED (expect.aborted_at_crash_point).
func (r *run) checkCrashPoint(v *verdict, status map[string]string) {
	var ids []string
	for _, p := range r.procs {
		if p.role != "coordinator" {
			continue
		}
		b, err := os.ReadFile(p.logPath)
		if err != nil {
			v.broken(fmt.Errorf("read %s's log for its crash points: %w", p.name, err))
			return
		}
		ids = append(ids, crashPointTxs(b)...)
	}
	if len(ids) == 0 {
		v.fail("expect.aborted_at_crash_point", "no coordinator logged %q: the crash point was never reached", crashPointMessage)
		return
	}
	for _, id := range ids {
		if st := status[id]; st != "ABORTED" {
			v.fail(id, "a coordinator crashed after its last YES vote, before logging the decision, and it ended %q, not ABORTED (presumed abort)", st)
		}
	}
}

// crashPointTxs returns the tx_id of each crash-point line of a coordinator's JSON log.
func crashPointTxs(log []byte) []string {
	var ids []string
	for _, line := range bytes.Split(log, []byte("\n")) {
		if !bytes.Contains(line, []byte(crashPointMessage)) {
			continue
		}
		var rec struct {
			Msg  string `json:"msg"`
			TxID string `json:"tx_id"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == crashPointMessage && rec.TxID != "" {
			ids = append(ids, rec.TxID)
		}
	}
	return ids
}

func mapKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkPrepared fails T1 for every row left in a participant's prepared table (the SDK's
// durable record of a YES vote awaiting its decision).
func (r *run) checkPrepared(ctx context.Context, v *verdict) error {
	for _, sim := range r.s.Topology.Sims {
		for _, p := range sim.Participants {
			table := pgx.Identifier{schemaOf(r.schema+"_", p.Name), "prepared"}.Sanitize()
			var exists bool
			if err := r.admin.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil {
				return err
			}
			if !exists {
				continue
			}
			rows, err := r.admin.Query(ctx, `SELECT tx_id, prepared_at FROM `+table)
			if err != nil {
				return fmt.Errorf("read prepared of %s: %w", p.Name, err)
			}
			for rows.Next() {
				var tx string
				var at time.Time
				if err := rows.Scan(&tx, &at); err != nil {
					rows.Close()
					return err
				}
				v.fail(tx, "still prepared at %s (its prepared record since %s)", p.Name, at.Format(time.RFC3339))
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

type hold struct {
	participant, tx, state string
	preparedAt             time.Time
	decidedAt              *time.Time
}

// readHolds reads participant-sim's 2PC holds of every participant that has the table.
func (r *run) readHolds(ctx context.Context) ([]hold, error) {
	var out []hold
	for _, sim := range r.s.Topology.Sims {
		for _, p := range sim.Participants {
			if p.Kind == "noop" {
				continue
			}
			schema := schemaOf(r.schema+"_", p.Name)
			var exists bool
			if err := r.admin.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{schema, "holds"}.Sanitize()).Scan(&exists); err != nil {
				return nil, err
			}
			if !exists {
				continue
			}
			rows, err := r.admin.Query(ctx, `SELECT tx_id, state, prepared_at, decided_at FROM `+pgx.Identifier{schema, "holds"}.Sanitize())
			if err != nil {
				return nil, fmt.Errorf("read holds of %s: %w", p.Name, err)
			}
			for rows.Next() {
				h := hold{participant: p.Name}
				if err := rows.Scan(&h.tx, &h.state, &h.preparedAt, &h.decidedAt); err != nil {
					rows.Close()
					return nil, err
				}
				out = append(out, h)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// figures computes the convergence time and the CAP/BASE figures from the samples, the workload
// and the final tables.
func (r *run) figures() {
	res := r.res
	f := &res.Figures
	first := true
	for _, a := range res.Faults {
		if first || a.AppliedAt < f.FaultFrom {
			f.FaultFrom = a.AppliedAt
		}
		first = false
		f.FaultTo = max(f.FaultTo, a.HealedAt)
	}
	for _, t := range res.Workload.AcceptedAt {
		if s := t.Seconds(); len(res.Faults) > 0 && s >= f.FaultFrom && s <= f.FaultTo {
			f.AcceptedDuringFaults++
		}
	}
	finished := func(s Sample) int { return s.Completed + s.Compensated + s.Failed }
	at := func(t float64) (Sample, bool) {
		var best Sample
		ok := false
		for _, s := range res.Samples {
			if s.T <= t {
				best, ok = s, true
			}
		}
		return best, ok
	}
	if len(res.Faults) > 0 {
		a, okA := at(f.FaultFrom)
		b, okB := at(f.FaultTo)
		if okB {
			if !okA {
				a = Sample{}
			}
			f.FinishedDuringFaults = finished(b) - finished(a)
			if d := f.FaultTo - f.FaultFrom; d > 0 {
				f.ThroughputDuring = float64(f.FinishedDuringFaults) / d
			}
		}
	}
	for _, s := range res.Samples {
		f.WorstMoneyInFlight = max(f.WorstMoneyInFlight, s.MoneyInFlight)
		f.WorstHeld = max(f.WorstHeld, s.Held)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var last *time.Time
	var n int
	if err := r.admin.QueryRow(ctx, "SELECT max(coalesce(finished_at, updated_at)), count(*) FROM "+r.mainTable()).Scan(&last, &n); err == nil && last != nil {
		res.Converged = r.since(*last)
		if res.Converged > 0 {
			f.ThroughputOverall = float64(n) / res.Converged
		}
	}
	// Convergence counts the work that was started before the last heal: requests that keep
	// arriving afterwards would otherwise measure the workload's length, not the recovery.
	var before *time.Time
	healedAt := r.start().Add(time.Duration(res.LastHeal * float64(time.Second)))
	if err := r.admin.QueryRow(ctx, "SELECT max(coalesce(finished_at, updated_at)) FROM "+r.mainTable()+" WHERE created_at <= $1", healedAt).Scan(&before); err == nil && before != nil {
		res.ConvergedBeforeHeal = r.since(*before)
	}
	res.Convergence = -1
	if g1 := res.invariant(G1); g1 == nil || g1.Passed {
		res.Convergence = max(0, res.ConvergedBeforeHeal-res.LastHeal)
	}
	if r.s.Workload.Kind == WorkloadTwoPC {
		holds, err := r.readHolds(ctx)
		if err != nil {
			f.BlockedNote = "holds not readable: " + err.Error()
			return
		}
		for _, h := range holds {
			end := time.Now()
			if h.decidedAt != nil {
				end = *h.decidedAt
			}
			d := end.Sub(h.preparedAt).Seconds()
			f.BlockedPrepared += d
			f.BlockedPreparedMax = max(f.BlockedPreparedMax, d)
		}
		f.BlockedNote = fmt.Sprintf("%d hold(s) in participant-sim's holds tables", len(holds))
	} else {
		f.BlockedNote = "a saga holds no participant blocked: every step commits locally at once"
	}
}

func (res *Result) invariant(name string) *InvariantResult {
	for i := range res.Invariants {
		if res.Invariants[i].Name == name {
			return &res.Invariants[i]
		}
	}
	return nil
}
