// Command participant-sim runs simulated sagacoord participants on the participant SDK: named
// services with small ledgers in PostgreSQL (bank accounts, stock, payments, or nothing at all for
// benchmarks) and fault knobs per action, so sagas, chaos scenarios and benchmarks have someone to
// talk to. Run it with --help for the flags and the config file format.
//
// Every effect goes through the participant barrier in the same local transaction, so the process
// is safe to SIGKILL at any moment; SIGTERM and SIGINT stop it gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/telemetry/otelsetup"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

const usageText = `participant-sim runs simulated sagacoord participants, each a worker of the participant SDK
with its own schema (<schema-prefix><name>) and ledger in one PostgreSQL database.

Usage:
  participant-sim [flags]

Examples:
  participant-sim --participants bank-a,bank-b,inventory,payments --seed-accounts 100 --initial-balance 1000
  participant-sim --participants 'east=transfer,west=transfer,bench=noop'
  participant-sim --config sim.yaml

Kinds, and the actions (compensations) each understands; input is the saga input:
  transfer   debit (refund_debit), credit (undo_credit)   {"from":"acct-1","to":"acct-2","amount":10}
             A debit never overdraws: it fails with "insufficient funds". Accounts come from
             --seed-accounts: acct-1..acct-N.
  inventory  reserve (release)                            {"sku":"sku-1","qty":2}
             Stock is seeded like accounts: sku-1..sku-N; a reserve beyond stock fails.
  payment    charge (refund)                              {"account":"cust-1","amount":10} ("from" also works)
  noop       any action succeeds with output {}: the barrier without an effect, for benchmarks.
  Any other action name fails (business failure) with a message that lists the known ones.
  A compensation reverses its action's ledger entry; each (saga, step, kind) has one entry.

Two-phase commit (TwoPCService): every participant also prepares, commits and aborts. The
participant payload given to BeginTransaction is
  transfer   {"account":"acct-1","amount":10,"direction":"debit"|"credit"}
             PREPARE of a debit holds the amount: it votes NO ("insufficient available funds")
             unless balance - held covers it, and saga debits cannot spend what is held. COMMIT
             moves the balance and releases the hold; ABORT releases it. A credit holds nothing.
  inventory  {"sku":"sku-1","qty":2}           holds stock the same way
  payment    {"account":"cust-1","amount":10}  recorded at COMMIT, nothing held
  noop       always votes YES, holds nothing
  Each hold is a row of <schema>.holds with prepared_at and decided_at (how long it blocked).
  Fault knobs apply under the names prepare, commit and abort: fail_probability votes NO (prepare
  only; a decision cannot fail), retry_probability requeues the command (each try draws anew),
  latency, hang_probability (a frozen participant) and crash_after_commit_probability.

A bare name in --participants takes its kind from its prefix: bank* transfer, inventory* and
stock* inventory, pay* payment, anything else noop; name=kind says it explicitly.

Config file (--config, YAML or JSON; unknown keys are errors):
  seed: 42                       # fault decisions are reproducible for a seed
  schema_prefix: sim_
  participants:
    - name: bank-a
      kind: transfer
      seed_accounts: 100         # defaults to --seed-accounts
      initial_balance: 1000      # defaults to --initial-balance
      prefetch: 32               # SDK defaults when 0
      concurrency: 32
      max_batch: 8               # group commit: commands decided in one local transaction (SDK default 1: one each)
      faults:                    # by action or compensation name; "*" for all others
        debit:
          fail_probability: 0.1              # business failure: the saga compensates
          retry_probability: 0.2             # transient failure: the coordinator retries
          latency: 20ms                      # added before the handler
          hang_probability: 0.01             # no reply until shutdown (a redelivery does not hang)
          crash_after_commit_probability: 0  # exit 137 after the local commit, before reply and ack
        "*":
          latency: 1ms
  Fault decisions depend on (seed, participant, saga, step, kind, action, attempt), so a retried
  attempt draws anew and a run is reproducible whatever the scheduling.

Flags (environment variables in brackets):
`

// options are the command line.
type options struct {
	databaseURL, amqpURL, queueType string
	participants, configFile        string
	schemaPrefix, logLevel          string
	otlpEndpoint, metricsAddr       string
	seed                            uint64
	seedAccounts                    int
	initialBalance                  int64
	dbMaxConns                      int
	shutdownGrace                   time.Duration
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("participant-sim", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.databaseURL, "database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL URL of the participants' database [SAGACOORD_DATABASE_URL]")
	fs.StringVar(&o.amqpURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL [SAGACOORD_AMQP_URL]")
	fs.StringVar(&o.queueType, "queue-type", amqptransport.QueueTypeClassic, "queue type of the participant queues: classic or quorum; must match the coordinator's [SAGACOORD_QUEUE_TYPE]")
	fs.StringVar(&o.participants, "participants", "", "comma-separated participants, each name or name=kind (kinds: transfer, inventory, payment, noop)")
	fs.StringVar(&o.configFile, "config", "", "YAML or JSON file listing participants with kinds and fault knobs (instead of --participants)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the fault decisions (a config file's seed wins)")
	fs.IntVar(&o.seedAccounts, "seed-accounts", 0, "create acct-1..acct-N (transfer) or sku-1..sku-N (inventory) where missing")
	fs.Int64Var(&o.initialBalance, "initial-balance", 1000, "balance (or stock) of each seeded account")
	fs.StringVar(&o.schemaPrefix, "schema-prefix", "", "prefix of each participant's schema (a config file's schema_prefix wins; default sim_)")
	fs.IntVar(&o.dbMaxConns, "db-max-conns", 32, "most database connections (each handler in flight holds one); pool_max_conns in the URL wins")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace", 10*time.Second, "on SIGTERM, how long handlers in flight may finish before they are cut off (their commands are redelivered)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "export traces with OTLP over gRPC to this host:port or URL, e.g. http://jaeger:4317; empty: no tracing [OTEL_EXPORTER_OTLP_ENDPOINT]")
	fs.StringVar(&o.metricsAddr, "metrics-listen", "", "serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9465; empty: no metrics [SAGACOORD_METRICS_LISTEN]")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: every setting is a flag (see --help)", fs.Args())
	}
	// The environment fills what the command line leaves out. It is read after parsing so that
	// --help never prints a URL (and its password) taken from the environment.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, p := range map[string]*string{"database-url": &o.databaseURL, "amqp-url": &o.amqpURL, "queue-type": &o.queueType,
		"otlp-endpoint": &o.otlpEndpoint, "metrics-listen": &o.metricsAddr} {
		if v := os.Getenv(envOf[name]); v != "" && !set[name] {
			*p = v
		}
	}
	return o, nil
}

// envOf names the environment variable of each flag that has one.
var envOf = map[string]string{
	"database-url": "SAGACOORD_DATABASE_URL",
	"amqp-url":     "SAGACOORD_AMQP_URL",
	"queue-type":   "SAGACOORD_QUEUE_TYPE",
	// The OpenTelemetry SDKs' own variable, so one setting serves every process.
	"otlp-endpoint":  "OTEL_EXPORTER_OTLP_ENDPOINT",
	"metrics-listen": "SAGACOORD_METRICS_LISTEN",
}

// simConfig builds the configuration from --config or --participants.
func (o options) simConfig() (simConfig, error) {
	var c simConfig
	switch {
	case o.configFile != "" && o.participants != "":
		return c, errors.New("give --participants or --config, not both")
	case o.configFile != "":
		var err error
		if c, err = loadConfigFile(o.configFile); err != nil {
			return c, err
		}
		if c.Seed == 0 {
			c.Seed = o.seed
		}
	case o.participants != "":
		ps, err := parseParticipants(o.participants)
		if err != nil {
			return c, err
		}
		c = simConfig{Seed: o.seed, Participants: ps}
	default:
		return c, errors.New("no participants: give --participants (e.g. bank-a,bank-b) or --config FILE; see --help")
	}
	if c.SchemaPrefix == "" {
		c.SchemaPrefix = o.schemaPrefix
	}
	c = c.withDefaults(o.seedAccounts, o.initialBalance)
	return c, c.validate()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stderr, os.Exit)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintln(os.Stderr, "participant-sim:", err)
		os.Exit(1)
	}
}

// run runs the simulator until ctx ends, then stops gracefully. exit ends the process for an
// injected crash.
func run(ctx context.Context, args []string, stderr io.Writer, exit func(int)) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", o.logLevel)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := o.simConfig()
	if err != nil {
		return err
	}

	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("telemetry", "err", err) }))
	tel, err := otelsetup.Start(ctx, otelsetup.Config{ServiceName: "participant-sim", InstanceName: "participant-sim",
		OTLPEndpoint: o.otlpEndpoint, MetricsAddr: o.metricsAddr, Logger: log})
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
	var (
		tp trace.TracerProvider
		mp metric.MeterProvider
	)
	if tel.Tracing() {
		tp = tel.TracerProvider
	}
	if tel.Metrics() {
		mp = tel.MeterProvider
	}

	poolCfg, err := pgxpool.ParseConfig(o.databaseURL)
	if err != nil {
		return fmt.Errorf("--database-url %s: %w", redactURL(o.databaseURL), err)
	}
	if tp != nil {
		// The handlers' queries become children of their command's span.
		poolCfg.ConnConfig.Tracer = otelsetup.NewQueryTracer(tp)
	}
	if !strings.Contains(o.databaseURL, "pool_max_conns") {
		poolCfg.MaxConns = int32(max(1, o.dbMaxConns))
	}
	db, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("open database %s: %w", redactURL(o.databaseURL), err)
	}
	defer db.Close()
	if err := db.Ping(ctx); err != nil {
		return fmt.Errorf("connect to database %s: %w (is PostgreSQL running, and the URL right?)", redactURL(o.databaseURL), err)
	}

	tr, err := amqptransport.New(ctx, amqptransport.Config{
		URL:            o.amqpURL,
		QueueType:      o.queueType,
		ConnectionName: "participant-sim",
		Logger:         log,
	})
	if err != nil {
		return fmt.Errorf("connect to RabbitMQ %s: %w", redactURL(o.amqpURL), err)
	}
	defer tr.Close()

	s, err := newSimWith(cfg, db, tr, log, exit, tp, mp)
	if err != nil {
		return err
	}
	if err := s.migrate(ctx, db); err != nil {
		return err
	}
	// The workers outlive the signal: shutdown ends their context only after the grace period.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	if err := s.start(workCtx); err != nil {
		return err
	}
	log.Info("participant-sim ready", "participants", len(cfg.Participants), "seed", cfg.Seed,
		"database", redactURL(o.databaseURL), "amqp", redactURL(o.amqpURL), "metrics_addr", tel.MetricsAddr())
	<-ctx.Done()
	log.Info("stopping", "grace", o.shutdownGrace.String())
	s.shutdown(o.shutdownGrace, cancelWork)
	log.Info("stopped")
	return nil
}

// redactURL masks the password of a URL. A string that is not a URL with a scheme (a libpq
// keyword string may carry password=...) is not shown at all.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(redacted: not a URL)"
	}
	return u.Redacted()
}
