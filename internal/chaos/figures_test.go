package chaos

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// convergenceResult is a passed run with the faults given, where everything started before the
// last heal was final at finalAt (seconds).
func convergenceResult(t *testing.T, finalAt float64, faults ...AppliedFault) *Result {
	t.Helper()
	x := sampleReport(t).Results[0]
	x.Faults = faults
	x.LastFault, x.LastHeal = lastFaultAndHeal(faults)
	x.ConvergedBeforeHeal = finalAt
	convergenceFigures(x)
	return x
}

func TestConvergenceFromTheFaultAndTheHeal(t *testing.T) {
	blackhole := AppliedFault{ScheduledFault: ScheduledFault{Fault: Fault{Kind: FaultBlackhole, Target: "banks->rabbitmq", At: Duration(5 * time.Second), Duration: Duration(10 * time.Second)}}, AppliedAt: 5, HealedAt: 15}
	lateTerminate := AppliedFault{ScheduledFault: ScheduledFault{Fault: Fault{Kind: FaultPGTerminate, Target: "c1", At: Duration(40 * time.Second)}}, AppliedAt: 40, HealedAt: 40}

	long := convergenceResult(t, 17, blackhole)
	if long.LastFault != 5 || long.LastHeal != 15 || long.ConvergenceFromFault != 12 || long.Convergence != 2 {
		t.Errorf("one partition: last fault %v, heal %v, from fault %v, from heal %v; want 5, 15, 12, 2",
			long.LastFault, long.LastHeal, long.ConvergenceFromFault, long.Convergence)
	}
	// A late pg_terminate after everything had settled: both times are 0, and the report says
	// when the work was final, before that fault.
	late := convergenceResult(t, 38, blackhole, lateTerminate)
	if late.LastFault != 40 || late.LastHeal != 40 || late.ConvergenceFromFault != 0 || late.Convergence != 0 {
		t.Errorf("late fault: last fault %v, heal %v, from fault %v, from heal %v; want 40, 40, 0, 0",
			late.LastFault, late.LastHeal, late.ConvergenceFromFault, late.Convergence)
	}
	if got := finalAtString(late); got != "38.0s (before the last fault)" {
		t.Errorf("final at %q", got)
	}
	stuck := convergenceResult(t, 20, blackhole)
	stuck.Invariants[0] = InvariantResult{Name: G1, Passed: false}
	convergenceFigures(stuck)
	if stuck.Convergence != -1 || stuck.ConvergenceFromFault != -1 || finalAtString(stuck) != "never" {
		t.Errorf("G1 failed: %v, %v, %q; want -1, -1, never", stuck.Convergence, stuck.ConvergenceFromFault, finalAtString(stuck))
	}

	rep := &Report{Results: []*Result{long, late}}
	var sum bytes.Buffer
	rep.WriteSummary(&sum)
	for _, want := range []string{"FROM-FAULT", "FROM-HEAL", "ALL-FINAL-AT", "12.0s", "2.0s", "17.0s", "38.0s (before the last fault)"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
	var html bytes.Buffer
	if err := rep.HTML(&html); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<td class="conv-fault">12.0s</td><td class="conv-heal">2.0s</td><td class="final-at">17.0s</td>`,
		"The last fault began at 5.0s and the last was healed at 15.0s", "convergence 12.0s after the last fault began, 2.0s after the last heal"} {
		if !strings.Contains(html.String(), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	b, err := json.Marshal(long)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"last_fault_s":5`, `"last_heal_s":15`, `"converged_before_heal_s":17`, `"convergence_s":2`, `"convergence_from_fault_s":12`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("JSON lacks %s", want)
		}
	}
}

// A process that exits on its own (a crash point of the scenario) tells the run, which counts
// that moment as the start of a fault.
func TestACrashOnItsOwnIsReported(t *testing.T) {
	p := sleeper(t)
	crashed := make(chan struct{})
	p.mu.Lock()
	p.crashed = func(*process) { close(crashed) }
	p.mu.Unlock()
	if err := p.cmd.Process.Kill(); err != nil { // not through p: the process dies unexpectedly
		t.Fatal(err)
	}
	<-crashed
}
