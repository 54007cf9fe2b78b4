package chaos

import (
	"context"
	"strings"
	"testing"
	"time"
)

const twopcMinimal = `
name: tiny2pc
topology:
  participant_sims:
    - name: banks
      participants:
        - {name: bank-a, kind: transfer, seed_accounts: 5}
        - {name: bank-b, kind: transfer, seed_accounts: 5}
workload: {kind: 2pc, participants: [bank-a, bank-b], count: 10}
timeline:
`

func TestWhenIsChecked(t *testing.T) {
	s, err := Parse([]byte(twopcMinimal + "  - {at: 1s, when: {twopc_committing_at_least: 3}, timeout: 20s, kind: sigkill, target: c1, duration: 1s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := s.Schedule(1)[0]
	if f.When == nil || *f.When.TwoPCCommittingAtLeast != 3 || f.Timeout.D() != 20*time.Second || !strings.HasSuffix(describe(f), "when twopc_committing_at_least 3") {
		t.Fatalf("fault %+v (%s)", f, describe(f))
	}
	for _, tc := range []struct{ entry, want string }{
		{"{when: {twopc_comitting: 3}, kind: sigkill, target: c1}", `line 11: timeline[0].when.twopc_comitting: unknown condition "twopc_comitting": when: takes one of twopc_committing_at_least, outbox_rows_above, sagas_open_at_least, step_dispatched`},
		{"{when: {}, kind: sigkill, target: c1}", "line 11: timeline[0].when: give one condition"},
		{"{when: {outbox_rows_above: 1, twopc_committing_at_least: 1}, kind: sigkill, target: c1}", "timeline[0].when: one condition per fault, not outbox_rows_above and twopc_committing_at_least"},
		{"{when: {twopc_committing_at_least: 0}, kind: sigkill, target: c1}", "timeline[0].when.twopc_committing_at_least: 0 must be between 1 and 1000000"},
		{"{when: {sagas_open_at_least: 2}, kind: sigkill, target: c1}", "timeline[0].when.sagas_open_at_least: the scenario runs no saga workload"},
		{"{timeout: 5s, kind: sigkill, target: c1}", "line 11: timeline[0].timeout: timeout: is how long a when: condition is awaited; it needs when:"},
		{"{when: {outbox_rows_above: 5}, timeout: 5, kind: sigkill, target: c1}", "line 11: timeline[0].timeout: a duration is a string with a unit"},
		{"{when: {outbox_rows_above: 5}, every: 1s, times: 2, kind: pg_terminate, target: c1}", "timeline[0].when: a fault triggered by when: happens once"},
		{"{when: outbox, kind: sigkill, target: c1}", "line 11: timeline[0].when: when: is a mapping"},
	} {
		_, err := Parse([]byte(twopcMinimal + "  - " + tc.entry + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.entry, err, tc.want)
		}
	}
}

// step_dispatched names the workload's definition and one of its steps, checked against the
// definition file.
func TestStepDispatchedNamesARealStep(t *testing.T) {
	entry := "  - {when: {step_dispatched: {definition: transfer, step: credit}}, kind: sigkill, target: banks, duration: 1s}\n"
	base := strings.Replace(strictBase, "timeline:\n  - {at: 1s, kind: sigkill, target: banks, duration: 1s}\n", "timeline:\n", 1)
	if _, err := LoadFile(writeScenario(t, base+entry)); err != nil {
		t.Fatalf("refused: %v", err)
	}
	_, err := LoadFile(writeScenario(t, base+strings.Replace(strings.Replace(entry, "step: credit", "step: crdit", 1), "definition: transfer,", "definition: transfr,", 1)))
	for _, want := range []string{`line 11: timeline[0].when.step_dispatched.definition: "transfr" is not the saga workload's definition, "transfer"`, `line 11: timeline[0].when.step_dispatched.step: "crdit" is not a step of transfer (debit, credit)`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
}

// A condition that never holds leaves the fault unapplied, with why, and the run INCONCLUSIVE;
// one that holds applies it.
func TestWhenOnARealRun(t *testing.T) {
	t.Parallel()
	res := runTiny(t, false, "60s", "  - {when: {step_dispatched: {definition: transfer, step: credit}}, kind: pg_terminate, target: c1}\n"+
		"  - {when: {outbox_rows_above: 100000}, timeout: 1s, kind: pg_terminate, target: c1}\n")
	if len(res.Faults) != 2 {
		t.Fatalf("faults %+v", res.Faults)
	}
	if res.Faults[0].Error != "" || res.Faults[0].AppliedAt <= 0 {
		t.Errorf("step_dispatched: %+v, want applied once a credit was sent", res.Faults[0])
	}
	if res.Status != StatusInconclusive || !strings.Contains(res.Faults[1].Error, "condition outbox_rows_above 100000 not met within 1s after 0s") {
		t.Errorf("status %s, fault 2 %+v; want inconclusive, the condition not met", res.Status, res.Faults[1])
	}
}

// conditionHolds on a scenario without a database is refused rather than hanging.
func TestConditionNeedsOne(t *testing.T) {
	if _, err := (&run{}).conditionHolds(context.Background(), &Condition{}); err == nil {
		t.Error("an empty condition holds")
	}
}
