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
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sagacoord/sagacoord/internal/cmdline"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

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
	skipDeclare, bundleMessages     bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	cmd := newCommand(os.Stderr, func(ctx context.Context, o options) error { return run(ctx, o, os.Stderr, os.Exit) })
	cmd.SetArgs(cmdline.DoubleDash(cmd, os.Args[1:]))
	err := cmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "participant-sim:", err)
		os.Exit(1)
	}
}

// newCommand is participant-sim's command line. do runs once the flags are parsed and the
// environment has filled what they left out; never for --help.
func newCommand(out io.Writer, do func(context.Context, options) error) *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:           "participant-sim [flags]",
		Short:         "Simulated sagacoord participants with fault knobs",
		Long:          helpLong,
		Example:       helpExample,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q: every setting is a flag (see --help)", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The environment is read after parsing so that --help never prints a URL (and its
			// password) taken from it.
			if err := cmdline.ApplyEnv(cmd.Flags(), os.Getenv); err != nil {
				return err
			}
			return do(cmd.Context(), o)
		},
	}
	cmd.CompletionOptions.DisableDefaultCmd = true
	cmd.SetOut(out)
	cmd.SetErr(out)
	registerFlags(cmd.Flags(), &o)
	return cmd
}

func registerFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.databaseURL, "database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL URL of the participants' database")
	fs.StringVar(&o.amqpURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	fs.BoolVar(&o.skipDeclare, "skip-declare", false, "declare nothing on the broker, only check that each participant's queue exists: for a broker user that may only read its queues and publish replies (docs/security.md); the coordinator declares the queues when their definitions are registered")
	fs.BoolVar(&o.bundleMessages, "bundle-messages", false, "carry the replies published together in one broker message (docs/protocol.md §16); only when every coordinator reads bundles")
	fs.StringVar(&o.queueType, "queue-type", amqptransport.QueueTypeClassic, "queue type of the participant queues: classic or quorum; must match the coordinator's")
	fs.StringVar(&o.participants, "participants", "", "comma-separated participants, each name or name=kind (kinds: transfer, inventory, payment, noop)")
	fs.StringVar(&o.configFile, "config", "", "YAML or JSON file listing participants with kinds and fault knobs (instead of --participants)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the fault decisions (a config file's seed wins)")
	fs.IntVar(&o.seedAccounts, "seed-accounts", 0, "create acct-1..acct-N (transfer) or sku-1..sku-N (inventory) where missing")
	fs.Int64Var(&o.initialBalance, "initial-balance", 1000, "balance (or stock) of each seeded account")
	fs.StringVar(&o.schemaPrefix, "schema-prefix", "", "prefix of each participant's schema (a config file's schema_prefix wins; default sim_)")
	fs.IntVar(&o.dbMaxConns, "db-max-conns", 32, "most database connections (each handler in flight holds one); pool_max_conns in the URL wins")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace", 10*time.Second, "on SIGTERM, how long handlers in flight may finish before they are cut off (their commands are redelivered)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "export traces with OTLP over gRPC to this host:port or URL, e.g. http://jaeger:4317; empty: no tracing")
	fs.StringVar(&o.metricsAddr, "metrics-listen", "", "serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9465; empty: no metrics")
	cmdline.Env(fs, "database-url", "SAGACOORD_DATABASE_URL")
	cmdline.FileFlag(fs, "database-url", "SAGACOORD_DATABASE_URL_FILE")
	cmdline.Env(fs, "amqp-url", "SAGACOORD_AMQP_URL")
	cmdline.FileFlag(fs, "amqp-url", "SAGACOORD_AMQP_URL_FILE")
	cmdline.Env(fs, "queue-type", "SAGACOORD_QUEUE_TYPE")
	cmdline.Env(fs, "bundle-messages", "SAGACOORD_BUNDLE_MESSAGES")
	// The OpenTelemetry SDKs' own variable, so one setting serves every process.
	cmdline.Env(fs, "otlp-endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT")
	cmdline.Env(fs, "metrics-listen", "SAGACOORD_METRICS_LISTEN")
}

// parseFlags parses args as the command line does and returns the options; pflag.ErrHelp when
// they asked for the help, which it printed on out.
func parseFlags(args []string, out io.Writer) (options, error) {
	var got *options
	cmd := newCommand(out, func(_ context.Context, o options) error { got = &o; return nil })
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		return options{}, err
	}
	if got == nil {
		return options{}, pflag.ErrHelp
	}
	return *got, nil
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
	c.SkipDeclare = o.skipDeclare
	c = c.withDefaults(o.seedAccounts, o.initialBalance)
	return c, c.validate()
}
