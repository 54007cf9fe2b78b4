package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// binDir holds the coordinator (also its test build, in testhooks/) and participant-sim built
// once for the tests that run scenarios.
var binDir string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "chaos-test-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir = dir
		code := m.Run()
		if code == 0 {
			// testenv calls the RabbitMQ management API with http.DefaultClient; its idle
			// keep-alive connections are not leaks of the code under test.
			http.DefaultClient.CloseIdleConnections()
			if err := goleak.Find(); err != nil {
				fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// buildBinaries builds the two binaries on first use (tests that need no processes skip it).
func buildBinaries(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(binDir, testHooksDir, "coordinator")); err == nil {
		return binDir
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	if err := goBuild(context.Background(), gobin, root, binDir, true); err != nil {
		t.Fatal(err)
	}
	return binDir
}

const tinyDefinition = `name: transfer
steps:
  - {name: debit, participant: bank-a, action: debit, compensation: refund_debit, timeout: 5s}
  - {name: credit, participant: bank-b, action: credit, compensation: undo_credit, timeout: 5s}
`

// tinyTimeline SIGKILLs bank-b under load and restarts it.
const tinyTimeline = "  - {at: 300ms, kind: sigkill, target: bank-b, duration: 300ms}\n"

// tinyScenario is a small saga scenario: 30 transfers, with the faults of timeline (entries of
// the timeline: list).
func tinyScenario(t *testing.T, settle, timeline string) *Scenario {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "transfer.yaml"), []byte(tinyDefinition), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Parse([]byte(`
name: tiny
topology:
  participant_sims:
    - name: bank-a
      participants: [{name: bank-a, kind: transfer, seed_accounts: 5, initial_balance: 500}]
    - name: bank-b
      participants: [{name: bank-b, kind: transfer, seed_accounts: 5, initial_balance: 500, faults: {credit: {fail_probability: 0.2}}}]
workload:
  definition: transfer.yaml
  count: 30
  rate: 30
  input: {accounts: 5, max_amount: 200}
timeline:
` + timeline + "settle: " + settle + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	return s
}

func runTiny(t *testing.T, broken bool, settle, timeline string) *Result {
	t.Helper()
	if testing.Short() {
		t.Skip("runs real processes against PostgreSQL and RabbitMQ; skipped with -short")
	}
	bins := buildBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress strings.Builder
	res := Run(ctx, tinyScenario(t, settle, timeline), Options{BinDir: bins, Broken: broken, WorkDir: t.TempDir(), ReportDir: t.TempDir(), Progress: &progress})
	t.Logf("run:\n%s", progress.String())
	if res.Status == StatusError || res.Status == StatusSkipped {
		t.Fatalf("run did not happen: %s: %s", res.Status, res.Reason)
	}
	return res
}

func TestTinyScenarioPasses(t *testing.T) {
	t.Parallel()
	res := runTiny(t, false, "60s", tinyTimeline)
	if res.Status != StatusPassed {
		var b strings.Builder
		(&Report{Results: []*Result{res}}).WriteSummary(&b)
		t.Fatalf("status %s, want passed:\n%s", res.Status, b.String())
	}
	if res.Workload.Accepted != 30 {
		t.Errorf("accepted %d of 30", res.Workload.Accepted)
	}
	if res.Convergence < 0 || len(res.Faults) != 1 || res.Faults[0].Error != "" {
		t.Errorf("convergence %v, faults %+v", res.Convergence, res.Faults)
	}
	checkDump(t, res)
	if res.LastFault < 0.3 || res.LastFault > res.LastHeal || res.ConvergenceFromFault < res.Convergence {
		t.Errorf("last fault %v, last heal %v, convergence from fault %v, from heal %v", res.LastFault, res.LastHeal, res.ConvergenceFromFault, res.Convergence)
	}
	for _, inv := range res.Invariants {
		// The tiny definition has no deadline, which G8 says.
		if inv.Checked == 0 && inv.Name != G4 && !(inv.Name == G8 && inv.Detail == "no saga has a deadline") {
			t.Errorf("%s checked nothing", inv.Name)
		}
	}
}

// The deliberately broken build (every coordinator never publishes) must fail with G1 (sagas
// stuck RUNNING) and G5 (outbox rows never published), naming the offenders.
func TestBrokenBuildFailsG1AndG5(t *testing.T) {
	t.Parallel()
	res := runTiny(t, true, "3s", tinyTimeline)
	if res.Status != StatusFailed {
		t.Fatalf("status %s, want failed", res.Status)
	}
	g1, g5 := res.invariant(G1), res.invariant(G5)
	if g1 == nil || g1.Passed || g1.Violations != 30 || !strings.Contains(g1.Offending[0], "RUNNING") {
		t.Errorf("G1 = %+v, want 30 sagas RUNNING", g1)
	}
	if g5 == nil || g5.Passed || !strings.Contains(strings.Join(g5.Offending, "\n"), "never published") {
		t.Errorf("G5 = %+v, want outbox rows never published", g5)
	}
	if res.Convergence != -1 {
		t.Errorf("convergence %v, want -1 (not converged)", res.Convergence)
	}
	var b strings.Builder
	(&Report{Results: []*Result{res}}).WriteSummary(&b)
	for _, want := range []string{"FAILED", "G1 violated", "G5 violated", "never published"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

// A SIGSTOP of a process that is down (killed at 300ms, started again at 2.3s) does not take
// effect: every invariant holds, but the run is inconclusive and names that fault and why.
func TestFaultThatDidNotApplyMakesTheRunInconclusive(t *testing.T) {
	t.Parallel()
	res := runTiny(t, false, "60s", "  - {at: 300ms, kind: sigkill, target: bank-b, duration: 2s}\n"+
		"  - {at: 1s, kind: sigstop, target: bank-b, duration: 200ms}\n")
	for _, inv := range res.Invariants {
		if !inv.Passed {
			t.Fatalf("%s violated: %+v", inv.Name, inv)
		}
	}
	if res.Status != StatusInconclusive || len(res.Ineffective) != 1 {
		t.Fatalf("status %s, ineffective %q; want inconclusive naming one fault", res.Status, res.Ineffective)
	}
	if want := "fault 2 (sigstop bank-b for 200ms at 1s): bank-b is not running"; res.Ineffective[0] != want {
		t.Errorf("ineffective %q, want %q", res.Ineffective[0], want)
	}
	if !strings.Contains(res.Reason, "1 of 2 fault(s) did not take effect") {
		t.Errorf("reason %q", res.Reason)
	}
	if rep := (&Report{Results: []*Result{res}}); rep.ExitCode() != ExitInconclusive {
		t.Errorf("exit code %d, want %d", rep.ExitCode(), ExitInconclusive)
	}
}

// A scenario that needs a private PostgreSQL is skipped, with the reason, where initdb is
// missing; a skipped run does not fail the report.
func TestPrivateInstanceWithoutBinariesIsSkipped(t *testing.T) {
	t.Parallel()
	s, err := Parse([]byte(strings.Replace(minimal, "topology:\n", "topology:\n  private_postgres: true\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	res := Run(context.Background(), s, Options{PostgresBin: filepath.Join(t.TempDir(), "none"), WorkDir: t.TempDir()})
	if res.Status != StatusSkipped || !strings.Contains(res.Reason, "initdb") {
		t.Fatalf("status %s (%s), want skipped naming initdb", res.Status, res.Reason)
	}
	if rep := (&Report{Results: []*Result{res}}); !rep.Passed() {
		t.Error("a skipped run fails the report")
	}
}

// checkDump checks that a run that cleaned up after itself left a dump of its schemas, with
// their rows, in the report directory's dumps/, and that the schemas themselves are gone.
func checkDump(t *testing.T, res *Result) {
	t.Helper()
	if res.DatabaseDump == "" || filepath.Base(filepath.Dir(res.DatabaseDump)) != "dumps" {
		t.Fatalf("database dump %q (error %q), want a file in the report's dumps/", res.DatabaseDump, res.DumpError)
	}
	b, err := os.ReadFile(res.DatabaseDump)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(res.LogDir)
	schema := "chaos_" + base[strings.LastIndex(base, "-")+1:]
	for _, want := range []string{"CREATE TABLE " + schema + ".sagas (", "CREATE TABLE " + schema + "_bank_b.ledger (", "COPY " + schema + ".sagas ", "COPY " + schema + "_bank_a.accounts "} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the dump lacks %q", want)
		}
	}
	if n := strings.Count(string(b), "CREATE SCHEMA "); n != 3 {
		t.Errorf("the dump creates %d schemas, want the coordinator's and two participants'", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname, $1 || '_')`, schema).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d schema(s) of the run left behind", left)
	}
}
