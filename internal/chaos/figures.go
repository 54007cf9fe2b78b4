package chaos

import (
	"context"
	"fmt"
	"time"
)

// figures computes the convergence time and the CAP/BASE figures from the samples, the workload
// and the final tables.
func (r *run) figures() {
	res := r.res
	f := &res.Figures
	faultWindowFigures(res)
	for _, s := range res.Samples {
		f.WorstMoneyInFlight = max(f.WorstMoneyInFlight, s.MoneyInFlight)
		f.WorstHeld = max(f.WorstHeld, s.Held)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.convergence(ctx)
	if r.s.hasKind(WorkloadTwoPC) {
		r.blockedFigures(ctx)
	} else {
		f.BlockedNote = "a saga holds no participant blocked: every step commits locally at once"
	}
}

// faultWindowFigures counts the requests accepted and the work finished between the first
// fault and the last heal.
func faultWindowFigures(res *Result) {
	f := &res.Figures
	if len(res.Faults) == 0 {
		return
	}
	for i, a := range res.Faults {
		if i == 0 || a.AppliedAt < f.FaultFrom {
			f.FaultFrom = a.AppliedAt
		}
		f.FaultTo = max(f.FaultTo, a.HealedAt)
	}
	for _, t := range res.Workload.AcceptedAt {
		if s := t.Seconds(); s >= f.FaultFrom && s <= f.FaultTo {
			f.AcceptedDuringFaults++
		}
	}
	finished := func(s Sample) int { return s.Completed + s.Compensated + s.Failed }
	// at returns the last sample taken at or before t.
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
	a, _ := at(f.FaultFrom) // none yet: nothing had finished
	if b, ok := at(f.FaultTo); ok {
		f.FinishedDuringFaults = finished(b) - finished(a)
		if d := f.FaultTo - f.FaultFrom; d > 0 {
			f.ThroughputDuring = float64(f.FinishedDuringFaults) / d
		}
	}
}

// convergence reads from the main table when the last saga or transaction finished, overall and
// among those started before the last heal.
func (r *run) convergence(ctx context.Context) {
	res := r.res
	var last *time.Time
	var n int
	if err := r.admin.QueryRow(ctx, "SELECT max(coalesce(finished_at, updated_at)), count(*) FROM "+r.mainTable()).Scan(&last, &n); err == nil && last != nil {
		res.Converged = r.since(*last)
		if res.Converged > 0 {
			res.Figures.ThroughputOverall = float64(n) / res.Converged
		}
	}
	// Convergence counts the work that was started before the last heal: requests that keep
	// arriving afterwards would otherwise measure the workload's length, not the recovery.
	var before *time.Time
	healedAt := r.start().Add(time.Duration(res.LastHeal * float64(time.Second)))
	if err := r.admin.QueryRow(ctx, "SELECT max(coalesce(finished_at, updated_at)) FROM "+r.mainTable()+" WHERE created_at <= $1", healedAt).Scan(&before); err == nil && before != nil {
		res.ConvergedBeforeHeal = r.since(*before)
	}
	convergenceFigures(res)
}

// lastFaultAndHeal returns when the last of the faults began and when the last was healed
// (seconds from the start of the workload; an instantaneous fault heals as it begins).
func lastFaultAndHeal(faults []AppliedFault) (lastFault, lastHeal float64) {
	for _, a := range faults {
		lastFault = max(lastFault, a.AppliedAt)
		lastHeal = max(lastHeal, a.HealedAt, a.AppliedAt)
	}
	return lastFault, lastHeal
}

// convergenceFigures derives the convergence times from when the last fault began, when the
// last one was healed and when the work started before that heal was all final
// (ConvergedBeforeHeal). Both end at that moment, which the report shows with them: after a late
// minor fault (a pg_terminate once everything had settled) both read 0, and that moment tells
// how long before it the work had been final.
func convergenceFigures(res *Result) {
	res.Convergence, res.ConvergenceFromFault = -1, -1
	if g1 := res.invariant(G1); g1 != nil && !g1.Passed {
		return
	}
	res.Convergence = max(0, res.ConvergedBeforeHeal-res.LastHeal)
	res.ConvergenceFromFault = max(0, res.ConvergedBeforeHeal-res.LastFault)
}

// blockedFigures sums how long participants held prepared 2PC transactions.
func (r *run) blockedFigures(ctx context.Context) {
	f := &r.res.Figures
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
}
