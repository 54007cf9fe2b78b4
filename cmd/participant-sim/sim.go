package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/conformance"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/transport"
)

// sim runs the configured participants in one process, each a participant.Worker with its own
// schema and ledger, sharing one database pool and one transport.
type sim struct {
	log     *slog.Logger
	track   *inflight
	workers []*participant.Worker
	ledgers []*ledger
	configs []participantConfig
	// contracts holds, for a participant of kind conformance, its contract; nil for the others.
	contracts []*conformance.Contract
}

// newSim builds the workers. exit is how an injected crash ends the process (os.Exit outside
// tests).
func newSim(cfg simConfig, db *pgxpool.Pool, tr transport.Transport, log *slog.Logger, exit func(int)) (*sim, error) {
	return newSimWith(cfg, db, tr, log, exit, nil, nil)
}

// newSimWith is newSim whose workers trace with tp and record metrics with mp (nil: off).
func newSimWith(cfg simConfig, db *pgxpool.Pool, tr transport.Transport, log *slog.Logger, exit func(int), tp trace.TracerProvider, mp metric.MeterProvider) (*sim, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &sim{log: log, track: newInflight()}
	for _, p := range cfg.Participants {
		plog := log.With("participant", p.Name)
		schema := schemaOf(cfg.SchemaPrefix, p.Name)
		d := dice{seed: cfg.Seed, participant: p.Name}
		var handlerTimeout time.Duration
		if p.hangsUnbounded() {
			handlerTimeout = -1 // unbounded hangs last until shutdown (see faults.HangProbability)
		}
		w, err := participant.New(participant.Config{
			Name:           p.Name,
			SkipDeclare:    cfg.SkipDeclare,
			HandlerTimeout: handlerTimeout,
			Transport:      tr,
			DB:             db,
			Schema:         schema,
			Prefetch:       p.Prefetch,
			Concurrency:    p.Concurrency,
			MaxBatch:       p.MaxBatch,
			Logger:         log,
			OnCommitted:    crashAfterCommit(p, d, plog, exit),
			OnTxCommitted:  crashAfterTxCommit(p, d, plog, exit),
			TracerProvider: tp,
			MeterProvider:  mp,
		})
		if err != nil {
			return nil, fmt.Errorf("participant %s: %w", p.Name, err)
		}
		l := newLedger(schema, p.Kind)
		var contract *conformance.Contract
		switch p.Kind {
		case kindConformance:
			contract = &conformance.Contract{Schema: schema}
			contract.Register(w)
		case kindNoop:
			w.HandleDefault(withFaults(p, d, s.track, plog, noop))
			w.HandleTx(withTxFaults(p, d, s.track, plog, noopTx()))
		default:
			w.HandleTx(withTxFaults(p, d, s.track, plog, l.txHandlers()))
			for action, h := range l.handlers() {
				w.Handle(action, withFaults(p, d, s.track, plog, h))
			}
			w.HandleDefault(l.unknown(p.Name))
		}
		s.workers = append(s.workers, w)
		s.ledgers = append(s.ledgers, l)
		s.configs = append(s.configs, p)
		s.contracts = append(s.contracts, contract)
	}
	return s, nil
}

// migrate creates each participant's barrier and ledger tables and seeds its accounts; it is
// idempotent and keeps existing balances.
func (s *sim) migrate(ctx context.Context, db *pgxpool.Pool) error {
	for i, w := range s.workers {
		p := s.configs[i]
		if err := w.Migrate(ctx); err != nil {
			return fmt.Errorf("participant %s: %w", p.Name, err)
		}
		if err := s.ledgers[i].migrate(ctx, db, p.SeedAccounts, p.InitialBalance); err != nil {
			return fmt.Errorf("participant %s: %w", p.Name, err)
		}
		if c := s.contracts[i]; c != nil {
			if err := c.Migrate(ctx, db); err != nil {
				return fmt.Errorf("participant %s: %w", p.Name, err)
			}
		}
	}
	return nil
}

// start starts every worker; on an error it stops those already started. ctx bounds their life
// (see participant.Worker.Start).
func (s *sim) start(ctx context.Context) error {
	for i, w := range s.workers {
		if err := w.Start(ctx); err != nil {
			s.stop()
			return err
		}
		p := s.configs[i]
		s.log.Info("participant running", "participant", p.Name, "kind", p.Kind, "schema", s.ledgers[i].schema)
	}
	return nil
}

// stop stops every worker gracefully, in parallel.
func (s *sim) stop() {
	var wg sync.WaitGroup
	for _, w := range s.workers {
		wg.Go(w.Stop)
	}
	wg.Wait()
}

// shutdown stops gracefully. A hung handler (hang_probability) waits for shutdown by design, so
// once only hung handlers are left, or after grace, it ends the workers' context (cancel) and
// their commands are redelivered to the next process.
func (s *sim) shutdown(grace time.Duration, cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() {
		s.stop()
		close(done)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for {
		active, hung, changed := s.track.counts()
		if hung > 0 && active == hung {
			s.log.Info("only hung handlers are left; ending them", "hung", hung)
			cancel()
			<-done
			return
		}
		select {
		case <-done:
			return
		case <-timer.C:
			s.log.Warn("graceful stop took longer than the grace period; ending the handlers in flight", "grace", grace)
			cancel()
			<-done
			return
		case <-changed:
		}
	}
}
