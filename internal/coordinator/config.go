package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/console"
	"github.com/sagacoord/sagacoord/internal/secrets"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// The URLs of the machine's own PostgreSQL and RabbitMQ: the defaults of `coordinator serve`.
// Start itself requires both URLs.
const (
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultAMQPURL     = "amqp://guest:guest@127.0.0.1:5672/"
)

// Config is the coordinator's configuration. Flags and environment variables map onto it (see
// cmd/coordinator, whose flags take their defaults from WithDefaults and engine.Config's).
type Config struct {
	// DatabaseURL is the PostgreSQL URL. Required.
	DatabaseURL string
	// AMQPURL is the RabbitMQ URL. Required.
	AMQPURL string
	// ListenAddr is the gRPC listen address. Default 127.0.0.1:7233.
	ListenAddr string
	// QueueType is "classic" (default) or "quorum".
	QueueType string
	// BundleMessages carries the commands for one participant that are published together in
	// one broker message (amqptransport.Config.Bundle, docs/protocol.md §16). Off by default:
	// turn it on once every worker reads bundles.
	BundleMessages bool
	// Migrate applies pending migrations at start instead of refusing to serve.
	Migrate bool
	// MaxPayloadBytes bounds a saga's input and a transaction's payloads
	// (engine.Config.MaxPayloadBytes, at most engine.MaxPayloadLimit).
	MaxPayloadBytes int
	// DBMaxConns sizes the pool. Default 16.
	DBMaxConns int32
	// Name identifies the process in broker connection names and logs. Default "coordinator".
	Name string
	// Retention is how long finished sagas and transactions are kept (engine.Config.Retention).
	Retention time.Duration
	// RetentionInterval is how often the deletion runs (engine.Config.RetentionInterval).
	RetentionInterval time.Duration
	// MaxActiveSagas bounds running and compensating sagas (engine.Config.MaxActiveSagas).
	MaxActiveSagas int
	// ReplyWorkers and StartWorkers are engine.Config's: how many reply batches and start
	// batches this instance writes at once. 0 takes the engine's defaults.
	ReplyWorkers, StartWorkers int
	// RateLimit is the API calls per second each caller may make on average (an authenticated
	// identity, else the host it calls from); beyond it a call fails with ResourceExhausted and
	// a RetryInfo. Default 2000; negative: no limit.
	RateLimit float64
	// RateBurst is how many calls a caller may make at once. Default 4000.
	RateBurst int
	// MaxWatchesPerCaller bounds one caller's open WatchSaga and WatchTransaction streams.
	// Default 1024; negative: no limit.
	MaxWatchesPerCaller int
	// MaxWatches bounds the open watch streams of all callers together. Default 4096; negative:
	// no limit.
	MaxWatches int
	// DebugAddr, when set, serves net/http/pprof on this address (for profiling; keep it private).
	DebugAddr string
	// OTLPEndpoint, when set, exports traces over OTLP gRPC to it (host:port or a URL such as
	// http://jaeger:4317). Default: no tracing, at no cost.
	OTLPEndpoint string
	// MetricsAddr, when set, serves Prometheus metrics on http://MetricsAddr/metrics. Default: no
	// metrics.
	MetricsAddr string
	// TLSCertFile and TLSKeyFile, when set, serve the API over TLS with this certificate (PEM,
	// with its intermediates) and key, re-read when they change. Default: plaintext.
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile, when set, verifies client certificates against the CAs in this PEM file;
	// a verified certificate's subject common name is the caller. Needs TLS and CredentialsFile.
	TLSClientCAFile string
	// TLSRequireClientCert refuses connections without a client certificate TLSClientCAFile
	// verifies. Default: a certificate is verified when given.
	TLSRequireClientCert bool
	// CredentialsFile, when set, authenticates every call but health's and checks its role
	// (internal/auth: hashed tokens, certificate identities); it needs TLS. Default: no
	// authentication, every call is allowed and its caller is "anonymous".
	CredentialsFile string
	// Insecure allows a listen address that is not loopback without TLS and credentials, for a
	// network that is trusted (local use). Default false: such an address is refused.
	Insecure bool
	// Reflection serves gRPC server reflection. Default off.
	Reflection bool
	// ConsoleAddr, when set, serves the operator web console (internal/console) on this
	// address, over TLS with the API's certificate when TLSCertFile is set, behind the same
	// credentials; the same rule as ListenAddr's refuses an address that is not loopback. Default
	// off.
	ConsoleAddr string
	// ConsoleTraceURL links a saga's trace id on the console: "{trace_id}" is replaced, e.g.
	// http://jaeger:16686/trace/{trace_id}. Default: no link.
	ConsoleTraceURL string
	// ConsoleRabbitAPI, when set, is RabbitMQ's management API with its credentials
	// (http://user:password@host:15672): the console's participants page reads their queues
	// there, in the vhost of AMQPURL. Default: the page shows the coordinator's figures alone.
	ConsoleRabbitAPI string
	// TracerProvider and MeterProvider, when set, replace the OTLP exporter and the /metrics
	// endpoint (tests use in-memory ones). The tracer provider must use telemetry.IDGenerator
	// (traceexport.NewTracerProvider does).
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Logger receives JSON logs. Default: discard.
	Logger *slog.Logger
	// Test holds hooks for tests; production leaves it zero.
	Test TestConfig
}

// TestConfig holds the coordinator's test hooks, handed to the outbox relay and the engine.
type TestConfig struct {
	// DisableOutbox never publishes: a coordinator that loses messages, which the chaos
	// checks must catch.
	DisableOutbox bool
	// AfterConfirm runs after the broker confirmed a batch of outbox rows and before they are
	// deleted.
	AfterConfirm func()
	// BeforeCommitDecision runs in the transaction that would log a 2PC COMMIT decision, before
	// it commits.
	BeforeCommitDecision func(txID uuid.UUID)
}

// WithDefaults returns c with defaults filled in: the one place the coordinator's own defaults
// are written (the engine's are in engine.Config.WithDefaults).
func (c Config) WithDefaults() Config {
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:7233"
	}
	if c.QueueType == "" {
		c.QueueType = "classic"
	}
	if c.DBMaxConns == 0 {
		c.DBMaxConns = 16
	}
	if c.Name == "" {
		c.Name = "coordinator"
	}
	if c.RateLimit == 0 {
		c.RateLimit = 2000
	}
	if c.RateBurst == 0 {
		c.RateBurst = 4000
	}
	if c.MaxWatchesPerCaller == 0 {
		c.MaxWatchesPerCaller = 1024
	}
	if c.MaxWatches == 0 {
		c.MaxWatches = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if c.DatabaseURL == "" {
		return errors.New("database URL is required (--database-url or SAGACOORD_DATABASE_URL)")
	}
	if c.AMQPURL == "" {
		return errors.New("AMQP URL is required (--amqp-url or SAGACOORD_AMQP_URL)")
	}
	if c.QueueType != "classic" && c.QueueType != "quorum" {
		return fmt.Errorf("queue type %q must be classic or quorum", c.QueueType)
	}
	// The URLs are checked here, before Start waits for what they name: no retry mends them.
	if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
		return fmt.Errorf("database URL: %w", err)
	}
	if err := c.transportConfig().Validate(); err != nil {
		return fmt.Errorf("AMQP URL: %w", err)
	}
	if err := console.CheckRabbitAPI(c.ConsoleRabbitAPI); err != nil {
		return err
	}
	return c.validateSecurity()
}

// transportConfig is the broker transport's configuration.
func (c Config) transportConfig() amqptransport.Config {
	return amqptransport.Config{URL: c.AMQPURL, QueueType: c.QueueType, Bundle: c.BundleMessages, Logger: c.Logger, ConnectionName: c.Name}
}

// Redact hides the passwords of a URL for logs (secrets.Redact).
func Redact(raw string) string { return secrets.Redact(raw) }
