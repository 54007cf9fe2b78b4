// Package engine drives sagas and two-phase-commit transactions. It wires the pure state machines
// (packages saga and twopc) to the store, where every transition commits in one transaction with
// the commands it causes; to the outbox relay, which publishes those commands right after the
// commit; and to the transport, whose replies are acknowledged only after their effect committed.
// It holds nothing in memory that a crash would lose: any instance may serve any saga, and several
// instances share one database.
//
// A newcomer's map, one concern a file:
//
//	engine.go       the Engine: New, Start, Stop
//	config.go       Config and its defaults
//	definitions.go  the definition cache, RegisterDefinition, participant queues
//	starts.go       StartSaga, written in batches (group commit)
//	twopc.go        BeginTransaction, GetTransaction, presumed abort
//	operator.go     AbortSaga, RetrySaga
//	replies.go      the reply consumer: decode, apply, acknowledge
//	apply.go        the one batch-apply that saga and 2PC events go through
//	sagas.go        sagas as the batch-apply sees them: replies, ticks, commands
//	transactions.go transactions as the batch-apply sees them
//	timers.go       the timer loop
//	observe*.go     spans, metrics and logs, made from the machines' events after each commit
//
// The maintenance loops (retention, admission counting) live in internal/maintenance.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"

	"github.com/sagacoord/sagacoord/internal/lifecycle"
	"github.com/sagacoord/sagacoord/internal/maintenance"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
)

// Errors the API maps to gRPC codes. Each is wrapped with a message that names what was wrong.
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = store.ErrNotFound
	ErrAlreadyExists      = errors.New("already exists")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrResourceExhausted  = errors.New("resource exhausted")
)

// Engine runs sagas and transactions. Create it with New, then Start it; Stop is idempotent.
type Engine struct {
	cfg  Config
	log  *slog.Logger
	obs  *observer
	defs *definitions
	// gauges reads the database for the gauges; unregistered by Stop.
	gauges metric.Registration
	// knownParticipants caches participants whose queue exists (queues are durable).
	knownParticipants sync.Map

	sagas   *table[*store.Saga]
	txs     *table[*store.Tx]
	sagaHub hub[*store.Saga]
	txHub   hub[*store.Tx]
	// listening: the store tells which rows other instances change (see listen).
	listening atomic.Bool

	starts chan *startCall
	kick   chan time.Time // to the timer loop: a timer falls due at this local time
	active *maintenance.ActiveCounter

	group lifecycle.Group
}

// New returns an engine.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	obs, err := newObserver(cfg.Logger, cfg.TracerProvider, cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("engine metrics: %w", err)
	}
	e := &Engine{
		cfg: cfg, log: cfg.Logger, obs: obs,
		defs:   &definitions{store: cfg.Store},
		starts: make(chan *startCall, cfg.MaxPendingStarts),
		kick:   make(chan time.Time, 16),
		active: &maintenance.ActiveCounter{Store: cfg.Store, Interval: cfg.ActiveCountInterval, Logger: cfg.Logger},
	}
	e.sagas = e.sagaTable()
	e.txs = e.txTable()
	return e, nil
}

// Start declares the broker topology and the queues of every known participant, and starts the
// reply consumers, the start batches, the timer loop and the maintenance loops.
func (e *Engine) Start(ctx context.Context) error {
	if err := e.cfg.Transport.DeclareTopology(ctx); err != nil {
		return fmt.Errorf("declare broker topology: %w", err)
	}
	defs, err := e.cfg.Store.ListDefinitions(ctx, store.DefinitionFilter{})
	if err != nil {
		return err
	}
	for _, d := range defs {
		if err := e.declareParticipants(ctx, d); err != nil {
			return err
		}
	}
	ctx, err = e.group.Start(ctx)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	// The consumer ends with the group, so Stop also stops taking replies.
	deliveries, err := e.cfg.Transport.Consume(ctx, protocol.QueueReplies, e.cfg.ReplyPrefetch)
	if err != nil {
		e.group.Stop()
		return fmt.Errorf("consume replies: %w", err)
	}
	if e.cfg.MeterProvider != nil {
		if e.gauges, err = registerGauges(e.cfg.MeterProvider, e.cfg.Store, e.log); err != nil {
			e.group.Stop()
			return fmt.Errorf("engine gauges: %w", err)
		}
	}
	for range e.cfg.ReplyWorkers {
		e.group.Go(func() { e.consumeReplies(ctx, deliveries) })
	}
	for range e.cfg.StartWorkers {
		e.group.Go(func() { e.startLoop(ctx) })
	}
	e.group.Go(func() { e.timerLoop(ctx) })
	if n, ok := e.cfg.Store.(store.Notifier); ok {
		e.group.Go(func() { e.listen(ctx, n) })
	}
	if e.cfg.MaxActiveSagas > 0 {
		e.group.Go(func() { e.active.Run(ctx) })
	}
	if e.cfg.Retention > 0 {
		r := &maintenance.Retainer{Store: e.cfg.Store, Retention: e.cfg.Retention, Interval: e.cfg.RetentionInterval, Logger: e.log}
		e.group.Go(func() { r.Run(ctx) })
	}
	return nil
}

// Stop stops consuming and waits for in-flight batches to finish. Unacknowledged replies are
// redelivered to another instance.
func (e *Engine) Stop() {
	if !e.group.Stop() {
		return
	}
	if e.gauges != nil {
		_ = e.gauges.Unregister()
	}
}

// GetSaga returns a saga.
func (e *Engine) GetSaga(ctx context.Context, id uuid.UUID) (*store.Saga, error) {
	return e.cfg.Store.GetSaga(ctx, id)
}

// Store returns the engine's store, for read-only queries.
func (e *Engine) Store() store.Store { return e.cfg.Store }
