package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
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
	bound    time.Duration
	metrics  []string
}

// Command is `sagalab bench` (cmd/sagalab).
func Command(app *cli.App) *cobra.Command {
	var f flags
	cmd := &cobra.Command{
		Use:   "bench --database-url URL [--rate N | --concurrency N] [--duration D]",
		Short: "Measure a running system with 3-step sagas over no-op participants",
		Long: `bench drives the coordinator at --addr with a 3-step saga (definition bench-3step) over three
no-op participants that still use the barrier (scripts/bench.sh runs them with
participant-sim --config scripts/bench-participants.yaml).
With --rate it starts that many sagas per second (open loop); otherwise it keeps --concurrency
sagas in flight (closed loop), each worker waiting for its saga with WatchSaga. After a warm-up it
measures for --duration and prints completed sagas/s, start-to-terminal latency (from the
coordinator's database), the coordinator's CPU and RSS (--pid), and where a saga's cost goes:
transactions, statements and commits on each database (--metrics), WAL syncs, broker messages
(management API), context switches and CPU by process; then the raw baselines of the same
services. --half-peak measures the peak in a closed loop, then the open loop at half the sagas/s
it reached; --p99-bound finds the highest open-loop rate whose p99 stays under a bound.
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
	fs.DurationVar(&f.bound, "p99-bound", 0, "measure the peak (closed loop, --concurrency), then bisect the open-loop rate for the highest one whose p99 stays under this bound, e.g. 50ms: the latency-bounded throughput")
	fs.StringArrayVar(&f.metrics, "metrics", nil, "NAME=URL of a process's /metrics (coordinator, participants), for its statements and commits per saga; repeat")
	fs.StringVar(&cfg.ParticipantDatabase, "participant-database", "test", "the participants' database, for its transactions per saga")
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
	for _, m := range f.metrics {
		name, u, ok := strings.Cut(m, "=")
		if !ok || name == "" || u == "" {
			return &cli.ExitError{Code: 1, Err: fmt.Errorf("--metrics %q: want NAME=URL, e.g. coordinator=http://127.0.0.1:9464/metrics", m)}
		}
		if cfg.MetricsURLs == nil {
			cfg.MetricsURLs = map[string]string{}
		}
		cfg.MetricsURLs[name] = u
	}
	switch {
	case f.bound > 0:
		if f.halfPeak || len(f.sweep) > 0 || cfg.Rate > 0 || cfg.Burst > 0 {
			return &cli.ExitError{Code: 1, Err: fmt.Errorf("--p99-bound runs its own closed and open loops: drop --half-peak, --sweep, --rate and --burst")}
		}
		return runBound(cmd, app, cfg, f.bound, f.asJSON)
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

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
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
