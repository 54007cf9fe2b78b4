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
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"

	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/migrations"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: coordinator <command> [flags]

commands:
  serve                 serve the gRPC API (sagacoord.v1) and drive sagas
  migrate up            apply every pending migration
  migrate down [N]      revert migrations down to version N (default: one step)
  migrate status        print the applied and the latest version

Run "coordinator serve --help" for the flags.
`

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}

func commonFlags(fs *flag.FlagSet, cfg *coordinator.Config) *string {
	fs.StringVar(&cfg.DatabaseURL, "database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL URL (env SAGACOORD_DATABASE_URL)")
	logLevel := fs.String("log-level", env("SAGACOORD_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env SAGACOORD_LOG_LEVEL)")
	return logLevel
}

// urlsFromEnv sets the URL flags that the command line left out from their environment
// variables. It runs after parsing, so that --help, which prints the defaults, never shows a URL
// (and its password) taken from the environment.
func urlsFromEnv(fs *flag.FlagSet, cfg *coordinator.Config) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, v := range map[string]struct {
		env string
		p   *string
	}{"database-url": {"SAGACOORD_DATABASE_URL", &cfg.DatabaseURL}, "amqp-url": {"SAGACOORD_AMQP_URL", &cfg.AMQPURL}} {
		if e := os.Getenv(v.env); e != "" && !set[name] && fs.Lookup(name) != nil {
			*v.p = e
		}
	}
}

func logger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: must be debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "migrate":
		return migrate(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "coordinator: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg coordinator.Config
	fs := flag.NewFlagSet("coordinator serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logLevel := commonFlags(fs, &cfg)
	fs.StringVar(&cfg.AMQPURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL (env SAGACOORD_AMQP_URL)")
	fs.StringVar(&cfg.ListenAddr, "listen", env("SAGACOORD_LISTEN", "127.0.0.1:7233"), "gRPC listen address (env SAGACOORD_LISTEN)")
	fs.StringVar(&cfg.QueueType, "queue-type", env("SAGACOORD_QUEUE_TYPE", "classic"), "queue type: classic or quorum (env SAGACOORD_QUEUE_TYPE)")
	fs.BoolVar(&cfg.Migrate, "migrate", envBool("SAGACOORD_MIGRATE"), "apply pending migrations before serving (env SAGACOORD_MIGRATE)")
	fs.IntVar(&cfg.MaxPayloadBytes, "max-payload-bytes", 256<<10, "largest saga input accepted, in bytes")
	maxConns := fs.Int("db-max-conns", 16, "database pool size")
	fs.StringVar(&cfg.Name, "name", env("SAGACOORD_NAME", "coordinator"), "instance name, used in broker connection names and logs (env SAGACOORD_NAME)")
	fs.DurationVar(&cfg.Retention, "retention", 7*24*time.Hour, "delete finished sagas and transactions older than this; a negative value keeps them forever")
	fs.IntVar(&cfg.MaxActiveSagas, "max-active-sagas", 10_000, "StartSaga returns RESOURCE_EXHAUSTED while this many sagas are running or compensating (whole database, counted each second); negative: no limit")
	fs.IntVar(&cfg.ReplyWorkers, "reply-workers", 1, "reply batches this instance writes at once; one gives the largest batches (most replies per transaction)")
	fs.IntVar(&cfg.StartWorkers, "start-workers", 1, "StartSaga batches this instance writes at once; one gives the largest batches")
	fs.StringVar(&cfg.DebugAddr, "debug-listen", env("SAGACOORD_DEBUG_LISTEN", ""), "serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (env SAGACOORD_DEBUG_LISTEN)")
	fs.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", env("OTEL_EXPORTER_OTLP_ENDPOINT", ""), "export traces with OTLP over gRPC to this host:port or URL, e.g. http://jaeger:4317; empty: no tracing (env OTEL_EXPORTER_OTLP_ENDPOINT)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-listen", env("SAGACOORD_METRICS_LISTEN", ""), "serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9464; empty: no metrics (env SAGACOORD_METRICS_LISTEN)")
	fs.BoolVar(&cfg.Test.DisableOutbox, "test-disable-outbox", false, "TEST ONLY: never publish (proves the chaos checks catch lost messages)")
	crashAfterConfirm := fs.Bool("test-crash-after-confirm", false, "TEST ONLY: SIGKILL self after the first confirmed publish, before its outbox rows are deleted")
	crashBeforeDecision := fs.Bool("test-crash-before-decision", false, "TEST ONLY: SIGKILL self when a 2PC transaction's last YES vote arrives, before its COMMIT decision is logged")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	urlsFromEnv(fs, &cfg)
	cfg.DBMaxConns = int32(*maxConns)
	log, err := logger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "coordinator:", err)
		return 2
	}
	cfg.Logger = log
	// The exporters report their errors (an unreachable collector, say) through OpenTelemetry's
	// global handler; send them to the log instead of the standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("telemetry", "err", err) }))
	if *crashAfterConfirm {
		cfg.Test.AfterConfirm = func() {
			log.Warn("test crash point reached: after confirm, before the outbox rows are deleted")
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	if *crashBeforeDecision {
		cfg.Test.BeforeCommitDecision = func(txID uuid.UUID) {
			// The chaos runner reads this line (internal/chaos, crashPointMessage).
			log.Warn("test crash point reached: every vote YES, before the COMMIT decision is logged", "tx_id", txID)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := coordinator.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "coordinator:", err)
		return 1
	}
	fmt.Fprintf(stdout, "coordinator listening on %s\n", c.Addr())
	if a := c.MetricsAddr(); a != "" {
		fmt.Fprintf(stdout, "coordinator metrics on http://%s/metrics\n", a)
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-c.Done():
		if err != nil {
			log.Error("gRPC server stopped", "err", err)
		}
	}
	c.Stop()
	return 0
}

func migrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "coordinator migrate: want up, down [N] or status\n")
		return 2
	}
	sub := args[0]
	var cfg coordinator.Config
	fs := flag.NewFlagSet("coordinator migrate "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, &cfg)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	urlsFromEnv(fs, &cfg)
	pool, err := coordinator.OpenPool(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		fmt.Fprintln(stderr, "coordinator:", err)
		return 1
	}
	defer pool.Close()
	m := &migrations.Migrator{Pool: pool}
	switch sub {
	case "up":
		applied, err := m.Up(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "coordinator: migrate up:", err)
			return 1
		}
		fmt.Fprintf(stdout, "applied %d migration(s); schema at version %d\n", len(applied), migrations.Latest())
	case "down":
		cur, err := m.Current(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "coordinator:", err)
			return 1
		}
		target := cur - 1
		if fs.NArg() > 0 {
			if target, err = strconv.Atoi(fs.Arg(0)); err != nil || target < 0 {
				fmt.Fprintf(stderr, "coordinator: migrate down: %q is not a version number\n", fs.Arg(0))
				return 2
			}
		}
		if target < 0 {
			target = 0
		}
		reverted, err := m.Down(ctx, target)
		if err != nil {
			fmt.Fprintln(stderr, "coordinator: migrate down:", err)
			return 1
		}
		fmt.Fprintf(stdout, "reverted %d migration(s); schema at version %d\n", len(reverted), target)
	case "status":
		cur, err := m.Current(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "coordinator:", err)
			return 1
		}
		fmt.Fprintf(stdout, "schema version %d; this binary's latest %d\n", cur, migrations.Latest())
		if cur != migrations.Latest() {
			return 3
		}
	default:
		fmt.Fprintf(stderr, "coordinator migrate: unknown subcommand %q; want up, down [N] or status\n", sub)
		return 2
	}
	return 0
}
