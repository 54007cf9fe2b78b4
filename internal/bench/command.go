package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sagacoord/sagacoord/internal/cli"
)

// flags are the command line of `sagalab bench` beyond Config's own fields.
type flags struct {
	cfg      Config
	pids     string
	asJSON   bool
	parts    string
	noBase   bool
	duration time.Duration
	cpuProf  string
	halfPeak bool
	sweep    []float64
}

// Command is `sagalab bench` (cmd/sagalab).
func Command(app *cli.App) *cobra.Command {
	var f flags
	cmd := &cobra.Command{
		Use:   "bench --database-url URL [--rate N | --concurrency N] [--duration D]",
		Short: "Measure a running system with 3-step sagas over no-op participants",
		Long: `bench drives the coordinator at --addr with a 3-step saga (definition bench-3step) over three
no-op participants that still use the barrier (run them with
  participant-sim --participants bench-a=noop,bench-b=noop,bench-c=noop).
With --rate it starts that many sagas per second (open loop); otherwise it keeps --concurrency
sagas in flight (closed loop). After a warm-up it measures for --duration and prints completed
sagas/s, start-to-terminal latency (from the coordinator's database), PostgreSQL commits per saga
(pg_stat_database of the coordinator's database), broker messages per saga (management API),
the coordinator's CPU and RSS (--pid), the CPU of every process on the machine, and the raw
baselines of the same services. --half-peak measures the peak in a closed loop, then the open
loop at half the sagas/s it reached, for the latency target of docs/performance.md.
make bench starts a system and runs it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd, app, f) },
	}
	registerFlags(cmd.Flags(), &f)
	return cmd
}

func registerFlags(fs *pflag.FlagSet, f *flags) {
	cfg := &f.cfg
	fs.StringVar(&cfg.DatabaseURL, "database-url", os.Getenv("SAGACOORD_DATABASE_URL"), "the coordinator's database, with its search_path (env SAGACOORD_DATABASE_URL)")
	fs.StringVar(&cfg.AMQPURL, "amqp-url", envOr("SAGACOORD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "the coordinator's broker and vhost (env SAGACOORD_AMQP_URL)")
	fs.StringVar(&cfg.RabbitAPI, "rabbit-api", "http://guest:guest@127.0.0.1:15672", "RabbitMQ management API, for message counts")
	fs.Float64Var(&cfg.Rate, "rate", 0, "sagas started per second (open loop); 0 means closed loop")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "sagas kept in flight (closed loop)")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "measured window")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured warm-up")
	fs.StringVar(&f.parts, "participants", "", "the three no-op participants (default bench-a,bench-b,bench-c)")
	fs.StringVar(&f.pids, "pid", "", "coordinator process ids, comma-separated, for CPU and RSS")
	fs.BoolVar(&f.noBase, "no-baselines", false, "skip the raw publish and insert baselines")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON object with every figure")
	fs.DurationVar(&cfg.StepTimeout, "step-timeout", 30*time.Second, "each step's timeout in the benchmark definition; it counts from dispatch, so a large --burst needs more")
	fs.Int64Var(&cfg.Burst, "burst", 0, "instead of a timed window, start this many sagas as fast as accepted and wait for all to finish (many in flight)")
	fs.Int64Var(&cfg.PrefillFinished, "prefill-finished", 0, "first add this many finished sagas to the tables (copies of one real run), to measure with large tables")
	fs.Float64SliceVar(&f.sweep, "sweep", nil, "run the open loop once per rate, e.g. --sweep 50,100,200,400: the latency curve")
	fs.BoolVar(&f.halfPeak, "half-peak", false, "measure the peak (closed loop, --concurrency), then the open loop at half its sagas/s")
	fs.StringVar(&f.cpuProf, "cpuprofile", "", "write the bench client's own CPU profile to this file (to check that the load generator is not the bottleneck)")
}

// run checks the flags and runs one measurement, the half-peak pair or the sweep.
func run(cmd *cobra.Command, app *cli.App, f flags) error {
	conn, err := app.Client()
	if err != nil {
		return err
	}
	cfg := f.cfg
	cfg.Client = conn.Saga
	cfg.Duration = f.duration
	cfg.Baselines = !f.noBase
	if f.parts != "" {
		cfg.Participants = strings.Split(f.parts, ",")
	}
	for _, p := range strings.Split(f.pids, ",") {
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return &cli.ExitError{Code: 1, Err: fmt.Errorf("--pid %q: not a process id", p)}
		}
		cfg.CoordinatorPIDs = append(cfg.CoordinatorPIDs, n)
	}
	if cfg.DatabaseURL == "" {
		return &cli.ExitError{Code: 1, Err: fmt.Errorf("--database-url (or SAGACOORD_DATABASE_URL) is required: latency and commits are read from the coordinator's database")}
	}
	if !f.asJSON {
		cfg.Log = app.Stderr()
	}
	if f.cpuProf != "" {
		stop, err := startCPUProfile(f.cpuProf)
		if err != nil {
			return &cli.ExitError{Code: 1, Err: err}
		}
		defer stop()
	}
	switch {
	case len(f.sweep) > 0:
		if f.halfPeak || cfg.Rate > 0 || cfg.Burst > 0 {
			return &cli.ExitError{Code: 1, Err: fmt.Errorf("--sweep runs one open loop per rate: drop --half-peak, --rate and --burst")}
		}
		return runSweep(cmd, app, cfg, f.sweep, f.asJSON)
	case f.halfPeak:
		if cfg.Rate > 0 || cfg.Burst > 0 {
			return &cli.ExitError{Code: 1, Err: fmt.Errorf("--half-peak runs its own closed and open loops: drop --rate and --burst")}
		}
		return runHalfPeak(cmd, app, cfg, f.asJSON)
	}
	res, err := Run(cmd.Context(), cfg)
	if err != nil {
		return &cli.ExitError{Code: 2, Err: err}
	}
	if f.asJSON || app.JSON() {
		enc := json.NewEncoder(app.Stdout())
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printTable(app, res)
	return nil
}

// HalfPeak is the result of --half-peak: the closed loop, then the open loop at half its rate.
type HalfPeak struct {
	Peak     *Result `json:"peak"`
	HalfPeak *Result `json:"half_peak"`
}

func runHalfPeak(cmd *cobra.Command, app *cli.App, cfg Config, asJSON bool) error {
	closed := cfg
	closed.Baselines = false // taken once, after the second run
	peak, err := Run(cmd.Context(), closed)
	if err != nil {
		return &cli.ExitError{Code: 2, Err: fmt.Errorf("peak: %w", err)}
	}
	open := cfg
	open.Rate = peak.SagasPerSecond / 2
	open.PrefillFinished = 0 // the tables were filled by the first run
	fmt.Fprintf(cfg.Log, "peak %.0f sagas/s; now the open loop at %.0f/s\n", peak.SagasPerSecond, open.Rate)
	half, err := Run(cmd.Context(), open)
	if err != nil {
		return &cli.ExitError{Code: 2, Err: fmt.Errorf("half the peak: %w", err)}
	}
	if asJSON || app.JSON() {
		enc := json.NewEncoder(app.Stdout())
		enc.SetIndent("", "  ")
		return enc.Encode(HalfPeak{Peak: peak, HalfPeak: half})
	}
	fmt.Fprintln(app.Stdout(), "peak:")
	printTable(app, peak)
	fmt.Fprintln(app.Stdout(), "\nhalf the peak:")
	printTable(app, half)
	return nil
}

// runSweep runs the open loop at each rate in turn, on the same system, and prints one result
// per rate (a JSON array with --json). Baselines are taken once, after the last rate.
func runSweep(cmd *cobra.Command, app *cli.App, cfg Config, rates []float64, asJSON bool) error {
	var results []*Result
	for i, rate := range rates {
		if rate <= 0 {
			return &cli.ExitError{Code: 1, Err: fmt.Errorf("--sweep: rate %v must be positive", rate)}
		}
		run := cfg
		run.Rate = rate
		run.Baselines = cfg.Baselines && i == len(rates)-1
		if i > 0 {
			run.PrefillFinished = 0 // the tables were filled by the first run
		}
		fmt.Fprintf(cfg.Log, "open loop at %.0f sagas/s (%d of %d)\n", rate, i+1, len(rates))
		res, err := Run(cmd.Context(), run)
		if err != nil {
			return &cli.ExitError{Code: 2, Err: fmt.Errorf("rate %v: %w", rate, err)}
		}
		results = append(results, res)
	}
	if asJSON || app.JSON() {
		enc := json.NewEncoder(app.Stdout())
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	w := tabwriter.NewWriter(app.Stdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "offered/s\tcompleted/s\tp50 ms\tp95 ms\tp99 ms\tcommits/saga\tmachine CPU ms/saga")
	for _, r := range results {
		fmt.Fprintf(w, "%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\n", r.TargetRate, r.SagasPerSecond,
			r.LatencyP50Millis, r.LatencyP95Millis, r.LatencyP99Millis, r.CommitsPerSaga, r.CPUMillisPerSaga)
	}
	return w.Flush()
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func printTable(app *cli.App, r *Result) {
	w := tabwriter.NewWriter(app.Stdout(), 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(w, "%s\t%v\n", k, v) }
	if r.Mode == "burst" {
		row("mode", fmt.Sprintf("burst of %d sagas, %d start calls at a time", r.Burst, r.Concurrency))
		row("started in / all finished after", fmt.Sprintf("%.1fs / %.1fs", r.BurstStartSeconds, r.BurstEndSeconds))
		row("most in flight", fmt.Sprintf("%d", r.BurstInFlightPeak))
		row("started / errors / shed", fmt.Sprintf("%d / %d / %d", r.Started, r.StartErrors, r.Shed))
		row("completed / failed (parked for an operator)", fmt.Sprintf("%d / %d", r.Completed, r.Unfinished))
		row("sagas/s (start of burst to last finish)", fmt.Sprintf("%.0f", r.SagasPerSecond))
		row("coordinator RSS / peak", fmt.Sprintf("%.0f MB / %.0f MB", r.CoordinatorRSSMB, r.CoordinatorPeakMB))
		_ = w.Flush()
		return
	}
	if r.Mode == "open" {
		row("mode", fmt.Sprintf("open loop, %.0f sagas/s offered", r.TargetRate))
	} else {
		row("mode", fmt.Sprintf("closed loop, %d in flight", r.Concurrency))
	}
	row("window", fmt.Sprintf("%.1fs", r.DurationSeconds))
	row("rows in sagas", fmt.Sprintf("%d", r.SagaRows))
	row("started / errors / shed", fmt.Sprintf("%d / %d / %d", r.Started, r.StartErrors, r.Shed))
	row("completed sagas/s", fmt.Sprintf("%.0f", r.SagasPerSecond))
	row("latency p50 / p95 / p99 / max", fmt.Sprintf("%.1f / %.1f / %.1f / %.1f ms", r.LatencyP50Millis, r.LatencyP95Millis, r.LatencyP99Millis, r.LatencyMaxMillis))
	row("unfinished after drain", fmt.Sprintf("%d (drain %.1fs)", r.Unfinished, r.DrainSeconds))
	row("PostgreSQL commits per saga", fmt.Sprintf("%.2f", r.CommitsPerSaga))
	if r.MessagesPerSaga != nil {
		row("messages per saga", fmt.Sprintf("%.2f", *r.MessagesPerSaga))
	} else {
		row("messages per saga", "unknown (see warnings)")
	}
	if r.CoordinatorCPU > 0 || r.CoordinatorRSSMB > 0 {
		row("coordinator CPU / RSS / peak", fmt.Sprintf("%.2f cores / %.0f MB / %.0f MB", r.CoordinatorCPU, r.CoordinatorRSSMB, r.CoordinatorPeakMB))
	}
	if total := r.CPUByProcess["total"]; total > 0 {
		var parts []string
		for _, g := range []string{"postgres", "rabbitmq", "coordinator", "participant-sim", "sagalab", "sagactl", "other"} {
			if c := r.CPUByProcess[g]; c > 0 {
				parts = append(parts, fmt.Sprintf("%s %.2f", g, c))
			}
		}
		row("machine CPU (cores)", fmt.Sprintf("%.2f: %s", total, strings.Join(parts, ", ")))
		row("machine CPU per saga", fmt.Sprintf("%.2f ms", r.CPUMillisPerSaga))
	}
	if r.BaselinePublish > 0 {
		row("baseline confirmed publishes/s", fmt.Sprintf("%.0f", r.BaselinePublish))
		row("baseline single-row inserts/s", fmt.Sprintf("%.0f", r.BaselineInserts))
		if r.MessagesPerSaga != nil {
			row("broker efficiency", fmt.Sprintf("%.2f", r.BrokerEfficiency))
		} else {
			row("broker efficiency", "unknown (no message count)")
		}
	}
	for _, warning := range r.Warnings {
		row("warning", warning)
	}
	_ = w.Flush()
}

// startCPUProfile profiles this process into path until the returned function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}
