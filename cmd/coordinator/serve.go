package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel"

	"github.com/sagacoord/sagacoord/internal/cmdline"
	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/internal/engine"
)

// testHooks registers the flags of the test hooks (coordinator.Config.Test) and returns what
// applies them; nil unless the binary is built with -tags testhooks (testhooks.go).
var testHooks func(fs *pflag.FlagSet) func(cfg *coordinator.Config, log *slog.Logger)

// serveOptions are the flags of `coordinator serve` that are not fields of coordinator.Config.
type serveOptions struct {
	logLevel string
	// applyHooks sets cfg.Test from the test-hook flags; nil unless the binary has them.
	applyHooks func(cfg *coordinator.Config, log *slog.Logger)
}

func newServeCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		cfg  coordinator.Config
		opts serveOptions
	)
	cmd := &cobra.Command{
		Use:   "serve [flags]",
		Short: "serve the gRPC API (sagacoord.v1) and drive sagas",
		Long: `serve runs the coordinator: the gRPC API (sagacoord.v1) on --listen, and the sagas and
two-phase-commit transactions in the database, driven over RabbitMQ. It refuses to start on a
schema that does not match the binary; --migrate applies the pending migrations first. SIGTERM
or SIGINT stop it gracefully.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cmdline.ApplyEnv(cmd.Flags(), os.Getenv); err != nil {
				return fail(exitUsage, "coordinator: %v", err)
			}
			return serve(cmd.Context(), cfg, opts, stdout, stderr)
		},
	}
	serveFlags(cmd.Flags(), &cfg, &opts)
	return cmd
}

// serveFlags registers the flags of `coordinator serve`. Their defaults come from
// coordinator.Config.WithDefaults and engine.Config.WithDefaults, where they are written once;
// README.md's configuration table lists them, and a test keeps the table true.
func serveFlags(fs *pflag.FlagSet, cfg *coordinator.Config, opts *serveOptions) {
	def := coordinator.Config{}.WithDefaults()
	eng := engine.Config{}.WithDefaults()
	commonFlags(fs, cfg, &opts.logLevel)
	fs.StringVar(&cfg.AMQPURL, "amqp-url", coordinator.DefaultAMQPURL, "RabbitMQ URL")
	fs.StringVar(&cfg.ListenAddr, "listen", def.ListenAddr, "gRPC listen address")
	fs.StringVar(&cfg.QueueType, "queue-type", def.QueueType, "queue type: classic or quorum")
	fs.BoolVar(&cfg.Migrate, "migrate", false, "apply pending migrations before serving")
	fs.BoolVar(&cfg.BundleMessages, "bundle-messages", false, "carry the commands for one participant that are ready together in one broker message (docs/protocol.md §16); only when every worker reads bundles")
	fs.IntVar(&cfg.MaxPayloadBytes, "max-payload-bytes", eng.MaxPayloadBytes, "largest saga input or transaction payload accepted, in bytes; at most 1048576")
	fs.Int32Var(&cfg.DBMaxConns, "db-max-conns", def.DBMaxConns, "database pool size")
	fs.StringVar(&cfg.Name, "name", def.Name, "instance name, used in broker connection names and logs")
	fs.DurationVar(&cfg.Retention, "retention", eng.Retention, "delete finished sagas and transactions older than this, and tell their participants' barriers they are final; a negative value keeps them forever")
	fs.DurationVar(&cfg.RetentionInterval, "retention-interval", eng.RetentionInterval, "how often the deletion of finished sagas and transactions runs")
	fs.IntVar(&cfg.MaxActiveSagas, "max-active-sagas", eng.MaxActiveSagas, "StartSaga returns RESOURCE_EXHAUSTED while this many sagas are running or compensating (whole database, counted each second); negative: no limit")
	fs.IntVar(&cfg.ReplyWorkers, "reply-workers", eng.ReplyWorkers, "reply batches this instance writes at once; one gives the largest batches (most replies per transaction)")
	fs.IntVar(&cfg.StartWorkers, "start-workers", eng.StartWorkers, "StartSaga batches this instance writes at once; one gives the largest batches")
	fs.Float64Var(&cfg.RateLimit, "rate-limit", def.RateLimit, "API calls per second each caller may make on average (its identity, else its host); beyond it RESOURCE_EXHAUSTED with a RetryInfo; negative: no limit")
	fs.IntVar(&cfg.RateBurst, "rate-burst", def.RateBurst, "API calls a caller may make at once")
	fs.IntVar(&cfg.MaxWatchesPerCaller, "max-watches-per-caller", def.MaxWatchesPerCaller, "open WatchSaga and WatchTransaction streams per caller; negative: no limit")
	fs.IntVar(&cfg.MaxWatches, "max-watches", def.MaxWatches, "open watch streams of all callers together; negative: no limit")
	fs.StringVar(&cfg.DebugAddr, "debug-listen", "", "serve net/http/pprof on this address, e.g. 127.0.0.1:6060")
	fs.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "export traces with OTLP over gRPC to this host:port or URL, e.g. http://jaeger:4317; empty: no tracing")
	fs.StringVar(&cfg.MetricsAddr, "metrics-listen", "", "serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9464; empty: no metrics")
	for flag, env := range map[string]string{
		"amqp-url": "SAGACOORD_AMQP_URL", "listen": "SAGACOORD_LISTEN", "queue-type": "SAGACOORD_QUEUE_TYPE",
		"migrate": "SAGACOORD_MIGRATE", "bundle-messages": "SAGACOORD_BUNDLE_MESSAGES", "name": "SAGACOORD_NAME", "debug-listen": "SAGACOORD_DEBUG_LISTEN",
		// The OpenTelemetry SDKs' own variable, so one setting serves every process.
		"otlp-endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT", "metrics-listen": "SAGACOORD_METRICS_LISTEN",
	} {
		cmdline.Env(fs, flag, env)
	}
	cmdline.FileFlag(fs, "amqp-url", "SAGACOORD_AMQP_URL_FILE")
	securityFlags(fs, cfg)
	if testHooks != nil {
		opts.applyHooks = testHooks(fs)
	}
}

// securityFlags registers the flags of the API's TLS and authentication (README.md, section
// Production). Every one is off by default.
func securityFlags(fs *pflag.FlagSet, cfg *coordinator.Config) {
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "serve the API over TLS with this certificate (PEM, with intermediates); re-read when it changes")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "the key of --tls-cert (PEM)")
	fs.StringVar(&cfg.TLSClientCAFile, "tls-client-ca", "", "verify client certificates against these CAs (PEM); a certificate's subject common name is the caller")
	fs.BoolVar(&cfg.TLSRequireClientCert, "tls-require-client-cert", false, "refuse connections without a client certificate verified by --tls-client-ca")
	fs.StringVar(&cfg.CredentialsFile, "credentials-file", "", "authenticate calls with the tokens and certificate identities of this YAML file, and check their roles; re-read when it changes")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "allow a listen address that is not loopback without TLS and credentials (a trusted network only)")
	fs.BoolVar(&cfg.Reflection, "reflection", false, "serve gRPC server reflection (for grpcurl)")
	fs.StringVar(&cfg.ConsoleAddr, "console-listen", "", "serve the operator web console on this address (TLS and credentials as the API's), e.g. 127.0.0.1:8080; empty: no console")
	fs.StringVar(&cfg.ConsoleTraceURL, "console-trace-url", "", "link a saga's trace id on the console: {trace_id} is replaced, e.g. http://jaeger:16686/trace/{trace_id}")
	fs.StringVar(&cfg.ConsoleRabbitAPI, "console-rabbitmq-api", "", "show the participants' queues on the console from RabbitMQ's management API at this URL, e.g. http://guest:guest@127.0.0.1:15672 (the vhost is the AMQP URL's)")
	for flag, env := range map[string]string{
		"tls-cert": "SAGACOORD_TLS_CERT", "tls-key": "SAGACOORD_TLS_KEY", "tls-client-ca": "SAGACOORD_TLS_CLIENT_CA",
		"tls-require-client-cert": "SAGACOORD_TLS_REQUIRE_CLIENT_CERT", "credentials-file": "SAGACOORD_CREDENTIALS_FILE",
		"insecure": "SAGACOORD_INSECURE", "reflection": "SAGACOORD_REFLECTION",
		"console-listen": "SAGACOORD_CONSOLE_LISTEN", "console-trace-url": "SAGACOORD_CONSOLE_TRACE_URL",
		"console-rabbitmq-api": "SAGACOORD_CONSOLE_RABBITMQ_API",
	} {
		cmdline.Env(fs, flag, env)
	}
	cmdline.FileFlag(fs, "console-rabbitmq-api", "SAGACOORD_CONSOLE_RABBITMQ_API_FILE")
}

// serve starts the coordinator and serves until a signal or the gRPC server's end.
func serve(ctx context.Context, cfg coordinator.Config, opts serveOptions, stdout, stderr io.Writer) error {
	log, err := logger(stderr, opts.logLevel)
	if err != nil {
		return fail(exitUsage, "coordinator: %v", err)
	}
	cfg.Logger = log
	// The exporters report their errors (an unreachable collector, say) through OpenTelemetry's
	// global handler; send them to the log instead of the standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("telemetry", "err", err) }))
	if opts.applyHooks != nil {
		opts.applyHooks(&cfg, log)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := coordinator.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while waiting for the database or the broker", "err", err)
			return nil
		}
		return fail(exitFailed, "coordinator: %v", err)
	}
	// Printed once the API serves: scripts wait for this line.
	fmt.Fprintf(stdout, "coordinator listening on %s\n", c.Addr())
	if a := c.ConsoleAddr(); a != "" {
		scheme := "http"
		if cfg.TLSCertFile != "" {
			scheme = "https"
		}
		fmt.Fprintf(stdout, "coordinator console on %s://%s/\n", scheme, a)
	}
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
	return nil
}
