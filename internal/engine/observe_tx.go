package engine

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/twopc"
)

// txObserver returns what reports the events of one transition of t once it committed.
func (o *observer) txObserver(t *store.Tx, evs []twopc.Event) func(context.Context) {
	if len(evs) == 0 {
		return nil
	}
	return func(ctx context.Context) {
		for _, ev := range evs {
			switch ev := ev.(type) {
			case twopc.StateChanged:
				o.txState(ctx, t, ev)
			case twopc.Voted:
				outcome := protocol.OutcomeVoteYes
				if ev.Vote == twopc.VoteNo {
					outcome = protocol.OutcomeVoteNo
				}
				o.prepareSpan(t, ev.Participant, string(outcome), ev.Vote == twopc.VoteNo, ev.At)
			case twopc.Acked:
				o.txSpan(t, t.Tx.Participants[ev.Participant].Name+" "+string(ev.Kind), txCommandSpanID(t.Tx.ID, t.Tx.Participants[ev.Participant].Name, ev.Kind),
					t.Tx.DecidedAt, ev.At, string(protocol.OutcomeAck), false, telemetry.AttrParticipant.String(t.Tx.Participants[ev.Participant].Name),
					telemetry.AttrKind.String(string(ev.Kind)), attribute.Int("tx.sends", t.Tx.Participants[ev.Participant].Sends))
			}
		}
	}
}

func (o *observer) txState(ctx context.Context, t *store.Tx, s twopc.StateChanged) {
	traceID := telemetry.TraceID(t.Tx.Trace)
	switch {
	case s.From == "":
		if o.metrics {
			o.txStarted.Add(ctx, 1)
		}
	case s.From == twopc.StatePreparing:
		o.log.Info("transaction decided", "tx_id", t.Tx.ID, "decision", string(s.To), "reason", t.Tx.Reason, "trace_id", traceID)
		for i, p := range t.Tx.Participants {
			if p.Vote == twopc.VoteNone {
				o.prepareSpan(t, i, "no_vote", true, s.At)
			}
		}
	case s.To.Terminal():
		if o.metrics {
			o.txFinished.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", string(s.To))))
		}
		o.log.Debug("transaction finished", "tx_id", t.Tx.ID, "state", string(s.To), "trace_id", traceID)
		o.transactionSpan(t, s)
	}
}

// prepareSpan emits participant i's prepare span, from the begin to its vote or the decision.
func (o *observer) prepareSpan(t *store.Tx, i int, outcome string, failed bool, end time.Time) {
	name := t.Tx.Participants[i].Name
	o.txSpan(t, name+" prepare", txCommandSpanID(t.Tx.ID, name, protocol.KindPrepare), t.CreatedAt, end, outcome, failed,
		telemetry.AttrParticipant.String(name))
}

// txSpan emits a span that is a child of the transaction's span.
func (o *observer) txSpan(t *store.Tx, name string, id trace.SpanID, start, end time.Time, outcome string, failed bool, attrs ...attribute.KeyValue) {
	if !o.tracing(t.Tx.Trace) {
		return
	}
	s := pastSpan{
		traceparent: t.Tx.Trace, parent: txSpanID(t.Tx.ID), id: id, name: name, kind: trace.SpanKindProducer, start: start, end: end,
		attrs: append(attrs, telemetry.AttrTxID.String(t.Tx.ID), telemetry.AttrOutcome.String(outcome)),
	}
	if failed {
		s.failure = outcome
	}
	o.emit(s)
}

// transactionSpan emits the transaction's own span when it ends.
func (o *observer) transactionSpan(t *store.Tx, s twopc.StateChanged) {
	if !o.tracing(t.Tx.Trace) {
		return
	}
	span := pastSpan{
		traceparent: t.Tx.Trace, id: txSpanID(t.Tx.ID), name: "transaction", kind: trace.SpanKindInternal, start: t.CreatedAt, end: s.At,
		attrs: []attribute.KeyValue{telemetry.AttrTxID.String(t.Tx.ID), telemetry.AttrTxState.String(string(s.To)),
			attribute.Int("tx.participants", len(t.Tx.Participants))},
	}
	if s.To == twopc.StateAborted {
		span.failure = "aborted: " + t.Tx.Reason
	}
	o.emit(span)
}
