package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sagacoord/sagacoord/internal/cli"
	"github.com/sagacoord/sagacoord/internal/sandbox"
)

// Exit codes of `sagalab chaos run` beyond internal/cli's.
const (
	// ExitViolated: a scenario failed (an invariant was violated) or could not run.
	ExitViolated = 5
	// ExitInconclusive: no scenario failed, but in one a fault did not take effect (or was not
	// healed), so it did not test what it says.
	ExitInconclusive = 6
)

// Command builds `sagalab chaos` (cmd/sagalab).
func Command(app *cli.App) *cobra.Command {
	root := &cobra.Command{
		Use:   "chaos",
		Short: "Run fault-injection scenarios against real processes and check the invariants",
		Long: `chaos runs scenarios (scenarios/*.yaml; format in scenarios/README.md, guide in
docs/chaos.md): it starts coordinators and participant-sims as child processes on a fresh
schema and vhost, drives a workload over gRPC, injects the scenario's faults (signals,
toxiproxy link faults, terminated PostgreSQL backends, duplicate and poison messages, broker
and database restarts on private instances) and participant-sim's fault knobs (failures,
retries, latency, hangs until shutdown or for hang_for, crashes after commit), waits for
quiescence and checks the invariants G1-G9 and T1, and with expect.recovered that the processes
a fault hit recovered (R1) (docs/chaos.md lists them).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &cli.ExitError{Code: cli.ExitUsage, Err: fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
			}
			return cmd.Help()
		},
	}
	root.AddCommand(runCommand(app), validateCommand(app), reportCommand(app))
	return root
}

// load reads a scenario file, or every scenario of a directory; with an error it also returns
// the scenarios that loaded.
func load(path string) ([]*Scenario, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return LoadDir(path)
	}
	s, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	return []*Scenario{s}, nil
}

func validateCommand(app *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE|DIR...",
		Short: "Parse and check scenario files without running them",
		Long: `validate parses and checks each scenario file given, and every *.yaml of each directory
given, with the saga definition files they name; it runs nothing. It prints a line per good
scenario on stdout and every problem, with its file and line, on stderr; the exit code is 1 if
any file has a problem.`,
		Example: `  sagalab chaos validate scenarios/
  sagalab chaos validate scenarios/05-duplicates.yaml my-scenarios/`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, path := range args {
				ss, err := load(path)
				if err != nil {
					errs = append(errs, err)
				}
				for _, s := range ss {
					fmt.Fprintf(app.Stdout(), "%s: ok (%s workload, %d fault(s))\n", s.Name, s.KindLabel(), len(s.Schedule(s.Seed)))
				}
			}
			if err := errors.Join(errs...); err != nil {
				return &cli.ExitError{Code: cli.ExitUsage, Err: err}
			}
			return nil
		},
	}
}

func reportCommand(app *cli.App) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "report REPORT.json",
		Short: "Render a report.json again as report.html (and print its summary)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return &cli.ExitError{Code: cli.ExitUsage, Err: err}
			}
			var rep Report
			if err := json.Unmarshal(b, &rep); err != nil {
				return &cli.ExitError{Code: cli.ExitUsage, Err: fmt.Errorf("%s: %w", args[0], err)}
			}
			rep.WriteSummary(app.Stdout())
			if out != "" {
				return rep.Write(out)
			}
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "write report.json and report.html into this directory")
	return c
}

// runLong is the help of chaos run.
const runLong = `run runs the scenarios and prints a summary table; with --report it also writes
report.json and a self-contained report.html there. The exit code is 0 only if every run
PASSED: every invariant held and every fault took effect (skipped scenarios, whose private
PostgreSQL or RabbitMQ binaries are missing, do not count); 5 if a run FAILED (an invariant was
violated) or could not run; else 6 if a run was INCONCLUSIVE: the invariants held, but a fault
did not take effect or was not healed (the report names it and why), so the run did not test
what the scenario says.

A timeline entry with when: waits for a state of the run's database (twopc_committing_at_least,
outbox_rows_above, sagas_open_at_least, step_dispatched), polled every 100ms; not met within its
timeout, the fault did not take effect and the run is INCONCLUSIVE.

A scenario with workloads: drives saga and 2PC load at once, each checked by its own
invariants.

After its checks each run's schemas (coordinator and participants) are dumped with pg_dump
into DIR/dumps/ of --report (without it, into the run's work dir) before they are dropped; the
report names the file.

The runner chooses no setting silently: each process's database pool (db_max_conns) and each
worker's prefetch, concurrency and max_batch come from the scenario, defaults filled in
(scenarios/README.md), and the summary and the report list them for every run.

The same seed gives the same workload and fault schedule. Binaries come from --bin, or are
built with 'go build' from the module the command runs in. A coordinator started with a test
hook (a --test-* flag) runs the test build, testhooks/coordinator (go build -tags testhooks);
the others run the coordinator that ships.`

func runCommand(app *cli.App) *cobra.Command {
	var (
		opts      Options
		seeds     []string
		reportDir string
		tags      []string
		names     []string
	)
	c := &cobra.Command{
		Use:   "run FILE|DIR",
		Short: "Run one scenario file, or every scenario of a directory",
		Long:  runLong,
		Example: `  sagalab chaos run scenarios/ --report /tmp/chaos
  sagalab chaos run scenarios/05-duplicates.yaml --seed 1 --seed 2
  sagalab chaos run scenarios/ --tag fast --bin bin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ss, err := load(args[0])
			if err != nil {
				return &cli.ExitError{Code: cli.ExitUsage, Err: err}
			}
			if ss = selectScenarios(ss, tags, names); len(ss) == 0 {
				return &cli.ExitError{Code: cli.ExitUsage, Err: errors.New("no scenario matches --tag/--name")}
			}
			seedList, err := parseSeeds(seeds)
			if err != nil {
				return &cli.ExitError{Code: cli.ExitUsage, Err: err}
			}
			opts.Progress = app.Stderr()
			opts.ReportDir = reportDir
			rep := runAll(cmd.Context(), ss, seedList, opts)
			fmt.Fprintln(app.Stdout())
			rep.WriteSummary(app.Stdout())
			if reportDir != "" {
				if err := rep.Write(reportDir); err != nil {
					return &cli.ExitError{Code: ExitViolated, Err: fmt.Errorf("write the report: %w", err)}
				}
				fmt.Fprintf(app.Stdout(), "\nreport: %s/report.html and report.json\n", reportDir)
			}
			if code := rep.ExitCode(); code != 0 {
				return &cli.ExitError{Code: code}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringSliceVar(&seeds, "seed", nil, "seed(s) of the workload and fault schedule, repeated or comma-separated (default: each scenario's seed)")
	f.StringVar(&reportDir, "report", "", "write report.json and report.html into this directory, and each run's database dump into its dumps/")
	f.StringSliceVar(&tags, "tag", nil, "run only scenarios with one of these tags (e.g. fast)")
	f.StringSliceVar(&names, "name", nil, "run only the scenarios with these names")
	f.StringVar(&opts.BinDir, "bin", "", "directory with the coordinator and participant-sim binaries, and testhooks/coordinator (make build build-testhooks) for scenarios with --test-* flags (default: go build them)")
	f.StringVar(&opts.DatabaseURL, "database-url", "", "shared PostgreSQL database for the scenario schemas (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)")
	f.StringVar(&opts.AMQPURL, "amqp-url", "", "shared RabbitMQ; each scenario gets its own vhost (default amqp://guest:guest@127.0.0.1:5672/)")
	f.StringVar(&opts.RabbitAPI, "rabbit-api", "", "management API of the shared RabbitMQ (default http://guest:guest@127.0.0.1:15672)")
	f.StringVar(&opts.PostgresBin, "postgres-bin", "", "directory of initdb and pg_ctl for private PostgreSQL instances (default "+sandbox.DefaultPostgresBin+")")
	f.StringVar(&opts.WorkDir, "work-dir", "", "where each run's logs go (default a new temp dir)")
	f.BoolVar(&opts.Broken, "broken", false, "start every coordinator, from testhooks/, with --test-disable-outbox (a deliberately broken build: the runs must fail)")
	f.BoolVar(&opts.Keep, "keep", false, "keep each run's schemas and vhost for inspection")
	return c
}

// selectScenarios keeps the scenarios with one of the tags (when any is given) and one of the
// names (when any is given).
func selectScenarios(ss []*Scenario, tags, names []string) []*Scenario {
	return slices.DeleteFunc(ss, func(s *Scenario) bool {
		if len(tags) > 0 && !slices.ContainsFunc(tags, func(t string) bool { return slices.Contains(s.Tags, t) }) {
			return true
		}
		return len(names) > 0 && !slices.Contains(names, s.Name)
	})
}

// parseSeeds reads --seed values, repeated or comma-separated; none means each scenario's own
// seed (0).
func parseSeeds(seeds []string) ([]uint64, error) {
	var out []uint64
	for _, s := range seeds {
		for part := range strings.SplitSeq(s, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(part), 10, 64)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("--seed %q: want a positive integer", part)
			}
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = []uint64{0}
	}
	return out, nil
}

// runAll runs every scenario once per seed, in order, until the context ends.
func runAll(ctx context.Context, ss []*Scenario, seeds []uint64, opts Options) *Report {
	rep := &Report{StartedAt: time.Now()}
	for _, seed := range seeds {
		if seed != 0 {
			rep.Seeds = append(rep.Seeds, seed)
		}
		for _, s := range ss {
			o := opts
			o.Seed = seed
			rep.Results = append(rep.Results, Run(ctx, s, o))
			if ctx.Err() != nil {
				break
			}
		}
	}
	rep.Elapsed = time.Since(rep.StartedAt).Seconds()
	return rep
}
