package cli

import (
	"context"
	"net"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/testenv"
)

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

func TestUnreachableCoordinator(t *testing.T) {
	t.Parallel()
	addr := closedAddr(t)
	for _, args := range [][]string{
		{"saga", "get", sagaID},
		{"saga", "watch", sagaID},
		{"saga", "list", "--all"},
		{"definition", "list"},
		{"tx", "get", sagaID},
	} {
		r := sagactl(t, addr, args...)
		requireExit(t, ExitServer, r)
		require.Regexp(t, `^sagactl: [a-z ]+: cannot reach coordinator at `+addr+`: dial tcp `+addr+`: connect: connection refused\n$`, r.stderr)
	}
}

func TestStartUnreachableSaysHowToRepeat(t *testing.T) {
	t.Parallel()
	r := sagactl(t, closedAddr(t), "saga", "start", "order", "--id", sagaID)
	requireExit(t, ExitServer, r)
	require.Contains(t, r.stderr, "cannot reach coordinator at")
	require.Contains(t, r.stderr, "repeating with --id "+sagaID+" is safe")
}

// A coordinator that answers Unavailable itself (its database is down) is reachable: the code
// and message are printed as for any other server error.
func TestServerUnavailableIsNotUnreachable(t *testing.T) {
	t.Parallel()
	addr := serve(t, &fakeSaga{get: func(context.Context, *sagacoordv1.GetSagaRequest) (*sagacoordv1.GetSagaResponse, error) {
		return nil, status.Error(codes.Unavailable, "database unavailable")
	}}, nil)
	r := sagactl(t, addr, "saga", "get", sagaID)
	requireExit(t, ExitServer, r)
	require.Equal(t, "sagactl: saga get: Unavailable: database unavailable\n", r.stderr)
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	addr := serve(t, &fakeSaga{get: func(ctx context.Context, _ *sagacoordv1.GetSagaRequest) (*sagacoordv1.GetSagaResponse, error) {
		<-ctx.Done() // never answers; the client's deadline ends the call
		return nil, ctx.Err()
	}}, nil)
	r := sagactl(t, addr, "--timeout", "200ms", "saga", "get", sagaID)
	requireExit(t, ExitServer, r)
	require.Contains(t, r.stderr, "sagactl: saga get: DeadlineExceeded:")
	require.Contains(t, r.stderr, "raise --timeout")
}

func TestAddrFromEnvironment(t *testing.T) {
	t.Parallel()
	addr := serve(t, &fakeSaga{get: func(context.Context, *sagacoordv1.GetSagaRequest) (*sagacoordv1.GetSagaResponse, error) {
		return &sagacoordv1.GetSagaResponse{Saga: sampleSaga()}, nil
	}}, nil)
	r := sagactlWith(t, runOpts{env: map[string]string{AddrEnv: addr}}, "", "saga", "get", sagaID)
	requireExit(t, ExitOK, r)

	// --addr wins over the environment.
	r = sagactlWith(t, runOpts{env: map[string]string{AddrEnv: closedAddr(t)}}, addr, "saga", "get", sagaID)
	requireExit(t, ExitOK, r)

	// Without either, the built-in default.
	app := &App{opts: Options{Getenv: func(string) string { return "" }}.withDefaults()}
	require.Equal(t, DefaultAddr, newRootCommand(app, sagactlProgram).PersistentFlags().Lookup("addr").DefValue)
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"sagas"}, `sagactl: unknown command "sagas" for "sagactl"`},
		{[]string{"saga", "strat"}, `sagactl: saga: unknown command "strat" for "sagactl saga"`},
		{[]string{"saga", "get"}, "sagactl: saga get: want 1 argument(s) (ID), got 0"},
		{[]string{"saga", "get", "a", "b"}, "sagactl: saga get: want 1 argument(s) (ID), got 2"},
		{[]string{"saga", "get", " "}, "argument ID must not be empty"},
		{[]string{"saga", "list", "--bogus"}, "sagactl: saga list: unknown flag: --bogus"},
		{[]string{"saga", "list", "extra"}, `unexpected argument "extra"`},
		{[]string{"-o", "yaml", "saga", "list"}, `sagactl: saga list: invalid --output "yaml": want table or json`},
		{[]string{"--timeout", "0s", "saga", "list"}, "invalid --timeout 0s: must be positive"},
		{[]string{"--timeout", "ten", "saga", "list"}, `invalid argument "ten" for "--timeout" flag`},
		{[]string{"--addr", "", "saga", "list"}, "--addr must not be empty"},
	} {
		r := sagactl(t, "", tt.args...)
		requireExit(t, ExitUsage, r)
		require.Contains(t, r.stderr, tt.msg, "args %q", tt.args)
		require.Contains(t, r.stderr, "--help' for usage.", "args %q", tt.args)
		require.Empty(t, r.stdout)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {}, {"saga"}, {"saga", "start", "--help"}, {"help", "tx"}} {
		r := sagactl(t, "", args...)
		requireExit(t, ExitOK, r)
		require.Contains(t, r.stdout, "Usage:")
	}
	r := sagactl(t, "", "definition", "apply", "--help")
	require.Contains(t, r.stdout, "compensation_retry:")
	r = sagactl(t, "", "--help")
	require.Contains(t, r.stdout, "4  the watched saga ended FAILED")
	for _, lab := range []string{"chaos", "bench"} {
		require.NotContains(t, r.stdout, "\n  "+lab+" ", "sagactl lists the lab's command %s", lab)
	}
}

// Another program (sagalab) gets the global flags and the error format, and its commands pick
// exit codes with ExitError.
func TestOtherProgram(t *testing.T) {
	t.Parallel()
	var out, errOut testenv.Buffer
	prog := Program{Name: "sagalab", Commands: []CommandFunc{func(app *App) *cobra.Command {
		chaos := &cobra.Command{Use: "chaos"}
		chaos.AddCommand(&cobra.Command{Use: "run", RunE: func(cmd *cobra.Command, _ []string) error {
			_, _ = cmd.OutOrStdout().Write([]byte("addr " + app.Addr + "\n"))
			return &ExitError{Code: 5, Err: errStr("invariant G3 violated")}
		}})
		return chaos
	}}}
	code := RunProgram(t.Context(), prog, []string{"--addr", "10.0.0.1:1", "chaos", "run"}, Options{
		Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" },
	})
	require.Equal(t, 5, code)
	require.Equal(t, "addr 10.0.0.1:1\n", out.String())
	require.Equal(t, "sagalab: chaos run: invariant G3 violated\n", errOut.String())

	var out2, errOut2 testenv.Buffer
	code = RunProgram(t.Context(), prog, []string{"saga", "list"}, Options{Stdout: &out2, Stderr: &errOut2, Getenv: func(string) string { return "" }})
	require.Equal(t, ExitUsage, code, "sagactl's commands are not sagalab's")
	require.Contains(t, errOut2.String(), `sagalab: unknown command "saga" for "sagalab"`)
}

type errStr string

func (e errStr) Error() string { return string(e) }
