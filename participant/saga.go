package participant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

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
	outcome := res.reply.Outcome
	if res.final {
		outcome = outcomeFinal
	}
	w.tel.end(s.ctx, s.span, s.began, s.cmd.Kind, s.cmd.Action, outcome, res.duplicate, res.handlerRan, res.cause)
	if res.committed && w.cfg.OnCommitted != nil {
		w.cfg.OnCommitted(s.cmd, res.reply)
	}
	w.logResult(s.log, res)
}

// processStep decides a saga step command in a transaction of its own and replies.
func (w *Worker) processStep(ctx context.Context, s *stepWork) {
	hctx := w.begin(ctx, s)
	res, err := w.barrier.runStep(hctx, s.cmd, s.h)
	if err != nil {
		w.ended(s, err)
		w.barrierFailed(s.ctx, s.log, s.d, err)
		return
	}
	w.decided(s, res)
	if res.final {
		w.ackFinal(s.log, s.d)
		return
	}
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
		if o.res.final {
			w.ackFinal(s.log, s.d)
			continue
		}
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

// ackFinal acknowledges a command of a final saga or transaction, which has no effect and needs
// no reply: the coordinator no longer has it.
func (w *Worker) ackFinal(log *slog.Logger, d *transport.Delivery) {
	log.Info("command of a saga or transaction that the coordinator said is final; acknowledged without effect or reply")
	w.settle(d, "ack", (*transport.Delivery).Ack)
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
