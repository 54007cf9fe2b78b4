package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// Program is a command-line program built on App: its name, its help and its commands, under the
// global flags --addr, --output and --timeout. sagactl is the user's CLI; cmd/sagalab builds the
// developers' lab (chaos scenarios, benchmark) the same way, so both share the flags, the error
// format and the exit codes.
type Program struct {
	// Name is the root command, and the first word of every error message.
	Name string
	// Short and Long are the root command's help; Long lists the exit codes.
	Short, Long string
	// Commands are the root's subcommands.
	Commands []CommandFunc
}

// Sagactl is the user's CLI: saga definitions, sagas and two-phase-commit transactions.
func Sagactl() Program { return sagactlProgram }

var sagactlProgram = Program{
	Name:  "sagactl",
	Short: "Client of the sagacoord distributed-transaction coordinator",
	Long: `sagactl registers saga definitions, starts, inspects and steers sagas, and inspects
two-phase-commit transactions on a sagacoord coordinator.

A coordinator with TLS and credentials (README.md, section Production) takes --tls-ca (the CA
of its certificate) with --token-file (a bearer token) or --tls-cert and --tls-key (a client
certificate); what each role may do is in docs/api.md.

Exit codes:
  0  success (for --wait and watch: the saga COMPLETED, the transaction COMMITTED)
  1  usage error: bad flags or arguments, or a bad input file (nothing was changed)
  2  the coordinator could not be reached or answered with an error (gRPC code on stderr)
  3  the watched saga ended COMPENSATED (or the transaction ABORTED)
  4  the watched saga ended FAILED and needs an operator
  130 interrupted`,
	Commands: []CommandFunc{newDefinitionCommand, newSagaCommand, newTxCommand},
}

// Run runs sagactl with args (without the program name) and returns the exit code; see the Exit
// constants. Errors are printed on stderr as "sagactl: <command>: <problem>".
func Run(ctx context.Context, args []string, opts Options) int {
	return RunProgram(ctx, sagactlProgram, args, opts)
}

// RunProgram runs prog with args (without the program name) and returns the exit code. Errors are
// printed on stderr as "<name>: <command>: <problem>".
func RunProgram(ctx context.Context, prog Program, args []string, opts Options) int {
	app := &App{opts: opts.withDefaults()}
	defer app.close()
	root := newRootCommand(app, prog)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	var ee *ExitError
	if errors.As(err, &ee) && ee.Err == nil {
		return code // the command already said what happened
	}
	name := prog.Name
	if cmd != nil {
		name = cmd.CommandPath()
	}
	op := strings.TrimPrefix(strings.TrimPrefix(name, prog.Name), " ")
	if op != "" {
		fmt.Fprintf(app.Stderr(), "%s: %s: %v\n", prog.Name, op, err)
	} else {
		fmt.Fprintf(app.Stderr(), "%s: %v\n", prog.Name, err)
	}
	if code == ExitUsage && cmd != nil && isCommandLineError(err, app.started) {
		fmt.Fprintf(app.Stderr(), "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

func newRootCommand(app *App, prog Program) *cobra.Command {
	addrDefault := app.opts.Getenv(AddrEnv)
	if addrDefault == "" {
		addrDefault = DefaultAddr
	}
	root := &cobra.Command{
		Use:           prog.Name,
		Short:         prog.Short,
		Long:          prog.Long,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch app.Output {
			case outputTable, outputJSON:
			default:
				return flagError("invalid --output %q: want table or json", app.Output)
			}
			if app.Timeout <= 0 {
				return flagError("invalid --timeout %s: must be positive", app.Timeout)
			}
			if strings.TrimSpace(app.Addr) == "" {
				return flagError("--addr must not be empty")
			}
			app.started = true
			return nil
		},
	}
	root.SetIn(app.Stdin())
	root.SetOut(app.Stdout())
	root.SetErr(app.Stderr())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &ExitError{Code: ExitUsage, Err: &commandLineError{err}}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&app.Addr, "addr", addrDefault, "coordinator address host:port (the default comes from $"+AddrEnv+" when set)")
	pf.StringVarP(&app.Output, "output", "o", outputTable, "output format: table or json")
	pf.DurationVar(&app.Timeout, "timeout", DefaultTimeout, "time limit of each call to the coordinator (watches are not limited)")
	securityFlags(pf, &app.sec, app.opts.Getenv)
	for _, f := range prog.Commands {
		root.AddCommand(f(app))
	}
	return root
}
