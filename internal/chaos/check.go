package chaos

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
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
	G8: "each saga deadline fired at most once, and not before it was due",
	G9: "each compensation applied at most once per step, as the exact reverse of its action",
	T1: "2PC: one outcome at every participant, none left prepared",
	R1: "the processes of expect.recovered ran again, healthy, and worked after their last heal",
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
	r.res.Final = map[string]int{}
	if r.s.hasKind(WorkloadSaga) {
		sagas, err := r.readSagas(ctx)
		if err != nil {
			all(err)
			return r.collect(verdicts)
		}
		r.checkSagas(verdicts, sagas, ledgers, barriers)
	}
	if r.s.hasKind(WorkloadTwoPC) {
		r.checkTwoPC(ctx, verdicts, ledgers)
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
	if v := verdicts[R1]; v != nil {
		r.checkRecovered(ctx, v)
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
