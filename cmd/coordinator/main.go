// Command coordinator runs the sagacoord coordinator.
//
//	coordinator serve   [flags]   serve the gRPC API and drive sagas
//	coordinator migrate up|down|status [flags]
//
// Most flags have an environment variable; see --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sagacoord/sagacoord/internal/cmdline"
	"github.com/sagacoord/sagacoord/internal/coordinator"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes: 0 success, 1 the coordinator or a migration failed, 2 a bad command line, 3
// `migrate status` found the schema behind or ahead of the binary.
const (
	exitFailed = 1
	exitUsage  = 2
	exitBehind = 3
)

// exitError ends the process with code, after printing msg on stderr when there is one.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func fail(code int, format string, args ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, args...)}
}

// run runs the command line args (without the program name) and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(cmdline.DoubleDash(root, args))
	err := root.ExecuteContext(ctx)
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(stderr, ee.msg)
		}
		return ee.code
	default:
		fmt.Fprintln(stderr, "coordinator:", err)
		return exitUsage
	}
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "coordinator",
		Short: "The sagacoord coordinator",
		Long: `coordinator runs the sagacoord coordinator: "serve" serves the gRPC API (sagacoord.v1) and
drives sagas; "migrate up", "migrate down [N]" and "migrate status" apply, revert and show the
schema migrations. Run "coordinator serve --help" for the flags.`,
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				fmt.Fprintf(stderr, "coordinator: unknown command %q\n\n", args[0])
			}
			_ = cmd.Help()
			return &exitError{code: exitUsage}
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stderr) // help and usage go to stderr, as they always did
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		fmt.Fprintf(stderr, "%s: %v\n", c.CommandPath(), err)
		_ = c.Usage()
		return &exitError{code: exitUsage}
	})
	root.AddCommand(newServeCommand(stdout, stderr), newMigrateCommand(stdout))
	return root
}

// commonFlags registers the flags of every command: the database and the log level.
func commonFlags(fs *pflag.FlagSet, cfg *coordinator.Config, logLevel *string) {
	fs.StringVar(&cfg.DatabaseURL, "database-url", coordinator.DefaultDatabaseURL, "PostgreSQL URL")
	fs.StringVar(logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmdline.Env(fs, "database-url", "SAGACOORD_DATABASE_URL")
	cmdline.FileFlag(fs, "database-url", "SAGACOORD_DATABASE_URL_FILE")
	cmdline.Env(fs, "log-level", "SAGACOORD_LOG_LEVEL")
}

func logger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: must be debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}
