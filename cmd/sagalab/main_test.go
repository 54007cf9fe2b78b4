package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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
	for _, want := range []string{"\n  chaos ", "\n  bench ", "5  chaos run: a scenario failed"} {
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
