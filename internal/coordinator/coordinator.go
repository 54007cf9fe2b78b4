// Package coordinator assembles a coordinator process: database pool, broker transport, outbox
// relay, engine and gRPC server, with their configuration.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/server"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/internal/telemetry/otelsetup"
	"github.com/sagacoord/sagacoord/migrations"
	"github.com/sagacoord/sagacoord/outbox"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// Config is the coordinator's configuration. Flags and environment variables map onto it (see
// cmd/coordinator).
type Config struct {
	// DatabaseURL is the PostgreSQL URL. Required.
	DatabaseURL string
	// AMQPURL is the RabbitMQ URL. Required.
	AMQPURL string
	// ListenAddr is the gRPC listen address. Default 127.0.0.1:7233.
	ListenAddr string
	// QueueType is "classic" (default) or "quorum".
	QueueType string
	// Migrate applies pending migrations at start instead of refusing to serve.
	Migrate bool
	// MaxPayloadBytes bounds a saga's input. Default 256 KiB.
	MaxPayloadBytes int
	// DBMaxConns sizes the pool. Default 16.
	DBMaxConns int32
	// Name identifies the process in broker connection names and logs. Default "coordinator".
	Name string
	// Retention is how long finished sagas and transactions are kept (engine.Config.Retention).
	Retention time.Duration
	// MaxActiveSagas bounds running and compensating sagas (engine.Config.MaxActiveSagas).
	MaxActiveSagas int
	// ReplyWorkers and StartWorkers are engine.Config's: how many reply batches and start
	// batches this instance writes at once. 0 takes the engine's defaults.
	ReplyWorkers, StartWorkers int
	// DebugAddr, when set, serves net/http/pprof on this address (for profiling; keep it private).
	DebugAddr string
	// OTLPEndpoint, when set, exports traces over OTLP gRPC to it (host:port or a URL such as
	// http://jaeger:4317). Default: no tracing, at no cost.
	OTLPEndpoint string
	// MetricsAddr, when set, serves Prometheus metrics on http://MetricsAddr/metrics. Default: no
	// metrics.
	MetricsAddr string
	// TracerProvider and MeterProvider, when set, replace the OTLP exporter and the /metrics
	// endpoint (tests use in-memory ones). The tracer provider must use telemetry.IDGenerator
	// (otelsetup.NewTracerProvider does).
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

// WithDefaults returns c with defaults filled in.
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
	return nil
}

// Redact hides the password in a URL for logs.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// OpenPool opens a pool on the database URL.
func OpenPool(ctx context.Context, databaseURL string, maxConns int32) (*pgxpool.Pool, error) {
	return openPool(ctx, databaseURL, maxConns, nil)
}

// openPool opens a pool whose queries are traced by tracer when it is not nil.
func openPool(ctx context.Context, databaseURL string, maxConns int32, tracer pgx.QueryTracer) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	if maxConns > 0 {
		pc.MaxConns = maxConns
	}
	pgstore.ConfigurePool(pc)
	if tracer != nil {
		pc.ConnConfig.Tracer = tracer
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", Redact(databaseURL), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s: %w", Redact(databaseURL), err)
	}
	return pool, nil
}

// Coordinator is a running coordinator.
type Coordinator struct {
	cfg       Config
	telemetry *otelsetup.Telemetry
	pool      *pgxpool.Pool
	transport *amqptransport.Transport
	relay     *outbox.Relay
	engine    *engine.Engine
	grpc      *grpc.Server
	lis       net.Listener
	served    chan error
	debug     *http.Server
}

// Start connects, checks the schema, and serves until Stop.
func Start(ctx context.Context, cfg Config) (*Coordinator, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	c := &Coordinator{cfg: cfg, served: make(chan error, 1)}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	var err error
	c.telemetry, err = otelsetup.Start(ctx, otelsetup.Config{
		ServiceName: "sagacoord-coordinator", InstanceName: cfg.Name,
		OTLPEndpoint: cfg.OTLPEndpoint, MetricsAddr: cfg.MetricsAddr,
		TracerProvider: cfg.TracerProvider, MeterProvider: cfg.MeterProvider, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	// Nil providers turn the engine's and the relay's instruments off entirely.
	var (
		tp       trace.TracerProvider
		mp       metric.MeterProvider
		pgTracer pgx.QueryTracer
		grpcOpts []grpc.ServerOption
		tel      = c.telemetry
	)
	if tel.Tracing() {
		tp = tel.TracerProvider
		pgTracer = otelsetup.NewQueryTracer(tp)
	}
	if tel.Metrics() {
		mp = tel.MeterProvider
	}
	if tp != nil || mp != nil {
		grpcOpts = append(grpcOpts, grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tel.TracerProvider), otelgrpc.WithMeterProvider(tel.MeterProvider),
			otelgrpc.WithPropagators(telemetry.Propagator))))
	}
	if c.pool, err = openPool(ctx, cfg.DatabaseURL, cfg.DBMaxConns, pgTracer); err != nil {
		return nil, err
	}
	mig := &migrations.Migrator{Pool: c.pool}
	if cfg.Migrate {
		applied, err := mig.Up(ctx)
		if err != nil {
			return nil, err
		}
		if len(applied) > 0 {
			log.Info("applied migrations", "versions", applied)
		}
	}
	if err := mig.Check(ctx); err != nil {
		return nil, err
	}
	c.transport, err = amqptransport.New(ctx, amqptransport.Config{
		URL:            cfg.AMQPURL,
		QueueType:      cfg.QueueType,
		Logger:         log,
		ConnectionName: cfg.Name,
	})
	if err != nil {
		return nil, err
	}
	st := pgstore.New(c.pool, pgstore.Config{})
	c.relay = outbox.NewRelay(st.Outbox(), c.transport, outbox.Config{Logger: log, MeterProvider: mp,
		Test: outbox.TestConfig{Disabled: cfg.Test.DisableOutbox, AfterConfirm: cfg.Test.AfterConfirm}})
	c.engine, err = engine.New(engine.Config{
		Store: st, Transport: c.transport, Relay: c.relay, Logger: log, MaxPayloadBytes: cfg.MaxPayloadBytes, Retention: cfg.Retention,
		MaxActiveSagas: cfg.MaxActiveSagas, ReplyWorkers: cfg.ReplyWorkers, StartWorkers: cfg.StartWorkers,
		TracerProvider: tp, MeterProvider: mp, Test: engine.TestConfig{BeforeCommitDecision: cfg.Test.BeforeCommitDecision},
	})
	if err != nil {
		return nil, err
	}
	if err := c.relay.Start(ctx); err != nil {
		return nil, err
	}
	if err := c.engine.Start(ctx); err != nil {
		return nil, err
	}
	c.lis, err = net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	if cfg.DebugAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		dl, err := net.Listen("tcp", cfg.DebugAddr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s (debug): %w", cfg.DebugAddr, err)
		}
		c.debug = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = c.debug.Serve(dl) }()
	}
	c.grpc = server.NewGRPCServer(&server.SagaService{Engine: c.engine, Logger: log}, &server.TwoPCService{Engine: c.engine, Logger: log}, grpcOpts...)
	go func() { c.served <- c.grpc.Serve(c.lis) }()
	log.Info("coordinator serving", "addr", c.lis.Addr().String(), "database", Redact(cfg.DatabaseURL), "amqp", Redact(cfg.AMQPURL))
	ok = true
	return c, nil
}

// Addr returns the gRPC listen address.
func (c *Coordinator) Addr() string { return c.lis.Addr().String() }

// Engine returns the engine.
func (c *Coordinator) Engine() *engine.Engine { return c.engine }

// MetricsAddr returns the address /metrics is served on, or "" when metrics are off or come from
// Config.MeterProvider.
func (c *Coordinator) MetricsAddr() string { return c.telemetry.MetricsAddr() }

// Done returns a channel that receives the gRPC server's exit.
func (c *Coordinator) Done() <-chan error { return c.served }

// Stop shuts down gracefully: stops accepting calls, lets in-flight batches commit, closes
// connections. It is idempotent.
func (c *Coordinator) Stop() {
	if c.debug != nil {
		_ = c.debug.Close()
	}
	if c.grpc != nil {
		done := make(chan struct{})
		go func() { c.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.grpc.Stop()
		}
	}
	if c.engine != nil {
		c.engine.Stop()
	}
	if c.relay != nil {
		c.relay.Stop()
	}
	if c.transport != nil {
		_ = c.transport.Close()
	}
	if c.pool != nil {
		c.pool.Close()
	}
	if c.telemetry != nil {
		// Flushes the spans of the last events.
		if err := c.telemetry.Shutdown(context.Background()); err != nil {
			c.cfg.Logger.Warn("shut down telemetry", "err", err)
		}
	}
}
