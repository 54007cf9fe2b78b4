package engine

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/twopc"
)

// Two-phase commit is traced like sagas (see observe.go), with these deterministic span ids:
//
//	transaction span  SpanID(tx id, "tx"), child of the BeginTransaction span
//	prepare span      SpanID(tx id, participant, "prepare"): from the begin to the vote (or to the
//	                  decision, for a participant that never voted)
//	decision span     SpanID(tx id, participant, "commit" or "abort"): from the decision to the
//	                  participant's ack, over every re-send

// txMark is what an event may change in a transaction: its state, votes and acks (one bit per
// participant; a transaction has at most twopc.MaxParticipants).
type txMark struct {
	state        twopc.State
	voted, acked uint64
}

func markTx(t *twopc.Tx) txMark {
	m := txMark{state: t.State}
	for i, p := range t.Participants {
		if p.Vote != twopc.VoteNone {
			m.voted |= 1 << i
		}
		if p.Acked {
			m.acked |= 1 << i
		}
	}
	return m
}

// txEvent is a transaction some event changed, with its mark from before.
type txObs struct {
	t    *store.Tx
	mark txMark
	at   time.Time
}

// txEvents collects the transactions one database transaction changed; reset it like sagaEvents.
type txEvents struct{ list []txObs }

func (ev *txEvents) reset() { ev.list = ev.list[:0] }

// txChanged records that t changed since mark.
func (o *observer) txChanged(ev *txEvents, t *store.Tx, mark txMark, now time.Time) {
	if markTx(t.Tx) != mark {
		ev.list = append(ev.list, txObs{t: t, mark: mark, at: now})
	}
}

func txSpanID(id string) trace.SpanID { return telemetry.SpanID(id, "tx") }

// txCommandSpanID is the span a command to a participant belongs to: its prepare span, or its
// decision span for every copy of the decision.
func txCommandSpanID(id, participant, kind string) trace.SpanID {
	return telemetry.SpanID(id, participant, kind)
}

func (o *observer) txBegun(ctx context.Context) {
	if o.metrics {
		o.txStarted.Add(ctx, 1)
	}
}

// emitTx observes what a committed database transaction decided for two-phase commits.
func (o *observer) emitTx(ctx context.Context, ev *txEvents) {
	for i := range ev.list {
		o.tx(ctx, &ev.list[i])
	}
}

func (o *observer) tx(ctx context.Context, x *txObs) {
	t := x.t.Tx
	traceID := telemetry.TraceID(t.Trace)
	decided := x.mark.state == twopc.StatePreparing && t.State != twopc.StatePreparing
	if decided {
		o.log.Info("transaction decided", "tx_id", t.ID, "decision", string(t.State), "reason", t.Reason, "trace_id", traceID)
	}
	if t.State.Terminal() && !x.mark.state.Terminal() {
		if o.metrics {
			o.txFinished.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", string(t.State))))
		}
		o.log.Debug("transaction finished", "tx_id", t.ID, "state", string(t.State), "trace_id", traceID)
	}
	if o.tracer == nil || t.Trace == "" {
		return
	}
	txCtx, ok := parentOf(t.Trace, txSpanID(t.ID))
	if !ok {
		return
	}
	span := func(name string, id trace.SpanID, start time.Time, outcome string, failed bool, attrs ...attribute.KeyValue) {
		attrs = append(attrs, telemetry.AttrTxID.String(t.ID), telemetry.AttrOutcome.String(outcome))
		_, s := o.tracer.Start(telemetry.WithSpanID(txCtx, id), name, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithTimestamp(start), trace.WithAttributes(attrs...))
		if failed {
			s.SetStatus(codes.Error, outcome)
		}
		s.End(trace.WithTimestamp(x.at))
	}
	for i, p := range t.Participants {
		bit := uint64(1) << i
		pa := telemetry.AttrParticipant.String(p.Name)
		switch {
		case p.Vote != twopc.VoteNone && x.mark.voted&bit == 0:
			outcome := protocol.OutcomeVoteYes
			if p.Vote == twopc.VoteNo {
				outcome = protocol.OutcomeVoteNo
			}
			span(p.Name+" prepare", txCommandSpanID(t.ID, p.Name, twopc.KindPrepare), x.t.CreatedAt, outcome, p.Vote == twopc.VoteNo, pa)
		case p.Vote == twopc.VoteNone && decided:
			span(p.Name+" prepare", txCommandSpanID(t.ID, p.Name, twopc.KindPrepare), x.t.CreatedAt, "no_vote", true, pa)
		}
		if p.Acked && x.mark.acked&bit == 0 {
			kind := twopc.KindAbort
			if t.State == twopc.StateCommitting || t.State == twopc.StateCommitted {
				kind = twopc.KindCommit
			}
			span(p.Name+" "+kind, txCommandSpanID(t.ID, p.Name, kind), t.DecidedAt, protocol.OutcomeAck, false, pa,
				telemetry.AttrKind.String(kind), attribute.Int("tx.sends", p.Sends))
		}
	}
	if !t.State.Terminal() || x.mark.state.Terminal() {
		return
	}
	sc, ok := telemetry.ParseTraceparent(t.Trace)
	if !ok {
		return
	}
	pctx := telemetry.WithSpanID(trace.ContextWithRemoteSpanContext(context.Background(), sc), txSpanID(t.ID))
	_, s := o.tracer.Start(pctx, "transaction", trace.WithSpanKind(trace.SpanKindInternal), trace.WithTimestamp(x.t.CreatedAt),
		trace.WithAttributes(telemetry.AttrTxID.String(t.ID), telemetry.AttrTxState.String(string(t.State)),
			attribute.Int("tx.participants", len(t.Participants))))
	if t.State == twopc.StateAborted {
		s.SetStatus(codes.Error, "aborted: "+t.Reason)
	}
	s.End(trace.WithTimestamp(x.at))
}
