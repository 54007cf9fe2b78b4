package chaos

import (
	"strings"
	"testing"
)

func TestSumCounters(t *testing.T) {
	body := `# HELP sagacoord_participant_commands_total Commands decided.
# TYPE sagacoord_participant_commands_total counter
sagacoord_participant_commands_total{kind="action",outcome="succeeded",participant="bank-a"} 12
sagacoord_participant_commands_total{kind="compensate",outcome="succeeded",participant="a}b"} 3
sagacoord_participant_commands_total 1.5
sagacoord_participant_commands_totalx 100
sagacoord_db_commits_total 40
`
	got, err := sumCounters(strings.NewReader(body), simWork)
	if err != nil || got != 16.5 {
		t.Fatalf("sum = %v, %v; want 16.5", got, err)
	}
	if _, err := sumCounters(strings.NewReader("sagacoord_participant_commands_total{} x\n"), simWork); err == nil {
		t.Error("a sample that is not a number is accepted")
	}
}

// expect.recovered names processes that a fault hits; R1 is checked when it is set and refused
// without it; the metrics listener is the runner's.
func TestRecoveredIsChecked(t *testing.T) {
	base := minimal + "timeline:\n  - {at: 1s, kind: sigkill, target: banks, duration: 1s}\n"
	s, err := Parse([]byte(base + "expect: {recovered: [banks]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Invariants[len(s.Invariants)-1] != R1 {
		t.Errorf("invariants %v: R1 not added for expect.recovered", s.Invariants)
	}
	for _, tc := range []struct{ yaml, want string }{
		{base + "expect: {recovered: [c1]}\n", "line 14: expect.recovered[0]: nothing kills, freezes or restarts c1"},
		{base + "expect: {recovered: [nobody]}\n", `line 14: expect.recovered[0]: "nobody" is not a coordinator or participant_sim name`},
		{base + "invariants: [G1, R1]\n", "line 14: invariants: R1 checks the processes of expect.recovered"},
		{strings.Replace(base, "    - name: banks\n", "    - name: banks\n      flags: [--metrics-listen=:9]\n", 1), "flag --metrics-listen is set by the runner"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
	if _, err := Parse([]byte(strings.Replace(base, "  participant_sims:", "  coordinators: [{name: c1, restart_on_exit: 1s}]\n  participant_sims:", 1) + "expect: {recovered: [c1]}\n")); err != nil {
		t.Errorf("a coordinator that restarts after crashing on its own is refused: %v", err)
	}
}

// R1 passes for a participant-sim killed and started again, or frozen and resumed, that handled
// commands after it, and fails, naming why, for one killed for good.
func TestRecoveryCheckOnRealProcesses(t *testing.T) {
	t.Parallel()
	back := runTiny(t, false, "60s", tinyTimeline+"expect: {recovered: [bank-b]}\n")
	r1 := back.invariant(R1)
	if r1 == nil || !r1.Passed || !strings.Contains(r1.Detail, "bank-b: start 2, ready,") || !strings.Contains(r1.Detail, "unit(s) of work after the heal") {
		t.Errorf("R1 after a kill and restart = %+v, want passed at start 2 with work after the heal", r1)
	}
	frozen := runTiny(t, false, "60s", "  - {at: 300ms, kind: sigstop, target: bank-b, duration: 300ms}\nexpect: {recovered: [bank-b]}\n")
	r1 = frozen.invariant(R1)
	if r1 == nil || !r1.Passed || !strings.Contains(r1.Detail, "bank-b: start 1, ready,") {
		t.Errorf("R1 after a freeze = %+v, want passed, the same instance working after SIGCONT", r1)
	}
	gone := runTiny(t, false, "5s", "  - {at: 300ms, kind: sigkill, target: bank-b}\nexpect: {recovered: [bank-b]}\n")
	r1 = gone.invariant(R1)
	if r1 == nil || r1.Passed || !strings.Contains(strings.Join(r1.Offending, ""), "bank-b: not running at the check") {
		t.Errorf("R1 after a kill for good = %+v, want failed: not running", r1)
	}
}
