// Package participant is the Go SDK for sagacoord workers: processes that consume step commands
// from their RabbitMQ queue, apply a local transaction and reply.
//
// A Worker guarantees exactly-once effects over at-least-once delivery. Every command passes
// through the barrier, a table in the participant's own database keyed by (saga id, step, kind),
// written in the same local transaction as the handler's effect:
//
//   - an action runs its handler at most once with a lasting effect; a duplicate gets the stored
//     reply again, without running the handler;
//   - a compensation that arrives before its action records a no-op, and the late action is then
//     refused with a "failed" reply, without running its handler;
//   - a compensation for an action that failed (or never ran) succeeds without running its
//     handler;
//   - the reply is published only after the local commit, and the delivery acknowledged only
//     after the broker confirmed the reply, so a crash anywhere leads to a redelivery that is
//     answered from the barrier.
//
// Workers take part in two-phase commit too: HandleTx registers the PREPARE, COMMIT and ABORT
// handlers, which go through a barrier of their own on the same table (see TxHandlers), and a
// prepared transaction is kept durably and asked about until its decision arrives.
//
// With Config.MaxBatch above 1 (group commit, opt-in), a handler goroutine decides up to MaxBatch
// waiting saga step commands in one local transaction, each in a savepoint of its own, so that each rule above holds per command,
// and publishes their replies together (group commit).
//
// A command that cannot be decoded, is addressed to another participant, names an action with no
// handler, or carries values the database cannot store is dead-lettered (and logged); the worker
// goes on with the next. A database or broker failure returns the command to the queue after
// Config.RetryBackoff.
//
// A minimal worker:
//
//	w, err := participant.New(participant.Config{Name: "bank-a", Transport: tr, DB: pool})
//	w.Handle("debit", debit)
//	w.Handle("refund_debit", refundDebit)
//	if err := w.Migrate(ctx); err != nil { ... }
//	if err := w.Start(ctx); err != nil { ... }
//	defer w.Stop()
package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

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
	return &Worker{
		cfg:      cfg,
		tel:      tel,
		log:      cfg.Logger.With("participant", cfg.Name),
		barrier:  newBarrier(cfg.DB, cfg.Schema, cfg.HandlerTimeout),
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
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("participant: migrate: commit: %w", err)
	}
	return nil
}

// Start declares the topology and the participant's queue and starts consuming it with
// Config.Concurrency handler goroutines. It returns once consuming has started. ctx bounds the
// worker's whole life: when it ends, the worker stops at once, cancelling the handlers' context
// and leaving their commands to be redelivered; Stop is the graceful way. A worker starts once.
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
	if err := w.cfg.Transport.DeclareTopology(ctx); err != nil {
		return fmt.Errorf("participant %s: declare topology: %w", w.cfg.Name, err)
	}
	if err := w.cfg.Transport.DeclareParticipant(ctx, w.cfg.Name); err != nil {
		return fmt.Errorf("participant %s: declare queue: %w", w.cfg.Name, err)
	}
	startedAt := w.startTime(ctx) // before any delivery: see watchdog
	workCtx, cancelWork := context.WithCancel(ctx)
	consumeCtx, cancelConsume := context.WithCancel(workCtx)
	queue := protocol.ParticipantQueue(w.cfg.Name)
	deliveries, err := w.cfg.Transport.Consume(consumeCtx, queue, w.cfg.Prefetch)
	if err != nil {
		cancelConsume()
		cancelWork()
		return fmt.Errorf("participant %s: consume %s: %w", w.cfg.Name, queue, err)
	}
	w.started = true
	w.cancelConsume, w.cancelWork = cancelConsume, cancelWork
	w.wg.Add(w.cfg.Concurrency + 1)
	for range w.cfg.Concurrency {
		go w.loop(workCtx, deliveries)
	}
	go w.watchdog(workCtx, startedAt)
	w.log.Info("participant worker started", "queue", queue, "prefetch", w.cfg.Prefetch, "concurrency", w.cfg.Concurrency, "max_batch", w.cfg.MaxBatch)
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

func (w *Worker) loop(ctx context.Context, deliveries <-chan *transport.Delivery) {
	defer w.wg.Done()
	ds := make([]*transport.Delivery, 0, w.cfg.MaxBatch)
	for d := range deliveries {
		ds = transport.TakeWaiting(deliveries, append(ds[:0], d), w.cfg.MaxBatch)
		w.processAll(ctx, ds)
	}
}

// processAll decides the deliveries a handler goroutine took: the saga step commands together,
// in one transaction, and the two-phase-commit commands each alone.
func (w *Worker) processAll(ctx context.Context, ds []*transport.Delivery) {
	var steps []*stepWork
	var alone []*transport.Delivery
	for _, d := range ds {
		switch {
		case w.requeueIfStopping(d):
		case protocol.IsTxCommand(d.Message):
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
		if !w.requeueIfStopping(d) {
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

// stepWork is a saga step command on its way through the barrier.
type stepWork struct {
	d   *transport.Delivery
	cmd *protocol.StepCommand
	h   Handler
	log *slog.Logger
	// ctx carries the command's span, from began on.
	ctx   context.Context
	span  trace.Span
	began time.Time
}

// again returns s as it was decoded, to be decided anew (with a span and clock of its own).
func (s *stepWork) again() *stepWork {
	return &stepWork{d: s.d, cmd: s.cmd, h: s.h, log: s.log}
}

// decodeStep decodes a saga step command and finds its handler; it dead-letters d and returns
// nil when it cannot.
func (w *Worker) decodeStep(d *transport.Delivery) *stepWork {
	log := w.log.With("message_id", d.MessageID)
	cmd, err := protocol.DecodeStepCommand(d.Message)
	if err != nil {
		log.Error("dead-lettering a command that cannot be decoded", "err", err)
		w.settle(d, "reject", (*transport.Delivery).Reject)
		return nil
	}
	log = log.With("saga_id", cmd.SagaID, "step", cmd.Step, "kind", cmd.Kind, "action", cmd.Action, "attempt", cmd.Attempt)
	if cmd.Participant != "" && cmd.Participant != w.cfg.Name {
		log.Error("dead-lettering a command addressed to another participant", "addressed_to", cmd.Participant)
		w.settle(d, "reject", (*transport.Delivery).Reject)
		return nil
	}
	h := w.handler(cmd.Action)
	if h == nil {
		log.Error("dead-lettering a command for an action with no handler: register it with Worker.Handle")
		w.settle(d, "reject", (*transport.Delivery).Reject)
		return nil
	}
	return &stepWork{d: d, cmd: cmd, h: h, log: log}
}

// begin starts the command's span and clock, and returns its handler's context.
func (w *Worker) begin(ctx context.Context, s *stepWork) context.Context {
	s.ctx, s.span = w.tel.start(ctx, s.d, w.cfg.Name+" "+s.cmd.Action, sagaAttrs(s.cmd)...)
	s.began = time.Now()
	return context.WithValue(s.ctx, deliveryKey{}, DeliveryInfo{MessageID: s.d.MessageID, Redelivered: s.d.Redelivered, Headers: s.d.Headers})
}

// ended records that nothing was decided for s.
func (w *Worker) ended(s *stepWork, err error) {
	w.tel.end(s.ctx, s.span, s.began, s.cmd.Kind, s.cmd.Action, "error", false, false, err)
}

// decided records what was decided for s, calls OnCommitted and logs it.
func (w *Worker) decided(s *stepWork, res result) {
	w.tel.end(s.ctx, s.span, s.began, s.cmd.Kind, s.cmd.Action, res.reply.Outcome, res.duplicate, res.handlerRan, res.cause)
	if res.committed && w.cfg.OnCommitted != nil {
		w.cfg.OnCommitted(s.cmd, res.reply)
	}
	w.logResult(s.log, res)
}

// processStep decides a saga step command in a transaction of its own and replies.
func (w *Worker) processStep(ctx context.Context, s *stepWork) {
	hctx := w.begin(ctx, s)
	res, err := w.barrier.run(hctx, s.cmd, s.h)
	if err != nil {
		w.ended(s, err)
		w.barrierFailed(s.ctx, s.log, s.d, err)
		return
	}
	w.decided(s, res)
	msg, err := protocol.EncodeStepReply(s.cmd, res.reply)
	if err != nil {
		s.log.Error("encode reply; requeueing the command", "err", err)
		w.backoffAndRequeue(s.ctx, s.d)
		return
	}
	w.publishReply(s.ctx, s.log, s.d, msg)
}

// processGroup decides several saga step commands in one transaction (see barrier.runGroup),
// publishes their replies together and then settles each delivery as processStep would.
func (w *Worker) processGroup(ctx context.Context, steps []*stepWork) {
	items := make([]groupItem, len(steps))
	for i, s := range steps {
		items[i] = groupItem{ctx: w.begin(ctx, s), cmd: s.cmd, h: s.h}
	}
	outs, err := w.barrier.runGroup(ctx, items)
	if err != nil {
		for _, s := range steps {
			w.ended(s, err)
		}
		w.groupFailed(ctx, steps, err)
		return
	}
	var later []*transport.Delivery // to requeue after RetryBackoff
	var alone []*stepWork
	var replies []reply
	for i, s := range steps {
		o := outs[i]
		if o.err == nil && o.res.reply.Outcome == protocol.OutcomeRetry && isLockConflict(o.res.cause) {
			// The group held the rows its other handlers locked: a deadlock or serialization
			// failure may be the group's doing, not the command's. Decide it again alone rather
			// than spend one of the step's retries.
			w.ended(s, o.res.cause)
			s.log.Info("command lost a lock conflict in its group; deciding it alone", "err", o.res.cause)
			alone = append(alone, s)
			continue
		}
		if o.err != nil {
			w.ended(s, o.err)
			if w.undecided(ctx, s.log, s.d, o.err) {
				later = append(later, s.d)
			}
			continue
		}
		w.decided(s, o.res)
		msg, err := protocol.EncodeStepReply(s.cmd, o.res.reply)
		if err != nil {
			s.log.Error("encode reply; requeueing the command", "err", err)
			later = append(later, s.d)
			continue
		}
		replies = append(replies, reply{ctx: s.ctx, log: s.log, d: s.d, msg: msg})
	}
	later = append(later, w.replyAll(ctx, replies)...)
	for _, s := range alone {
		if !w.requeueIfStopping(s.d) {
			w.processStep(ctx, s.again())
		}
	}
	if len(later) > 0 {
		w.backoffAndRequeue(ctx, later...)
	}
}

// isLockConflict reports whether err is a deadlock or a serialization failure, which a
// transaction of its own may not meet.
func isLockConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// groupFailed settles the commands of a group whose transaction decided nothing: at once on
// shutdown; each alone when the group broke for a reason of its own; all after RetryBackoff
// otherwise.
func (w *Worker) groupFailed(ctx context.Context, steps []*stepWork, err error) {
	ds := make([]*transport.Delivery, len(steps))
	for i, s := range steps {
		ds[i] = s.d
	}
	switch {
	case ctx.Err() != nil:
		w.log.Info("group of commands interrupted by shutdown; they will be redelivered", "commands", len(steps), "err", err)
		for _, d := range ds {
			w.settle(d, "requeue", (*transport.Delivery).Requeue)
		}
	case errors.Is(err, errGroupBroken):
		w.log.Warn("group transaction failed; deciding its commands one by one", "commands", len(steps), "err", err)
		for _, s := range steps {
			if !w.requeueIfStopping(s.d) {
				w.processStep(ctx, s.again())
			}
		}
	default:
		w.log.Error("group transaction failed; requeueing its commands", "commands", len(steps), "err", err, "backoff", w.cfg.RetryBackoff)
		w.backoffAndRequeue(ctx, ds...)
	}
}

// barrierFailed settles a delivery whose barrier transaction failed and decided nothing.
func (w *Worker) barrierFailed(ctx context.Context, log *slog.Logger, d *transport.Delivery, err error) {
	if w.undecided(ctx, log, d, err) {
		w.backoffAndRequeue(ctx, d)
	}
}

// undecided settles d, for which the barrier decided nothing because of err, when it can: it is
// requeued at once on shutdown, and dead-lettered when it carries a value the database can never
// store. Otherwise it reports true: d is to be requeued after RetryBackoff.
func (w *Worker) undecided(ctx context.Context, log *slog.Logger, d *transport.Delivery, err error) (later bool) {
	if ctx.Err() != nil {
		log.Info("command interrupted by shutdown; it will be redelivered", "err", err)
		w.settle(d, "requeue", (*transport.Delivery).Requeue)
		return false
	}
	if isDataException(err) {
		// The command carries a value the database can never store (a NUL in a text
		// field, say): redelivering it would fail the same way forever.
		log.Error("dead-lettering a command whose values the database rejects", "err", err)
		w.settle(d, "reject", (*transport.Delivery).Reject)
		return false
	}
	log.Error("barrier transaction failed; requeueing the command", "err", err, "backoff", w.cfg.RetryBackoff)
	return true
}

// reply is the reply to a command, ready to publish: ctx carries the command's span, and log
// names the command.
type reply struct {
	ctx context.Context
	log *slog.Logger
	d   *transport.Delivery
	msg protocol.Message
}

// replyAll publishes replies together, with confirms, and acknowledges each command whose reply
// was confirmed. It returns the deliveries whose reply was not, to be requeued: their
// redelivery is answered from the barrier with the same reply.
func (w *Worker) replyAll(ctx context.Context, replies []reply) (failed []*transport.Delivery) {
	if len(replies) == 0 {
		return nil
	}
	out := make([]transport.Outgoing, len(replies))
	for i, r := range replies {
		w.tel.inject(r.ctx, r.d, r.msg.Headers)
		out[i] = transport.Outgoing{Exchange: protocol.ExchangeReplies, RoutingKey: protocol.RoutingKeyReplies, Message: r.msg}
	}
	errs := w.cfg.Transport.Publish(ctx, out)
	for i, r := range replies {
		var err error
		if len(errs) != len(out) {
			err = fmt.Errorf("transport returned %d results for %d messages", len(errs), len(out))
		} else {
			err = errs[i]
		}
		if err != nil {
			r.log.Warn("publishing the reply failed; requeueing the command, whose redelivery re-sends the stored reply", "err", err)
			failed = append(failed, r.d)
			continue
		}
		w.settle(r.d, "ack", (*transport.Delivery).Ack)
	}
	return failed
}

// publishReply publishes the reply to d with confirms and then acknowledges d. When the publish
// fails, d is requeued after RetryBackoff.
func (w *Worker) publishReply(ctx context.Context, log *slog.Logger, d *transport.Delivery, msg protocol.Message) {
	if failed := w.replyAll(ctx, []reply{{ctx: ctx, log: log, d: d, msg: msg}}); len(failed) > 0 {
		w.backoffAndRequeue(ctx, failed...)
	}
}

func (w *Worker) logResult(log *slog.Logger, res result) {
	attrs := []any{"outcome", res.reply.Outcome, "duplicate", res.duplicate, "handler_ran", res.handlerRan}
	var pe *panicError
	switch {
	case errors.As(res.cause, &pe):
		log.Error("handler panicked; replying retry", append(attrs, "panic", fmt.Sprint(pe.value), "stack", string(pe.stack))...)
	case res.reply.Outcome == protocol.OutcomeRetry:
		log.Warn("handler failed transiently; replying retry", append(attrs, "err", res.cause)...)
	case res.reply.Outcome == protocol.OutcomeFailed:
		log.Info("step failed", append(attrs, "err", res.reply.Error)...)
	default:
		log.Debug("step done", attrs...)
	}
}

// isDataException reports whether err is a PostgreSQL data exception (SQLSTATE class 22): the
// values sent cannot be stored, whatever the retry.
func isDataException(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22")
}

// backoffAndRequeue waits RetryBackoff (cut short by Stop or shutdown) and returns ds to their
// queue.
func (w *Worker) backoffAndRequeue(ctx context.Context, ds ...*transport.Delivery) {
	t := time.NewTimer(w.cfg.RetryBackoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.stopping:
	case <-ctx.Done():
	}
	for _, d := range ds {
		w.settle(d, "requeue", (*transport.Delivery).Requeue)
	}
}

func (w *Worker) settle(d *transport.Delivery, what string, f func(*transport.Delivery) error) {
	if what == "reject" {
		w.tel.rejected(context.Background())
	}
	err := f(d)
	switch {
	case err == nil:
	case errors.Is(err, transport.ErrStale):
		w.log.Info("delivery's connection is gone; the broker will redeliver it", "op", what, "message_id", d.MessageID)
	default:
		w.log.Error("settling a delivery failed; the broker will redeliver it when the channel closes", "op", what, "message_id", d.MessageID, "err", err)
	}
}
