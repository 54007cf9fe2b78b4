package participant

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// Defaults of the two-phase-commit fields of Config.
const (
	DefaultQueryInterval = time.Second
	// DefaultPreparedSilence is above the coordinator's default prepare timeout (10 s), so that
	// with both defaults a participant that voted early never asks while the coordinator still
	// collects votes, which would abort the transaction.
	DefaultPreparedSilence = 15 * time.Second
)

// TxHandler applies one participant's part of a two-phase-commit transaction. Like a Handler it
// makes its effect only through tx, the local transaction that also writes the barrier row, and
// neither commits nor rolls it back. cmd.Payload is the participant's payload given to
// BeginTransaction; for COMMIT and ABORT it is filled from the prepared record when the command
// carries none.
type TxHandler func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error

// TxHandlers are the three handlers of a participant in two-phase commit. All three are
// required.
//
// Prepare reserves what the transaction needs (holds funds, reserves stock) so that a later
// Commit cannot fail for business reasons. Its error decides the vote: nil votes YES; a
// BusinessError (see Fail) votes NO, and what Prepare wrote is rolled back; any other error, or
// a panic, is transient: nothing is kept, no vote is sent, and the command is redelivered after
// Config.RetryBackoff (the coordinator's prepare timeout bounds how long it keeps trying).
//
// Commit turns the reservation into the effect; Abort releases it. Both run only for a
// transaction this participant voted YES for, once each. The decision is final, so they must
// eventually succeed: any error (a BusinessError too) rolls back and redelivers the command
// after Config.RetryBackoff; no failure is ever replied.
type TxHandlers struct {
	Prepare, Commit, Abort TxHandler
}

// HandleTx registers the two-phase-commit handlers. It may be called before or after Start; a
// PREPARE, COMMIT or ABORT that arrives while none are registered is dead-lettered. Calling it
// with a nil handler, or twice, is a programming error and panics, like Handle.
//
// The worker applies every command through a barrier, keyed (transaction id, participant name,
// kind) in the same barrier table as saga steps, in one local transaction with the handler's
// effect:
//
//   - PREPARE runs Prepare at most once with a lasting effect, and on YES records the transaction
//     in the prepared table in the same transaction; a duplicate gets the stored vote again.
//   - An ABORT that arrives before its PREPARE (the coordinator's prepare timeout passed) records
//     a NO in the PREPARE's place, so the late PREPARE is answered NO without running Prepare.
//   - ABORT runs Abort only after a YES; after a NO, or before any PREPARE, it just acks.
//   - COMMIT runs Commit once and forgets the prepared record. A COMMIT for a transaction this
//     participant did not vote YES for breaks the protocol (its database lost the prepare, or a
//     coordinator misbehaved): it is dead-lettered and logged as an error, never acked, so the
//     transaction stays visibly COMMITTING for an operator.
//
// While a transaction is prepared, the worker asks the coordinator for the decision (a
// twopc.query message) as soon as it starts and then whenever the transaction has been prepared
// for Config.PreparedSilence without news, until COMMIT or ABORT arrives.
func (w *Worker) HandleTx(h TxHandlers) {
	if h.Prepare == nil || h.Commit == nil || h.Abort == nil {
		panic("participant: HandleTx needs Prepare, Commit and Abort handlers")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.txHandlers != nil {
		panic("participant: HandleTx called twice")
	}
	w.txHandlers = &h
}

func (w *Worker) txHandlersOrNil() *TxHandlers {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.txHandlers
}

// processTx applies one two-phase-commit command and replies; see HandleTx.
func (w *Worker) processTx(ctx context.Context, d *transport.Delivery) {
	log := w.log.With("message_id", d.MessageID)
	cmd, err := protocol.DecodeTxCommand(d.Message)
	if err != nil {
		log.Error("dead-lettering a transaction command that cannot be decoded", "err", err)
		w.settle(d, "reject", (*transport.Delivery).Reject)
		return
	}
	log = log.With("tx_id", cmd.TxID, "kind", cmd.Kind, "attempt", cmd.Attempt)
	if cmd.Participant != w.cfg.Name {
		log.Error("dead-lettering a transaction command addressed to another participant", "addressed_to", cmd.Participant)
		w.settle(d, "reject", (*transport.Delivery).Reject)
		return
	}
	h := w.txHandlersOrNil()
	if h == nil {
		log.Error("dead-lettering a transaction command: no two-phase-commit handlers; register them with Worker.HandleTx")
		w.settle(d, "reject", (*transport.Delivery).Reject)
		return
	}

	ctx, span := w.tel.start(ctx, d, w.cfg.Name+" "+string(cmd.Kind), txAttrs(cmd)...)
	began := time.Now()
	hctx := context.WithValue(ctx, deliveryKey{}, DeliveryInfo{MessageID: d.MessageID, Redelivered: d.Redelivered, Headers: d.Headers})
	res, err := w.barrier.runTwoPC(hctx, cmd, h)
	switch {
	case err != nil:
		w.tel.end(ctx, span, began, cmd.Kind, string(cmd.Kind), "error", false, false, err)
	case res.requeue:
		w.tel.end(ctx, span, began, cmd.Kind, string(cmd.Kind), "requeue", false, res.handlerRan, res.cause)
	case res.final:
		w.tel.end(ctx, span, began, cmd.Kind, string(cmd.Kind), outcomeFinal, false, false, nil)
	default:
		w.tel.end(ctx, span, began, cmd.Kind, string(cmd.Kind), res.reply.Outcome, res.duplicate, res.handlerRan, nil)
	}
	if err != nil {
		var v *violationError
		if errors.As(err, &v) {
			log.Error("dead-lettering a transaction command that breaks the protocol; the transaction needs an operator", "err", err)
			w.settle(d, "reject", (*transport.Delivery).Reject)
			return
		}
		w.barrierFailed(ctx, log, d, err)
		return
	}
	if res.requeue {
		attrs := []any{"err", res.cause, "backoff", w.cfg.RetryBackoff}
		var pe *panicError
		if errors.As(res.cause, &pe) {
			attrs = append(attrs, "stack", string(pe.stack))
		}
		log.Warn("transaction handler failed; nothing was kept, and the command is requeued", attrs...)
		w.backoffAndRequeue(ctx, d)
		return
	}
	if res.final {
		w.ackFinal(log, d)
		return
	}
	if res.committed && w.cfg.OnTxCommitted != nil {
		w.cfg.OnTxCommitted(cmd, res.reply)
	}
	log.Debug("transaction command done", "outcome", res.reply.Outcome, "error", res.reply.Error, "duplicate", res.duplicate, "handler_ran", res.handlerRan)

	msg, err := protocol.EncodeTxReply(cmd, res.reply)
	if err != nil {
		log.Error("encode reply; requeueing the command", "err", err)
		w.backoffAndRequeue(ctx, d)
		return
	}
	w.publishReply(ctx, log, d, msg)
}
