package engine

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/protocol"
)

// Tracing keeps nothing in memory that a crash would lose. A saga's trace is stored with it
// (saga.State.Trace: the traceparent of the StartSaga span), and every span the engine emits has
// a span id derived from what it describes:
//
//	saga span          SpanID(saga id, "saga"), child of the StartSaga span
//	step attempt span  SpanID(saga id, step index, kind, attempt), child of the saga span
//	transaction span   SpanID(tx id, "tx"), child of the BeginTransaction span
//	prepare span       SpanID(tx id, participant, "prepare"): from the begin to the vote
//	decision span      SpanID(tx id, participant, "commit" or "abort"): from the decision to the ack
//
// A command carries its span's id as its traceparent, so the participant's span is a child of a
// span that does not exist yet. Whatever instance applies the event that ends that span (a reply,
// a timeout) emits it with that id and its real start time, from the machine's events, after the
// transaction that decided it committed. A crash between the commit and the export loses those
// spans, never the saga's consistency.

// logCaller is the log field of the caller's identity (auth.Caller), named after the span
// attribute telemetry.AttrEndUserID.
const logCaller = "enduser_id"

// observer turns the events of committed transitions into spans, metrics and logs. It costs
// nothing beyond its logs when tracing and metrics are off.
type observer struct {
	log     *slog.Logger
	tracer  trace.Tracer // nil: tracing is off
	metrics bool

	sagasStarted, sagasCompleted, sagasCompensated, sagasFailed metric.Int64Counter
	stepDuration                                                metric.Float64Histogram
	repliesDead, repliesRedelivered                             metric.Int64Counter
	txStarted, txFinished                                       metric.Int64Counter
}

func newObserver(log *slog.Logger, tp trace.TracerProvider, mp metric.MeterProvider) (*observer, error) {
	o := &observer{log: log, metrics: mp != nil}
	if tp != nil {
		o.tracer = tp.Tracer("github.com/sagacoord/sagacoord/engine")
	}
	if mp == nil {
		return o, nil
	}
	m := mp.Meter("github.com/sagacoord/sagacoord/engine")
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		var c metric.Int64Counter
		if err == nil {
			c, err = m.Int64Counter(name, metric.WithDescription(desc))
		}
		return c
	}
	o.sagasStarted = counter("sagacoord.sagas.started", "Sagas started (created by StartSaga), by definition.")
	o.sagasCompleted = counter("sagacoord.sagas.completed", "Sagas that reached COMPLETED, by definition.")
	o.sagasCompensated = counter("sagacoord.sagas.compensated", "Sagas that reached COMPENSATED, by definition.")
	o.sagasFailed = counter("sagacoord.sagas.failed", "Times a saga entered FAILED (it waits for an operator), by definition.")
	o.repliesDead = counter("sagacoord.replies.dead_lettered", "Messages on the reply queue that were dead-lettered, by reason.")
	o.repliesRedelivered = counter("sagacoord.replies.redelivered", "Messages on the reply queue that the broker flagged as redelivered.")
	o.txStarted = counter("sagacoord.twopc.transactions.started", "Two-phase-commit transactions begun.")
	o.txFinished = counter("sagacoord.twopc.transactions.finished", "Two-phase-commit transactions finished, by outcome (COMMITTED, ABORTED).")
	if err != nil {
		return nil, err
	}
	o.stepDuration, err = m.Float64Histogram("sagacoord.step.duration",
		metric.WithDescription("Time from sending a step command to its answer or timeout, by participant, kind and outcome."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(telemetry.DurationBuckets...))
	if err != nil {
		return nil, err
	}
	return o, nil
}

// traceparent returns what a new saga or transaction stores as its trace: the traceparent of the
// span in ctx. Without one, a root span stands in for the call; end it when the call returns.
func (o *observer) traceparent(ctx context.Context, name string) (string, func()) {
	if o.tracer == nil {
		return "", func() {}
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return telemetry.Traceparent(sc), func() {}
	}
	_, span := o.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	return telemetry.Traceparent(span.SpanContext()), func() { span.End() }
}

// spanParent returns a context whose remote parent is span parent in the trace of tp (tp's own
// span when parent is zero), in which the next span started gets the id own (see
// telemetry.IDGenerator).
func spanParent(tp string, parent, own trace.SpanID) (context.Context, bool) {
	sc, ok := telemetry.ParseTraceparent(tp)
	if !ok {
		return nil, false
	}
	if parent.IsValid() {
		sc = sc.WithSpanID(parent)
	}
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), sc)
	return telemetry.WithSpanID(ctx, own), true
}

func sagaSpanID(id uuid.UUID) trace.SpanID { return telemetry.SpanID(id.String(), "saga") }

func attemptSpanID(sagaID string, step int, kind protocol.Kind, attempt int) trace.SpanID {
	return telemetry.SpanID(sagaID, strconv.Itoa(step), string(kind), strconv.Itoa(attempt))
}

func txSpanID(id string) trace.SpanID { return telemetry.SpanID(id, "tx") }

// txCommandSpanID is the span a command to a participant belongs to: its prepare span, or its
// decision span for every copy of the decision.
func txCommandSpanID(id, participant string, kind protocol.Kind) trace.SpanID {
	return telemetry.SpanID(id, participant, string(kind))
}

// deadLettered counts a message on the reply queue that was rejected.
func (o *observer) deadLettered(ctx context.Context, reason string) {
	if o.metrics {
		o.repliesDead.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
	}
}

// received counts a redelivered message on the reply queue.
func (o *observer) received(ctx context.Context, redelivered bool) {
	if o.metrics && redelivered {
		o.repliesRedelivered.Add(ctx, 1)
	}
}

// pastSpan is a span that the coordinator emits after the fact, saga and transaction spans alike:
// span id in the trace of traceparent, a child of parent (of traceparent's own span when zero).
type pastSpan struct {
	traceparent string
	parent, id  trace.SpanID
	name        string
	kind        trace.SpanKind
	start, end  time.Time
	// failure, when not empty, is the span's error status.
	failure string
	attrs   []attribute.KeyValue
}

// tracing reports whether spans in the trace of traceparent are emitted: there is a tracer and a
// trace. Callers check it before they build a pastSpan, which costs allocations.
func (o *observer) tracing(traceparent string) bool {
	return o.tracer != nil && traceparent != ""
}

// emit emits s, unless there is no tracer or s's traceparent does not parse.
func (o *observer) emit(s pastSpan) {
	if !o.tracing(s.traceparent) {
		return
	}
	ctx, ok := spanParent(s.traceparent, s.parent, s.id)
	if !ok {
		return
	}
	_, span := o.tracer.Start(ctx, s.name, trace.WithSpanKind(s.kind), trace.WithTimestamp(s.start), trace.WithAttributes(s.attrs...))
	if s.failure != "" {
		span.SetStatus(codes.Error, s.failure)
	}
	span.End(trace.WithTimestamp(s.end))
}
