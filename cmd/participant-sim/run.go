package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/lifecycle"
	"github.com/sagacoord/sagacoord/internal/secrets"
	"github.com/sagacoord/sagacoord/internal/telemetry/otelsetup"
	"github.com/sagacoord/sagacoord/internal/telemetry/pgxtrace"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// run runs the simulator until ctx ends, then stops gracefully. exit ends the process for an
// injected crash.
func run(ctx context.Context, o options, stderr io.Writer, exit func(int)) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", o.logLevel)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := o.simConfig()
	if err != nil {
		return err
	}
	tel, tp, mp, err := startTelemetry(ctx, o, log)
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
	db, tr, err := connect(ctx, o, log, tp, mp)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while waiting for the database or the broker", "err", err)
			return nil
		}
		return err
	}
	defer db.Close()
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

// connect opens the database and the broker, waiting for them as long as ctx lasts
// (lifecycle.Connect): a simulator started before them works once they answer.
func connect(ctx context.Context, o options, log *slog.Logger, tp trace.TracerProvider, mp metric.MeterProvider) (*pgxpool.Pool, *amqptransport.Transport, error) {
	poolCfg, err := poolConfig(o, tp, mp)
	if err != nil {
		return nil, nil, err
	}
	trCfg := amqptransport.Config{URL: o.amqpURL, QueueType: o.queueType, Bundle: o.bundleMessages, ConnectionName: "participant-sim", Logger: log}
	if err := trCfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("--amqp-url: %w", err)
	}
	var (
		db *pgxpool.Pool
		tr *amqptransport.Transport
	)
	err = lifecycle.Connect(ctx, log, "the database or the broker", func(ctx context.Context) error {
		var err error
		if db, err = openDatabase(ctx, o, poolCfg); err != nil {
			return err
		}
		if tr, err = amqptransport.New(ctx, trCfg); err != nil {
			db.Close()
			return fmt.Errorf("connect to RabbitMQ %s: %w", redactURL(o.amqpURL), err)
		}
		return nil
	})
	return db, tr, err
}

// startTelemetry starts tracing and metrics as the flags say. The providers are nil when their
// part is off, which turns the SDK's instruments off entirely.
func startTelemetry(ctx context.Context, o options, log *slog.Logger) (*otelsetup.Telemetry, trace.TracerProvider, metric.MeterProvider, error) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("telemetry", "err", err) }))
	tel, err := otelsetup.Start(ctx, otelsetup.Config{ServiceName: "participant-sim", InstanceName: "participant-sim",
		OTLPEndpoint: o.otlpEndpoint, MetricsAddr: o.metricsAddr, Logger: log})
	if err != nil {
		return nil, nil, nil, err
	}
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
	return tel, tp, mp, nil
}

// poolConfig is the participants' pool configuration; with tp, the handlers' queries become
// children of their command's span; with mp, the pool's statements and commits are counted.
func poolConfig(o options, tp trace.TracerProvider, mp metric.MeterProvider) (*pgxpool.Config, error) {
	poolCfg, err := pgxpool.ParseConfig(o.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("--database-url %s: %w", redactURL(o.databaseURL), err)
	}
	var queries, counts pgx.QueryTracer
	if tp != nil {
		queries = pgxtrace.NewQueryTracer(tp)
	}
	if mp != nil {
		counter := &pgxtrace.Counter{}
		if err := counter.Register(mp); err != nil {
			return nil, fmt.Errorf("database metrics: %w", err)
		}
		counts = counter
	}
	poolCfg.ConnConfig.Tracer = pgxtrace.With(queries, counts)
	if !strings.Contains(o.databaseURL, "pool_max_conns") {
		poolCfg.MaxConns = int32(max(1, o.dbMaxConns))
	}
	return poolCfg, nil
}

// openDatabase opens the pool and checks that the database answers.
func openDatabase(ctx context.Context, o options, poolCfg *pgxpool.Config) (*pgxpool.Pool, error) {
	db, err := pgxpool.NewWithConfig(ctx, poolCfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", redactURL(o.databaseURL), err)
	}
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to database %s: %w (is PostgreSQL running, and the URL right?)", redactURL(o.databaseURL), err)
	}
	return db, nil
}

// redactURL masks the passwords of a URL (secrets.Redact).
func redactURL(raw string) string { return secrets.Redact(raw) }
