package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// consumeReplies applies the messages of the reply queue in batches: each batch in one
// transaction per kind of row, acknowledged after the commit.
func (e *Engine) consumeReplies(ctx context.Context, deliveries <-chan *transport.Delivery) {
	batch := make([]*transport.Delivery, 0, e.cfg.ReplyBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			batch = append(batch, d)
		}
		batch = transport.TakeWaiting(deliveries, batch, e.cfg.ReplyBatch)
		e.applyReplies(ctx, batch)
	}
}

// inbound is one delivery of the reply queue and the event it carries.
type inbound[T any] struct {
	d  *transport.Delivery
	ev event[T]
	// missing settles the delivery when no row has the event's id; nil dead-letters it.
	missing func(ctx context.Context) error
}

// applyReplies decodes a batch of the reply queue, applies the saga replies and the transaction
// replies and queries, and settles every delivery.
func (e *Engine) applyReplies(ctx context.Context, batch []*transport.Delivery) {
	var (
		s []inbound[*store.Saga]
		t []inbound[*store.Tx]
	)
	for _, d := range batch {
		e.obs.received(ctx, d.Redelivered)
		if err := e.classify(d, &s, &t); err != nil {
			e.log.Warn("dead-lettering malformed message on the reply queue", "message_id", d.MessageID, "type", d.Type, "correlation_id", d.CorrelationID, "err", err)
			e.obs.deadLettered(ctx, "malformed")
			e.settle(d.Reject, d)
		}
	}
	applyInbound(ctx, e, e.txs, t)
	applyInbound(ctx, e, e.sagas, s)
}

// classify decodes d into the event it carries: a saga reply, a transaction reply or a decision
// query. An error wraps protocol.ErrMalformed.
func (e *Engine) classify(d *transport.Delivery, sagas *[]inbound[*store.Saga], txs *[]inbound[*store.Tx]) error {
	if d.Type == protocol.TypeDecisionQuery {
		q, err := protocol.DecodeTxQuery(d.Message)
		if err != nil {
			return err
		}
		id, err := parseID("transaction", q.TxID)
		if err != nil {
			return err
		}
		participant := q.Participant
		*txs = append(*txs, inbound[*store.Tx]{d: d, ev: e.txQuery(id, participant), missing: func(ctx context.Context) error {
			return e.abortUnknown(ctx, id, participant)
		}})
		return nil
	}
	r, err := protocol.DecodeReply(d.Message)
	if err != nil {
		return err
	}
	if r.Kind.Tx() {
		id, err := parseID("transaction", r.TxID)
		if err != nil {
			return err
		}
		*txs = append(*txs, inbound[*store.Tx]{d: d, ev: e.txReply(id, r)})
		return nil
	}
	id, err := parseID("saga", r.SagaID)
	if err != nil {
		return err
	}
	*sagas = append(*sagas, inbound[*store.Saga]{d: d, ev: e.sagaReply(id, r)})
	return nil
}

func parseID(what, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: %s id %q: %v", protocol.ErrMalformed, what, s, err)
	}
	return id, nil
}

// applyInbound applies the events of in in one transaction and settles their deliveries:
// acknowledged once committed, dead-lettered when refused or addressed to no row, requeued after
// a pause when the database failed.
func applyInbound[T any](ctx context.Context, e *Engine, t *table[T], in []inbound[T]) {
	if len(in) == 0 {
		return
	}
	evs := make([]event[T], len(in))
	for i, x := range in {
		evs[i] = x.ev
	}
	res, err := applyEvents(ctx, e, t, evs)
	switch {
	case errors.Is(err, store.ErrInvalidData) && len(in) > 1:
		// One message holds a value the database refuses. Apply them one by one, so that only
		// that one is dead-lettered and the others are not held back with it.
		for _, x := range in {
			applyInbound(ctx, e, t, []inbound[T]{x})
		}
	case errors.Is(err, store.ErrInvalidData):
		e.log.Warn("dead-lettering a message the database refuses", "kind", t.kind, "id", in[0].ev.id, "message_id", in[0].d.MessageID, "err", err)
		e.obs.deadLettered(ctx, "invalid_data")
		e.settle(in[0].d.Reject, in[0].d)
	case err != nil:
		e.log.Error("apply replies; they will be redelivered", "kind", t.kind, "messages", len(in), "err", err)
		e.backoff(ctx)
		for _, x := range in {
			e.settle(x.d.Requeue, x.d)
		}
	default:
		for i, x := range in {
			e.settleInbound(ctx, t.kind, x.d, x.ev.id, res.verdicts[i], res.why[i], x.missing)
		}
	}
}

// settleInbound settles one delivery of a committed batch by its event's verdict.
func (e *Engine) settleInbound(ctx context.Context, kind string, d *transport.Delivery, id uuid.UUID, v verdict, why error, missing func(context.Context) error) {
	switch {
	case v == verdictApplied:
		e.settle(d.Ack, d)
	case v == verdictRejected:
		var rej *rejection
		errors.As(why, &rej)
		e.log.Warn("dead-lettering a reply its "+kind+" refuses", "id", id, "message_id", d.MessageID, "err", why)
		e.obs.deadLettered(ctx, rej.reason)
		e.settle(d.Reject, d)
	case missing == nil:
		e.log.Warn("dead-lettering a reply for an unknown "+kind, "id", id, "message_id", d.MessageID)
		e.obs.deadLettered(ctx, "unknown_"+kind)
		e.settle(d.Reject, d)
	default:
		if err := missing(ctx); err != nil {
			e.log.Error("answer a message about an unknown "+kind+"; it will be redelivered", "id", id, "err", err)
			e.settle(d.Requeue, d)
			return
		}
		e.settle(d.Ack, d)
	}
}

// backoff waits a little before replies are requeued after a database error, so that an outage
// does not spin them through the broker (on quorum queues each requeue counts towards the
// delivery limit).
func (e *Engine) backoff(ctx context.Context) {
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (e *Engine) settle(f func() error, d *transport.Delivery) {
	if err := f(); err != nil {
		// A stale delivery is redelivered by the broker; applying it again changes nothing.
		e.log.Debug("settle delivery", "message_id", d.MessageID, "err", err)
	}
}
