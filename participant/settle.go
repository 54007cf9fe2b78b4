package participant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

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
