package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/sagacoord/sagacoord/client"
	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// Defaults of the global flags.
const (
	// DefaultAddr is the coordinator address when neither --addr nor SAGACOORD_ADDR is set.
	DefaultAddr = "127.0.0.1:7233"
	// AddrEnv names the environment variable that overrides DefaultAddr.
	AddrEnv = "SAGACOORD_ADDR"
	// DefaultTimeout bounds each unary call (not watches).
	DefaultTimeout = 10 * time.Second
)

// CommandFunc builds a subcommand of a Program's root command, such as `saga` or `chaos`. It
// receives the App to reach the global flags, the output streams and the connection.
type CommandFunc func(*App) *cobra.Command

// Options configure Run. Zero values mean the process's own streams and environment.
type Options struct {
	// Stdin, Stdout and Stderr default to the process's.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv defaults to os.Getenv.
	Getenv func(string) string
	// Now defaults to time.Now; it is used for the elapsed time of running steps.
	Now func() time.Time
	// DialOptions are given to client.New (for example a custom dialer or interceptors).
	DialOptions []grpc.DialOption
}

func (o Options) withDefaults() Options {
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// App is what every subcommand shares for one run: the global flags, the streams and the lazily
// dialled connection to the coordinator.
type App struct {
	opts Options

	// Addr is the coordinator's host:port (--addr).
	Addr string
	// Output is "table" or "json" (-o).
	Output string
	// Timeout bounds each unary call (--timeout).
	Timeout time.Duration

	// sec is the connection's TLS and token (security.go).
	sec  security
	conn *client.Conn
	// started is set once the flags and arguments passed their checks: an error after that is
	// not a command-line mistake and gets no pointer to --help.
	started bool
}

// Stdout is where results go.
func (a *App) Stdout() io.Writer { return a.opts.Stdout }

// Stderr is where progress notes and errors go.
func (a *App) Stderr() io.Writer { return a.opts.Stderr }

// Stdin is read for "-f -".
func (a *App) Stdin() io.Reader { return a.opts.Stdin }

// JSON reports whether -o json was given.
func (a *App) JSON() bool { return a.Output == outputJSON }

// Client returns the connection to the coordinator, creating it on first use. Creating it does
// not dial: the first call does, and a coordinator that cannot be reached fails that call with
// Unavailable.
func (a *App) Client() (*client.Conn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	secure, err := a.sec.dialOptions()
	if err != nil {
		return nil, err
	}
	conn, err := client.New(a.Addr, append(slices.Clone(a.opts.DialOptions), secure...)...)
	if err != nil {
		return nil, UsageErrorf("invalid --addr %q: %v", a.Addr, err)
	}
	a.conn = conn
	return conn, nil
}

// CallContext bounds one unary call by --timeout.
func (a *App) CallContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.Timeout)
}

// RPCError turns an error from a gRPC call into an *ExitError with exit code ExitServer (or
// ExitInterrupted), telling an unreachable coordinator from one that answered with an error.
func (a *App) RPCError(ctx context.Context, err error) error {
	return a.rpcErrorOf(ctx, "", err)
}

// rpcErrorOf is RPCError naming the service an Unimplemented answer lacks.
func (a *App) rpcErrorOf(ctx context.Context, service string, err error) error {
	reachable := a.conn != nil && a.conn.ClientConn().GetState() == connectivity.Ready
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && !reachable && ctx.Err() == nil {
		if problem, ok := a.sec.tlsProblem(st.Message()); ok {
			// The handshake failed, so no call reached the coordinator: not indeterminate.
			return &ExitError{Code: ExitServer, Err: fmt.Errorf("cannot connect to coordinator at %s: %s", a.Addr, problem)}
		}
	}
	return rpcError(ctx, a.Addr, service, reachable, err)
}

func (a *App) sagaClient() (sagacoordv1.SagaServiceClient, error) {
	conn, err := a.Client()
	if err != nil {
		return nil, err
	}
	return conn.Saga, nil
}

func (a *App) txClient() (sagacoordv1.TwoPCServiceClient, error) {
	conn, err := a.Client()
	if err != nil {
		return nil, err
	}
	return conn.TwoPC, nil
}

func (a *App) close() {
	if a.conn != nil {
		_ = a.conn.Close()
		a.conn = nil
	}
}

// commandLineError marks mistakes in flags and arguments, which deserve a pointer to --help; a
// bad input file does not.
type commandLineError struct{ err error }

func (e *commandLineError) Error() string { return e.err.Error() }
func (e *commandLineError) Unwrap() error { return e.err }

func isCommandLineError(err error, started bool) bool {
	var ce *commandLineError
	if errors.As(err, &ce) {
		return true
	}
	return !started // cobra's own errors: unknown command or flag
}

func flagError(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: &commandLineError{fmt.Errorf(format, args...)}}
}

// exactArgs is cobra.ExactArgs with names in the message and the usage exit code.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return flagError("want %d argument(s) (%s), got %d", len(names), strings.Join(names, ", "), len(args))
		}
		for i, a := range args {
			if strings.TrimSpace(a) == "" {
				return flagError("argument %s must not be empty", names[i])
			}
		}
		return nil
	}
}

// noArgs refuses positional arguments with the usage exit code.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return flagError("unexpected argument %q", args[0])
	}
	return nil
}

// flagChanged reports whether the user set a flag.
func flagChanged(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && f.Changed
}

// groupCommand is a command that only holds subcommands. Without one it prints help; with an
// unknown one it fails with the usage exit code (cobra would print help and exit 0, which would
// hide a typo from a script).
func groupCommand(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return flagError("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	c.AddCommand(subs...)
	return c
}

// readInput reads a file named by a flag, "-" meaning standard input. A missing or unreadable
// file is a usage error that names it.
func (a *App) readInput(name string) ([]byte, error) {
	if name == "-" {
		b, err := io.ReadAll(a.Stdin())
		if err != nil {
			return nil, UsageErrorf("read standard input: %v", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, UsageErrorf("read %v", err) // *PathError names the file: "open x.yaml: no such file"
	}
	return b, nil
}
