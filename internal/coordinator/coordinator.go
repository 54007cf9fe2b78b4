// Package coordinator assembles a coordinator process: database pool, broker transport, outbox
// relay, engine and gRPC server, with their configuration.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/lifecycle"
	"github.com/sagacoord/sagacoord/internal/server"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/internal/telemetry/otelsetup"
	"github.com/sagacoord/sagacoord/internal/telemetry/pgxtrace"
	"github.com/sagacoord/sagacoord/migrations"
	"github.com/sagacoord/sagacoord/outbox"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

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
	sagas     *server.SagaService
	txs       *server.TwoPCService
	ready     *server.Readiness
	grpc      *grpc.Server
	lis       net.Listener
	served    chan error
	debug     *http.Server
	limiter   *server.Limiter
	// consoleLis and console serve the operator console (console.go) when ConsoleAddr is set.
	consoleLis net.Listener
	console    *http.Server
}

// Start listens, connects, checks the schema, and serves until Stop. It listens first, with
// health NOT_SERVING and the API Unavailable, and waits for the database and the broker as long
// as ctx lasts (lifecycle.Connect), so that a coordinator started before them serves once they
// answer. It returns once the API serves.
func Start(ctx context.Context, cfg Config) (*Coordinator, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// The API's certificate and credentials are read first: a mistake in them fails the start
	// before anything connects.
	secure, creds, err := apiSecurity(cfg)
	if err != nil {
		return nil, err
	}
	c := &Coordinator{cfg: cfg, served: make(chan error, 1), ready: server.NewReadiness(),
		sagas: &server.SagaService{Logger: cfg.Logger}, txs: &server.TwoPCService{Logger: cfg.Logger}}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	inst, err := c.startTelemetry(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.listen(append(inst.grpcOpts, secure...), creds); err != nil {
		return nil, err
	}
	if err := c.listenConsole(); err != nil {
		return nil, err
	}
	cfg.Logger.Info("coordinator listening, not serving until it reaches the database and the broker", "addr", c.lis.Addr().String())
	if err := lifecycle.Connect(ctx, cfg.Logger, "the database or the broker", func(ctx context.Context) error {
		return c.connect(ctx, inst)
	}); err != nil {
		return nil, err
	}
	c.sagas.Engine, c.txs.Engine = c.engine, c.engine
	c.ready.Serve()
	c.serveConsole(creds)
	cfg.Logger.Info("coordinator serving", "addr", c.lis.Addr().String(), "database", Redact(cfg.DatabaseURL), "amqp", Redact(cfg.AMQPURL))
	ok = true
	return c, nil
}

// connect opens the database and starts the engine. On failure it closes what it opened, so that
// the next attempt starts afresh.
func (c *Coordinator) connect(ctx context.Context, inst instruments) error {
	err := c.openDatabase(ctx, inst.pgTracer)
	if err == nil {
		err = c.startEngine(ctx, inst)
	}
	if err != nil {
		c.disconnect()
	}
	return err
}

// instruments are what the telemetry gives the parts: nil providers (and tracer) turn their
// instruments off entirely.
type instruments struct {
	tp       trace.TracerProvider
	mp       metric.MeterProvider
	pgTracer pgx.QueryTracer
	grpcOpts []grpc.ServerOption
}

func (c *Coordinator) startTelemetry(ctx context.Context) (instruments, error) {
	var (
		cfg  = c.cfg
		inst instruments
		err  error
	)
	c.telemetry, err = otelsetup.Start(ctx, otelsetup.Config{
		ServiceName: "sagacoord-coordinator", InstanceName: cfg.Name,
		OTLPEndpoint: cfg.OTLPEndpoint, MetricsAddr: cfg.MetricsAddr,
		TracerProvider: cfg.TracerProvider, MeterProvider: cfg.MeterProvider, Logger: cfg.Logger,
	})
	if err != nil {
		return inst, err
	}
	tel := c.telemetry
	var queries, counts pgx.QueryTracer
	if tel.Tracing() {
		inst.tp = tel.TracerProvider
		queries = pgxtrace.NewQueryTracer(inst.tp)
	}
	if tel.Metrics() {
		inst.mp = tel.MeterProvider
		counter := &pgxtrace.Counter{}
		if err := counter.Register(inst.mp); err != nil {
			return inst, fmt.Errorf("database metrics: %w", err)
		}
		counts = counter
	}
	inst.pgTracer = pgxtrace.With(queries, counts)
	if inst.tp != nil || inst.mp != nil {
		inst.grpcOpts = append(inst.grpcOpts, grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tel.TracerProvider), otelgrpc.WithMeterProvider(tel.MeterProvider),
			otelgrpc.WithPropagators(telemetry.Propagator))))
	}
	return inst, nil
}

// openDatabase opens the pool, applies the migrations when asked to, and checks the schema.
func (c *Coordinator) openDatabase(ctx context.Context, tracer pgx.QueryTracer) error {
	var err error
	if c.pool, err = openPool(ctx, c.cfg.DatabaseURL, c.cfg.DBMaxConns, tracer); err != nil {
		return err
	}
	mig := &migrations.Migrator{Pool: c.pool}
	if c.cfg.Migrate {
		applied, err := mig.Up(ctx)
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			c.cfg.Logger.Info("applied migrations", "versions", applied)
		}
	}
	if err := mig.Check(ctx); err != nil {
		if errors.Is(err, migrations.ErrSchemaOutOfDate) || errors.Is(err, migrations.ErrSchemaTooNew) {
			return lifecycle.Permanent(err)
		}
		return err
	}
	return nil
}

// startEngine connects to the broker and starts the outbox relay and the engine.
func (c *Coordinator) startEngine(ctx context.Context, inst instruments) error {
	cfg, log := c.cfg, c.cfg.Logger
	var err error
	c.transport, err = amqptransport.New(ctx, cfg.transportConfig())
	if err != nil {
		return err
	}
	st := pgstore.New(c.pool, pgstore.Config{})
	c.relay = outbox.NewRelay(st.Outbox(), c.transport, outbox.Config{Logger: log, MeterProvider: inst.mp,
		Test: outbox.TestConfig{Disabled: cfg.Test.DisableOutbox, AfterConfirm: cfg.Test.AfterConfirm}})
	c.engine, err = engine.New(engine.Config{
		Store: st, Transport: c.transport, Relay: c.relay, Logger: log, MaxPayloadBytes: cfg.MaxPayloadBytes, Retention: cfg.Retention, RetentionInterval: cfg.RetentionInterval,
		MaxActiveSagas: cfg.MaxActiveSagas, ReplyWorkers: cfg.ReplyWorkers, StartWorkers: cfg.StartWorkers,
		TracerProvider: inst.tp, MeterProvider: inst.mp, Test: engine.TestConfig{BeforeCommitDecision: cfg.Test.BeforeCommitDecision},
	})
	if err != nil {
		return lifecycle.Permanent(err)
	}
	if err := c.relay.Start(ctx); err != nil {
		return err
	}
	return c.engine.Start(ctx)
}

// listen serves the gRPC API on ListenAddr, with grpcOpts and the guard of creds, and pprof on
// DebugAddr when it is set.
func (c *Coordinator) listen(grpcOpts []grpc.ServerOption, creds *auth.CredentialsFile) error {
	cfg, log := c.cfg, c.cfg.Logger
	var err error
	c.lis, err = net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
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
			return fmt.Errorf("listen on %s (debug): %w", cfg.DebugAddr, err)
		}
		c.debug = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = c.debug.Serve(dl) }()
	}
	c.limiter = server.NewLimiter(server.Limits{
		Rate: cfg.RateLimit, Burst: cfg.RateBurst, WatchesPerCaller: cfg.MaxWatchesPerCaller, Watches: cfg.MaxWatches,
	})
	c.grpc = server.NewGRPCServer(c.sagas, c.txs, server.Options{
		GRPC: grpcOpts, Credentials: creds, Limiter: c.limiter, Reflection: cfg.Reflection, Logger: log, Readiness: c.ready,
	})
	go func() { c.served <- c.grpc.Serve(c.lis) }()
	return nil
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
	if c.ready != nil {
		c.ready.Shutdown()
	}
	if c.debug != nil {
		_ = c.debug.Close()
	}
	c.stopConsole()
	if c.grpc != nil {
		done := make(chan struct{})
		go func() { c.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.grpc.Stop()
		}
	}
	c.disconnect()
	if c.telemetry != nil {
		// Flushes the spans of the last events.
		if err := c.telemetry.Shutdown(context.Background()); err != nil {
			c.cfg.Logger.Warn("shut down telemetry", "err", err)
		}
	}
}

// disconnect stops the engine and the relay and closes the broker and database connections, in
// that order; each part may be missing.
func (c *Coordinator) disconnect() {
	if c.engine != nil {
		c.engine.Stop()
		c.engine = nil
	}
	if c.relay != nil {
		c.relay.Stop()
		c.relay = nil
	}
	if c.transport != nil {
		_ = c.transport.Close()
		c.transport = nil
	}
	if c.pool != nil {
		c.pool.Close()
		c.pool = nil
	}
}
