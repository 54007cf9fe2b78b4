package chaos

import (
	"reflect"
	"strings"
	"testing"
)

// mixedMinimal runs a saga workload and a 2PC workload at once.
const mixedMinimal = `
name: mixed
topology:
  participant_sims:
    - name: banks
      participants:
        - {name: bank-a, kind: transfer, seed_accounts: 5}
        - {name: bank-b, kind: transfer, seed_accounts: 5}
workloads:
  - {definition: transfer.yaml, count: 10}
  - {kind: 2pc, participants: [bank-a, bank-b], count: 6, rate: 5}
`

func TestMixedWorkloadsParse(t *testing.T) {
	s, err := Parse([]byte(mixedMinimal))
	if err != nil {
		t.Fatal(err)
	}
	if !s.mixed() || s.KindLabel() != "saga+2pc" || s.workloadOf(WorkloadTwoPC).Count != 6 || s.workloadOf(WorkloadSaga).Concurrency != 8 {
		t.Fatalf("workloads %+v", s.Workloads)
	}
	if want := []string{G1, G2, G3, G4, G5, G6, G7, G8, G9, T1}; !reflect.DeepEqual(s.Invariants, want) {
		t.Errorf("invariants %v, want %v: each workload's own", s.Invariants, want)
	}
	sagas, txs := s.generate(1, *s.workloadOf(WorkloadSaga)), s.generate(1, *s.workloadOf(WorkloadTwoPC))
	if len(sagas) != 10 || len(txs) != 6 || sagas[0].ID == txs[0].ID || len(txs[0].Payloads) != 2 {
		t.Errorf("generated %d sagas and %d transactions, first ids %s and %s", len(sagas), len(txs), sagas[0].ID, txs[0].ID)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"workloads:\n", "workload: {count: 3}\nworkloads:\n", "line 10: workloads: give workload: or workloads:, not both"},
		{"{kind: 2pc, participants: [bank-a, bank-b]", "{participants: [bank-a, bank-b]", "line 11: workloads[1].kind: a second saga workload"},
		{"participants: [bank-a, bank-b], count: 6", "participants: [bank-a, bank-z], count: 6", `line 11: workloads[1].participants[1]: "bank-z" is not a participant`},
		{"count: 10}", "count: 0, rate: -1}", "line 10: workloads[0].rate: -1 must be between 0"},
	} {
		_, err := Parse([]byte(strings.Replace(mixedMinimal, tc.from, tc.to, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
}

// In a mixed scenario a participant takes the saga's commands and prepare/commit/abort.
func TestMixedFaultKeys(t *testing.T) {
	body := strings.Replace(mixedMinimal, "{name: bank-b, kind: transfer, seed_accounts: 5}", "{name: bank-b, kind: transfer, seed_accounts: 5, faults: {credit: {latency: 5ms}, commit: {latency: 5ms}}}", 1)
	if _, err := LoadFile(writeScenario(t, body)); err != nil {
		t.Fatalf("credit and commit refused: %v", err)
	}
	_, err := LoadFile(writeScenario(t, strings.Replace(body, "commit:", "comit:", 1)))
	if err == nil || !strings.Contains(err.Error(), `faults.comit: "comit" never fires: the workload (transfer.yaml and workloads[1].participants) sends bank-b only credit, undo_credit, prepare, commit, abort`) {
		t.Errorf("err = %v", err)
	}
}

func TestWorkloadResultsMerge(t *testing.T) {
	var all workloadResult
	all.merge(workloadResult{Requested: 3, Accepted: 2, IDs: []string{"s1", "s2"}, Errors: map[string]int{"Unavailable": 1}}, WorkloadSaga)
	all.merge(workloadResult{Requested: 2, Accepted: 2, IDs: []string{"t1", "t2"}, Errors: map[string]int{"Unavailable": 2}}, WorkloadTwoPC)
	if all.Requested != 5 || all.Accepted != 4 || all.Errors["Unavailable"] != 3 {
		t.Errorf("merged %+v", all)
	}
	if got := all.idsOf(WorkloadSaga, true); !reflect.DeepEqual(got, []string{"s1", "s2"}) {
		t.Errorf("saga ids %v", got)
	}
	if got := all.idsOf(WorkloadTwoPC, true); !reflect.DeepEqual(got, []string{"t1", "t2"}) {
		t.Errorf("2pc ids %v", got)
	}
	if got := all.idsOf(WorkloadSaga, false); len(got) != 4 {
		t.Errorf("ids of an unmixed run %v", got)
	}
}

// A mixed run drives both workloads at once and checks each by its own invariants: G1 counts
// sagas and transactions, T1 the transactions, G2 the sagas.
func TestMixedRunChecksEachWorkload(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs real processes against PostgreSQL and RabbitMQ; skipped with -short")
	}
	s, err := LoadFile(writeScenario(t, `name: tiny-mixed
topology:
  participant_sims:
    - name: banks
      participants:
        - {name: bank-a, kind: transfer, seed_accounts: 5, initial_balance: 500}
        - {name: bank-b, kind: transfer, seed_accounts: 5, initial_balance: 500}
workloads:
  - {definition: transfer.yaml, count: 20, rate: 20, input: {accounts: 5, max_amount: 100}}
  - {kind: 2pc, participants: [bank-a, bank-b], count: 10, rate: 10, input: {accounts: 5, max_amount: 100}}
timeline:
  - {at: 300ms, kind: sigkill, target: banks, duration: 300ms}
`))
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	res := Run(t.Context(), s, Options{BinDir: buildBinaries(t), WorkDir: t.TempDir(), ReportDir: t.TempDir(), Progress: &progress})
	t.Logf("run:\n%s", progress.String())
	if res.Status != StatusPassed {
		t.Fatalf("status %s (%s)", res.Status, res.Reason)
	}
	if res.Workload.Requested != 30 || res.Workload.Accepted != 30 {
		t.Errorf("workload %+v, want 30 of 30 accepted", res.Workload)
	}
	checked := map[string]int{}
	for _, inv := range res.Invariants {
		checked[inv.Name] = inv.Checked
	}
	if checked[G1] != 30 || checked[T1] != 10 || checked[G2]+checked[G3] != 20 {
		t.Errorf("checked %v: want G1 30 (both), T1 10 (transactions), G2+G3 20 (sagas)", checked)
	}
	if res.Final["COMMITTED"]+res.Final["ABORTED"] != 10 || res.Final["COMPLETED"]+res.Final["COMPENSATED"] != 20 {
		t.Errorf("final %v", res.Final)
	}
}
