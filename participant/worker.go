package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/metric"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// Handler applies one action or compensation. It must make its effect only through tx, the local
// transaction that also writes the barrier row, and must neither commit nor roll it back. cmd
// carries the saga input, the outputs of the steps the step depends on (actions) or the output of
// the action being undone (compensations; filled from the barrier when the command carries none).
//
// The returned error decides the reply: nil means succeeded with output (valid JSON or empty);
// a BusinessError (see Fail) means failed; any other error, or a panic, means retry.
type Handler func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (output json.RawMessage, err error)

// Worker consumes one participant's commands and runs its handlers through the barrier. Its
// methods are safe for concurrent use.
type Worker struct {
	cfg     Config
	log     *slog.Logger
	barrier *barrier
	tel     *instruments

	mu         sync.Mutex
	handlers   map[string]Handler
	fallback   Handler
	txHandlers *TxHandlers
	started    bool
	stopping   chan struct{}
	// cancelConsume stops the deliveries; cancelWork ends the handlers' context once they are
	// done (or at once, when the context given to Start ends).
	cancelConsume, cancelWork context.CancelFunc
	wg                        sync.WaitGroup
	stopOnce                  sync.Once
}

// New checks cfg (after WithDefaults) and returns a worker that is not yet consuming.
func New(cfg Config) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tel, err := newInstruments(cfg)
	if err != nil {
		return nil, fmt.Errorf("participant: metrics: %w", err)
	}
	log := cfg.Logger.With("participant", cfg.Name)
	var meter metric.Meter
	if cfg.MeterProvider != nil {
		meter = cfg.MeterProvider.Meter("github.com/sagacoord/sagacoord/participant")
	}
	hung, err := newHungWatch(log, cfg.Name, meter)
	if err != nil {
		return nil, fmt.Errorf("participant: metrics: %w", err)
	}
	b := newBarrier(cfg.DB, cfg.Schema, cfg.HandlerTimeout, cfg.LockWait)
	b.hung = hung
	return &Worker{
		cfg:      cfg,
		tel:      tel,
		log:      log,
		barrier:  b,
		handlers: make(map[string]Handler),
		stopping: make(chan struct{}),
	}, nil
}

// Handle registers h for the action or compensation named action (StepCommand.Action). It may be
// called before or after Start. A command naming no registered action is dead-lettered unless
// HandleDefault set a fallback. Registering an empty name, a nil handler or the same name twice is
// a programming error and panics, like http.ServeMux.
func (w *Worker) Handle(action string, h Handler) {
	if action == "" || h == nil {
		panic("participant: Handle needs an action name and a handler")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, dup := w.handlers[action]; dup {
		panic(fmt.Sprintf("participant: action %q registered twice", action))
	}
	w.handlers[action] = h
}

// HandleDefault registers h for every action that has no handler of its own; h may refuse an
// unknown action with a BusinessError. Calling it again replaces the fallback.
func (w *Worker) HandleDefault(h Handler) {
	if h == nil {
		panic("participant: HandleDefault needs a handler")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fallback = h
}

func (w *Worker) handler(action string) Handler {
	w.mu.Lock()
	defer w.mu.Unlock()
	if h, ok := w.handlers[action]; ok {
		return h
	}
	return w.fallback
}

// Migrate creates the barrier schema and table if they do not exist. It is idempotent and safe to
// run from several processes at once.
func (w *Worker) Migrate(ctx context.Context) error {
	tx, err := w.cfg.DB.Begin(ctx)
	if err != nil {
		return fmt.Errorf("participant: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog; serialize them.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('sagacoord.participant.migrate'))`); err != nil {
		return fmt.Errorf("participant: migrate: lock: %w", err)
	}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, w.cfg.Schema).Scan(&exists); err != nil {
		return fmt.Errorf("participant: migrate: look up schema %s: %w", w.cfg.Schema, err)
	}
	if !exists {
		// Only when missing, so a role without CREATE on the database can use a prepared schema.
		if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{w.cfg.Schema}.Sanitize()); err != nil {
			return fmt.Errorf("participant: migrate: create schema %s: %w", w.cfg.Schema, err)
		}
	}
	for _, stmt := range []string{w.barrier.sql.createBarrier, w.barrier.sql.addAttempt} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("participant: migrate: table %s.barrier: %w", w.cfg.Schema, err)
		}
	}
	if _, err := tx.Exec(ctx, w.barrier.sql.createPrepared); err != nil {
		return fmt.Errorf("participant: migrate: table %s.prepared: %w", w.cfg.Schema, err)
	}
	if _, err := tx.Exec(ctx, w.barrier.sql.createFinals); err != nil {
		return fmt.Errorf("participant: migrate: table %s.finals: %w", w.cfg.Schema, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("participant: migrate: commit: %w", err)
	}
	return nil
}

// Start declares the topology and the participant's queue (or, with Config.SkipDeclare, checks
// that the queue exists) and starts consuming it with Config.Concurrency handler goroutines. It
// returns once consuming has started. ctx bounds the worker's whole life: when it ends, the
// worker stops at once, cancelling the handlers' context and leaving their commands to be
// redelivered; Stop is the graceful way. A worker starts once.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return errors.New("participant: worker already started (a Worker starts once; make a new one)")
	}
	select {
	case <-w.stopping:
		return errors.New("participant: worker was stopped (a Worker starts once; make a new one)")
	default:
	}
	if err := w.declare(ctx); err != nil {
		return err
	}
	if err := w.subscribeFinals(ctx); err != nil {
		return fmt.Errorf("participant %s: subscribe to final notices: %w", w.cfg.Name, err)
	}
	startedAt := w.startTime(ctx) // before any delivery: see watchdog
	workCtx, cancelWork := context.WithCancel(ctx)
	consumeCtx, cancelConsume := context.WithCancel(workCtx)
	queue, txQueue := protocol.ParticipantQueue(w.cfg.Name), protocol.TwoPCQueue(w.cfg.Name)
	deliveries, err := w.cfg.Transport.Consume(consumeCtx, queue, w.cfg.Prefetch)
	var txs <-chan *transport.Delivery
	if err == nil {
		queue = txQueue
		txs, err = w.cfg.Transport.Consume(consumeCtx, txQueue, w.cfg.Prefetch)
	}
	if err != nil {
		cancelConsume()
		cancelWork()
		return fmt.Errorf("participant %s: consume %s: %w", w.cfg.Name, queue, err)
	}
	w.started = true
	w.cancelConsume, w.cancelWork = cancelConsume, cancelWork
	w.wg.Add(w.cfg.Concurrency + 1)
	for range w.cfg.Concurrency {
		go w.loop(workCtx, deliveries, txs)
	}
	go w.watchdog(workCtx, startedAt)
	if w.cfg.keepsFinals() {
		w.wg.Add(1)
		go w.sweeper(workCtx)
	}
	w.log.Info("participant worker started", "queue", protocol.ParticipantQueue(w.cfg.Name), "twopc_queue", txQueue, "prefetch", w.cfg.Prefetch, "concurrency", w.cfg.Concurrency, "max_batch", w.cfg.MaxBatch)
	return nil
}

// declare declares the topology and the worker's queue or, with Config.SkipDeclare, checks that
// the queue exists.
func (w *Worker) declare(ctx context.Context) error {
	if !w.cfg.SkipDeclare {
		if err := w.cfg.Transport.DeclareTopology(ctx); err != nil {
			return fmt.Errorf("participant %s: declare topology: %w", w.cfg.Name, err)
		}
		if err := w.cfg.Transport.DeclareParticipant(ctx, w.cfg.Name); err != nil {
			return fmt.Errorf("participant %s: declare queue: %w", w.cfg.Name, err)
		}
		return nil
	}
	queue := protocol.ParticipantQueue(w.cfg.Name)
	exists, err := w.cfg.Transport.ParticipantExists(ctx, w.cfg.Name)
	if err != nil {
		return fmt.Errorf("participant %s: %w", w.cfg.Name, err)
	}
	if !exists {
		return fmt.Errorf("participant %s: queue %s does not exist, and Config.SkipDeclare leaves declaring it to the coordinator: "+
			"register a saga definition that names participant %s (sagactl definition apply), then start the worker", w.cfg.Name, queue, w.cfg.Name)
	}
	return nil
}

// Stop stops taking deliveries and waits for the handlers in flight to finish and their replies
// to be sent; deliveries not yet begun are returned to the queue. It is idempotent, and a no-op
// on a worker that never started. A handler that never returns makes Stop wait until the context
// given to Start ends.
func (w *Worker) Stop() {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		close(w.stopping)
		started := w.started
		w.mu.Unlock()
		if !started {
			return
		}
		w.cancelConsume()
		w.wg.Wait()
		w.cancelWork()
		w.log.Info("participant worker stopped")
	})
}

// loop decides deliveries until both channels close: the two-phase-commit commands first, each
// alone, so that a PREPARE waits for a free goroutine, never behind the saga steps of the queue;
// saga steps in groups of up to MaxBatch of those already waiting.
func (w *Worker) loop(ctx context.Context, sagas, txs <-chan *transport.Delivery) {
	defer w.wg.Done()
	ds := make([]*transport.Delivery, 0, w.cfg.MaxBatch)
	for sagas != nil || txs != nil {
		select {
		case d, ok := <-txs:
			w.processTxDelivery(ctx, &txs, d, ok)
			continue
		default:
		}
		select {
		case d, ok := <-txs:
			w.processTxDelivery(ctx, &txs, d, ok)
		case d, ok := <-sagas:
			if !ok {
				sagas = nil
				continue
			}
			ds = transport.TakeWaiting(sagas, append(ds[:0], d), w.cfg.MaxBatch)
			w.processAll(ctx, ds)
		}
	}
}

// processTxDelivery decides d, received from *txs, or forgets the channel once it closed (ok is
// false).
func (w *Worker) processTxDelivery(ctx context.Context, txs *<-chan *transport.Delivery, d *transport.Delivery, ok bool) {
	if !ok {
		*txs = nil
		return
	}
	w.processAll(ctx, []*transport.Delivery{d})
}

// processAll decides the deliveries a handler goroutine took: the saga step commands together,
// in one transaction, and the two-phase-commit commands and final notices each alone.
func (w *Worker) processAll(ctx context.Context, ds []*transport.Delivery) {
	var steps []*stepWork
	var alone []*transport.Delivery
	for _, d := range ds {
		switch {
		case w.requeueIfStopping(d):
		case protocol.IsTxCommand(d.Message), d.Type == protocol.TypeFinal:
			alone = append(alone, d)
		default:
			if s := w.decodeStep(d); s != nil {
				steps = append(steps, s)
			}
		}
	}
	switch len(steps) {
	case 0:
	case 1:
		w.processStep(ctx, steps[0])
	default:
		w.processGroup(ctx, steps)
	}
	for _, d := range alone {
		switch {
		case w.requeueIfStopping(d):
		case d.Type == protocol.TypeFinal:
			w.processFinal(ctx, d)
		default:
			w.processTx(ctx, d)
		}
	}
}

// requeueIfStopping returns d to its queue, and reports true, when Stop was called.
func (w *Worker) requeueIfStopping(d *transport.Delivery) bool {
	select {
	case <-w.stopping:
		w.settle(d, "requeue", (*transport.Delivery).Requeue)
		return true
	default:
		return false
	}
}

// DeliveryInfo describes the message a handler is running for.
type DeliveryInfo struct {
	MessageID string
	// Redelivered is the broker's flag: this command may have been delivered before (the
	// barrier makes that harmless).
	Redelivered bool
	// Headers are the message's headers (traceparent among them); do not modify.
	Headers map[string]string
}

type deliveryKey struct{}

// DeliveryFromContext returns the delivery that a handler's context belongs to.
func DeliveryFromContext(ctx context.Context) (DeliveryInfo, bool) {
	d, ok := ctx.Value(deliveryKey{}).(DeliveryInfo)
	return d, ok
}
