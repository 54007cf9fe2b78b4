package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The test binary doubles as sagactl when this variable is set, so the test can check what only
// the real process shows: the exit status reaching the shell and the streams it writes.
const runMainEnv = "SAGACTL_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func runSagactl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run sagactl: %v", err)
	}
	return out.String(), errOut.String(), code
}

func TestExitCodesReachTheShell(t *testing.T) {
	stdout, _, code := runSagactl(t, "--help")
	if code != 0 || !strings.Contains(stdout, "Exit codes:") {
		t.Fatalf("--help: exit %d, stdout %q", code, stdout)
	}

	_, stderr, code := runSagactl(t, "saga", "strat")
	if code != 1 || !strings.HasPrefix(stderr, "sagactl: saga: unknown command") {
		t.Fatalf("unknown command: exit %d, stderr %q", code, stderr)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = runSagactl(t, "--addr", addr, "saga", "get", "x")
	if code != 2 || !strings.HasPrefix(stderr, "sagactl: saga get: cannot reach coordinator at "+addr) {
		t.Fatalf("unreachable: exit %d, stderr %q", code, stderr)
	}
}
