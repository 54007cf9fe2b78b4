package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sagacoord/sagacoord/internal/testenv"
)

// The test binary doubles as sagalab when this variable is set, so the test sees what only the
// real process shows: the exit status reaching the shell and the streams it writes.
const runMainEnv = "SAGALAB_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func runSagalab(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	// Without the environment's database: bench must find none to fail as the test expects.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "SAGACOORD_DATABASE_URL=") })
	cmd.Env = append(env, runMainEnv+"=1")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run sagalab: %v", err)
	}
	return out.String(), errOut.String(), code
}

func TestHelpListsTheLabCommands(t *testing.T) {
	stdout, _, code := runSagalab(t, "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"\n  chaos ", "\n  bench ", "\n  participant-check ", "5  chaos run: a scenario failed", "7  participant-check: a case failed"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("--help lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "\n  saga ") {
		t.Errorf("sagalab --help lists sagactl's saga command:\n%s", stdout)
	}
}

// The exit codes of the commands that moved from sagactl are kept.
func TestExitCodesReachTheShell(t *testing.T) {
	stdout, _, code := runSagalab(t, "chaos", "validate", filepath.Join("..", "..", "scenarios", "00-baseline.yaml"))
	if code != 0 || !strings.HasPrefix(stdout, "baseline: ok") {
		t.Fatalf("validate a good scenario: exit %d, stdout %q", code, stdout)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: x\nworkload: {cuont: 3}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runSagalab(t, "chaos", "validate", bad)
	if code != 1 || !strings.HasPrefix(stderr, "sagalab: chaos validate: scenario "+bad) || !strings.Contains(stderr, "line 2") {
		t.Fatalf("validate a bad scenario: exit %d, stderr %q; want 1 naming the file and line 2", code, stderr)
	}

	_, stderr, code = runSagalab(t, "chaos", "run", filepath.Join("..", "..", "scenarios"), "--tag", "no-such-tag")
	if code != 1 || !strings.Contains(stderr, "no scenario matches") {
		t.Fatalf("run with no match: exit %d, stderr %q", code, stderr)
	}

	_, stderr, code = runSagalab(t, "bench")
	if code != 1 || !strings.Contains(stderr, "--database-url") {
		t.Fatalf("bench without a database: exit %d, stderr %q", code, stderr)
	}
}

// validate takes several files and directories, reports each good scenario and every problem
// with its file and line, and exits 1 if any file has one.
func TestValidateTakesSeveralPaths(t *testing.T) {
	scenarios := filepath.Join("..", "..", "scenarios")
	stdout, stderr, code := runSagalab(t, "chaos", "validate", filepath.Join(scenarios, "00-baseline.yaml"), filepath.Join(scenarios, "05-duplicates.yaml"), scenarios)
	if code != 0 || !strings.HasPrefix(stdout, "baseline: ok") || !strings.Contains(stdout, "\nduplicates: ok") || strings.Count(stdout, "baseline: ok") != 2 {
		t.Fatalf("validate two files and a dir: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	dir := t.TempDir()
	good := "topology:\n  participant_sims: [{name: s, participants: [{name: p, kind: noop}]}]\nworkload: {definition: def.yaml}\n"
	files := map[string]string{
		"def.yaml":  "name: t\nsteps:\n  - {name: a, participant: p, action: act, timeout: 1s}\n",
		"good.yaml": good,
		"bad.yaml": strings.Replace(good, "kind: noop}", "kind: noop, faults: {acct: {latency: 1ms}}}", 1) +
			"timeline:\n  - {at: 1s, kind: pg_terminate, target: s, duration: 2s}\n",
		"nodef.yaml": strings.Replace(good, "def.yaml", "gone.yaml", 1),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	in := func(name string) string { return filepath.Join(dir, name) }
	stdout, stderr, code = runSagalab(t, "chaos", "validate", in("good.yaml"), in("bad.yaml"), in("nodef.yaml"), in("missing.yaml"))
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, stderr)
	}
	for _, want := range []string{
		"scenario " + in("bad.yaml") + ": line 2: topology.participant_sims[0].participants[0].faults.acct: \"acct\" never fires",
		"scenario " + in("bad.yaml") + ": line 5: timeline[0].duration: pg_terminate is instantaneous",
		"scenario " + in("nodef.yaml") + ": line 3: workload.definition: open " + in("gone.yaml") + ": no such file",
		in("missing.yaml") + ": no such file",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if stdout != "good: ok (saga workload, 0 fault(s))\n" {
		t.Errorf("stdout %q, want the good scenario alone", stdout)
	}
}

// participant-check exits 1 without a participant, and 7 when a case fails: here every case, as
// no worker consumes the vhost, and each says why.
func TestParticipantCheckExitCodes(t *testing.T) {
	_, stderr, code := runSagalab(t, "participant-check")
	if code != 1 || !strings.Contains(stderr, "--participant is required") {
		t.Fatalf("without --participant: exit %d, stderr %q", code, stderr)
	}
	stdout, stderr, code := runSagalab(t, "participant-check", "--participant", "nobody", "--amqp-url", testenv.VHost(t), "--case-timeout", "2s", "--query-timeout", "1s")
	if code != 7 || !strings.Contains(stdout, "FAIL  happy-path") || !strings.Contains(stdout, "is the worker running on this vhost?") || !strings.Contains(stdout, "0 of 11 cases passed") {
		t.Fatalf("without a worker: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
