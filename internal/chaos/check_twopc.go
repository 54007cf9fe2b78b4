package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// txRow is a 2PC transaction as the checks read it.
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

func (r *run) readTransactions(ctx context.Context) ([]txRow, error) {
	rows, err := r.admin.Query(ctx, `SELECT id::text, status, state FROM `+r.table("transactions"))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var txs []txRow
	for rows.Next() {
		var t txRow
		var state []byte
		if err := rows.Scan(&t.id, &t.status, &state); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(state, &t.state); err != nil {
			return nil, err
		}
		txs = append(txs, t)
	}
	return txs, rows.Err()
}

// checkTwoPC checks G1, T1 and G6 for a 2PC workload, from the transactions table and the
// participants' holds and ledgers.
func (r *run) checkTwoPC(ctx context.Context, verdicts map[string]*verdict, ledgers []entry) {
	txs, err := r.readTransactions(ctx)
	if err != nil {
		for _, v := range verdicts {
			v.broken(fmt.Errorf("read transactions: %w", err))
		}
		return
	}
	counts := map[string]int{}
	for _, t := range txs {
		counts[t.status]++
	}
	for st, n := range counts {
		r.res.Final[st] += n
	}
	holds, err := r.readHolds(ctx)
	if v := verdicts[G1]; v != nil {
		r.checkTxG1(v, txs, counts)
	}
	if v := verdicts[T1]; v != nil {
		if err != nil {
			v.broken(err)
		} else {
			r.checkT1(ctx, v, txs, holds, ledgers)
		}
	}
	if r.s.hasKind(WorkloadSaga) {
		return // G6 counts the sagas' outstanding effects too (checkSagas); G2, G3, G7-G9 are theirs
	}
	if v := verdicts[G6]; v != nil {
		r.checkMoney(v, 0, 0)
	}
	for _, n := range []string{G2, G3, G8, G9} {
		if v := verdicts[n]; v != nil {
			v.Detail = "not applicable to a 2pc workload"
		}
	}
	if v := verdicts[G7]; v != nil {
		v.Detail = "not applicable to a 2pc workload (the 2PC machine records no step history)"
	}
}

// checkTxG1: every transaction final, every accepted begin in the table, the expected aborts
// reached.
func (r *run) checkTxG1(v *verdict, txs []txRow, counts map[string]int) {
	v.Checked += len(txs)
	known := map[string]bool{}
	for _, t := range txs {
		known[t.id] = true
		if !r.terminal(t.status) {
			v.fail(t.id, "%s %s", t.status, t.state.Reason)
		}
	}
	for _, id := range r.res.Workload.idsOf(WorkloadTwoPC, r.s.mixed()) {
		if !known[id] {
			v.fail(id, "accepted by a coordinator but not in the transactions table")
		}
	}
	if n := counts["ABORTED"]; n < r.s.Expect.MinCompensated {
		v.fail("expect.min_compensated", "%d ABORTED transactions, the scenario expects at least %d", n, r.s.Expect.MinCompensated)
	}
}

// checkT1: one outcome at every participant, none left prepared, every decision acknowledged.
func (r *run) checkT1(ctx context.Context, v *verdict, txs []txRow, holds []hold, ledgers []entry) {
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
	committed := map[string]map[string]bool{} // transaction -> participants with a commit entry
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
		r.checkTxOutcome(v, t, byTx[t.id], committed[t.id])
	}
	if r.s.Expect.AbortedAtCrashPoint {
		status := make(map[string]string, len(txs))
		for _, t := range txs {
			status[t.id] = t.status
		}
		r.checkCrashPoint(v, status)
	}
}

// checkTxOutcome checks one transaction's outcome against its participants' acknowledgements,
// holds and commit entries.
func (r *run) checkTxOutcome(v *verdict, t txRow, holds []hold, committed map[string]bool) {
	for _, p := range t.state.Participants {
		if r.terminal(t.status) && !p.Acked && (t.status == "COMMITTED" || p.Vote == "YES") {
			v.fail(t.id, "%s is %s but %s never acknowledged the decision", t.id, t.status, p.Name)
		}
	}
	for _, h := range holds {
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
			if kind != "noop" && kind != "" && !committed[p.Name] {
				v.fail(t.id, "COMMITTED but %s has no commit entry in its ledger", p.Name)
			}
		}
	}
	if t.status == "ABORTED" && len(committed) > 0 {
		v.fail(t.id, "ABORTED but committed at %v", mapKeys(committed))
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
