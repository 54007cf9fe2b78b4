package main

import (
	"strings"
	"testing"
)

// runCLI runs the command line in-process and returns its exit code and streams.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestExitCodesAndHelp(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want string // in stderr
	}{
		{nil, 2, `"serve" serves the gRPC API`},
		{[]string{"--help"}, 0, "Available Commands"},
		{[]string{"help"}, 0, "Available Commands"},
		{[]string{"bogus"}, 2, `coordinator: unknown command "bogus"`},
		{[]string{"serve", "--help"}, 0, "--database-url string"},
		{[]string{"serve", "--bogus"}, 2, "coordinator serve: unknown flag: --bogus"},
		{[]string{"serve", "--log-level", "loud"}, 2, `coordinator: --log-level "loud": must be debug, info, warn or error`},
		// One dash, as the standard flag package accepted.
		{[]string{"serve", "-log-level=loud"}, 2, `--log-level "loud"`},
		// Refused before anything connects.
		{[]string{"serve", "--listen", "0.0.0.0:0"}, 1, "coordinator: listen address 0.0.0.0:0 is not a loopback address"},
		{[]string{"serve", "--credentials-file", "creds.yaml"}, 1, "--credentials-file needs TLS"},
		{[]string{"migrate"}, 2, "coordinator migrate: want up, down [N] or status"},
		{[]string{"migrate", "sideways"}, 2, `unknown subcommand "sideways"`},
		{[]string{"migrate", "up", "--help"}, 0, "--database-url string"},
	} {
		code, stdout, stderr := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) {
			t.Errorf("coordinator %q: exit %d, want %d; stderr lacks %q?\n%s", tt.args, code, tt.code, tt.want, stderr)
		}
		if stdout != "" {
			t.Errorf("coordinator %q wrote %q on stdout; help and errors go to stderr", tt.args, stdout)
		}
	}
}

// The environment fills what the command line leaves out, and --help never shows its values.
func TestEnvironment(t *testing.T) {
	t.Setenv("SAGACOORD_DATABASE_URL", "postgres://u:secret@db:5432/x")
	t.Setenv("SAGACOORD_LOG_LEVEL", "loud")
	_, _, stderr := runCLI(t, "serve", "--help")
	if strings.Contains(stderr, "secret") {
		t.Errorf("serve --help shows a URL from the environment:\n%s", stderr)
	}
	code, _, stderr := runCLI(t, "serve")
	if code != 2 || !strings.Contains(stderr, `--log-level "loud"`) {
		t.Errorf("SAGACOORD_LOG_LEVEL=loud: exit %d, stderr %q; want 2 and the level named", code, stderr)
	}
	t.Setenv("SAGACOORD_MIGRATE", "maybe")
	code, _, stderr = runCLI(t, "serve", "--log-level", "info")
	if code != 2 || !strings.Contains(stderr, "$SAGACOORD_MIGRATE (for --migrate)") {
		t.Errorf("SAGACOORD_MIGRATE=maybe: exit %d, stderr %q; want 2 and the variable named", code, stderr)
	}
}

// The test hooks exist only in a build with -tags testhooks: the shipped binary neither accepts
// nor mentions them.
func TestTestHooksOnlyInATestBuild(t *testing.T) {
	_, _, help := runCLI(t, "serve", "--help")
	for _, flag := range []string{"--test-disable-outbox", "--test-crash-after-confirm", "--test-crash-before-decision"} {
		if got := strings.Contains(help, flag); got != wantTestHooks {
			t.Errorf("serve --help mentions %s: %v; want %v in this build (testhooks tag %v)", flag, got, wantTestHooks, wantTestHooks)
		}
	}
	if strings.Contains(help, "TEST ONLY") != wantTestHooks {
		t.Errorf("serve --help and TEST ONLY: want mentioned = %v:\n%s", wantTestHooks, help)
	}
	if !wantTestHooks {
		code, _, stderr := runCLI(t, "serve", "--test-disable-outbox")
		if code != 2 || !strings.Contains(stderr, "unknown flag: --test-disable-outbox") {
			t.Errorf("serve --test-disable-outbox: exit %d, stderr %q; want 2, unknown flag", code, stderr)
		}
	}
}
