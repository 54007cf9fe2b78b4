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
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/internal/store"
)

// Tracing follows DESIGN's rule that no coordinator holds in memory what a crash would lose. A
// saga's trace is stored with it (saga.State.Trace: the traceparent of the StartSaga span), and
// every span the engine emits has a span id derived from what it describes:
//
//	saga span          SpanID(saga id, "saga"), child of the StartSaga span
//	step attempt span  SpanID(saga id, step index, kind, attempt), child of the saga span
//
// The command of a step attempt carries the attempt span's id as its traceparent, so the
// participant's span is a child of a span that does not exist yet. Whatever instance later applies
// the reply (or fires the timeout) emits the attempt span, with its real start time taken from the
// state (the attempt's timer minus the step timeout) and that id; the saga span is emitted when the
// saga ends. Spans are emitted after the transaction that decided them committed. A crash between
// the commit and the export loses those spans, never the saga's consistency.

// observer turns committed state changes into spans, metrics and logs. Every method is cheap
// when tracing and metrics are off: it then looks only at the saga's status history.
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

// attempts reports whether attempt events are collected (they feed spans and a histogram).
func (o *observer) attempts() bool { return o.tracer != nil || o.metrics }

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

// flight is a step attempt that was sent and is neither answered nor timed out.
type flight struct {
	step    int
	kind    string
	attempt int
	start   time.Time
}

// inFlight appends st's attempts in flight to buf.
func inFlight(def *saga.Definition, st *saga.State, buf []flight) []flight {
	for i := range st.Steps {
		s := &st.Steps[i]
		if s.Waiting || s.TimerAt.IsZero() {
			continue
		}
		start := s.TimerAt.Add(-def.Steps[i].Timeout)
		switch s.Status {
		case saga.StepRunning:
			buf = append(buf, flight{i, saga.KindAction, s.Attempt, start})
		case saga.StepCompensating:
			buf = append(buf, flight{i, saga.KindCompensate, s.CompAttempt, start})
		}
	}
	return buf
}

func (f flight) stillIn(st *saga.State) bool {
	s := &st.Steps[f.step]
	if s.Waiting || s.TimerAt.IsZero() {
		return false
	}
	if f.kind == saga.KindAction {
		return s.Status == saga.StepRunning && s.Attempt == f.attempt
	}
	return s.Status == saga.StepCompensating && s.CompAttempt == f.attempt
}

// attemptEvent is a step attempt that ended: answered or timed out.
type attemptEvent struct {
	saga        *store.Saga
	step        int
	stepName    string
	participant string
	kind        string
	attempt     int
	answeredBy  int // the attempt whose reply ended it, when another
	outcome     string
	err         string
	start, end  time.Time
}

// statusEvent is a change of a saga's status.
type statusEvent struct {
	saga     *store.Saga
	from, to saga.Status
	at       time.Time
}

// sagaEvents collects what one transaction decided, to be observed after it commits. Reset it at
// the start of every run of a mutate function: the function may run again.
type sagaEvents struct {
	attempts []attemptEvent
	statuses []statusEvent
	buf      []flight
}

func (ev *sagaEvents) reset() {
	ev.attempts, ev.statuses, ev.buf = ev.attempts[:0], ev.statuses[:0], ev.buf[:0]
}

// before records the attempts in flight before an event changes sg (when they are observed).
func (o *observer) before(ev *sagaEvents, m *saga.Machine, sg *store.Saga) {
	if o.attempts() {
		ev.buf = inFlight(m.Definition(), sg.State, ev.buf[:0])
	}
}

// after records the attempts the event ended. r is the reply applied, nil for a timer.
func (o *observer) after(ev *sagaEvents, m *saga.Machine, sg *store.Saga, r *saga.Reply, now time.Time) {
	if !o.attempts() {
		return
	}
	def := m.Definition()
	for _, f := range ev.buf {
		if f.stillIn(sg.State) {
			continue
		}
		a := attemptEvent{
			saga: sg, step: f.step, stepName: def.Steps[f.step].Name, participant: def.Steps[f.step].Participant,
			kind: f.kind, attempt: f.attempt, outcome: "timeout", err: sg.State.Steps[f.step].LastError, start: f.start, end: now,
		}
		if r != nil && r.StepIndex == f.step && r.Kind == f.kind {
			a.outcome = r.Outcome
			if r.Attempt != f.attempt {
				a.answeredBy = r.Attempt
			}
		}
		if a.outcome == saga.OutcomeSucceeded {
			a.err = ""
		}
		ev.attempts = append(ev.attempts, a)
	}
	ev.buf = ev.buf[:0]
}

// statuses records the status changes of sg's history since mark (its length before the events).
func (o *observer) statuses(ev *sagaEvents, sg *store.Saga, mark int) {
	h := sg.State.History
	for i := mark; i < len(h); i++ {
		if h[i].Step == -1 {
			ev.statuses = append(ev.statuses, statusEvent{saga: sg, from: saga.Status(h[i].From), to: saga.Status(h[i].To), at: h[i].At})
		}
	}
}

// emit observes what a committed transaction decided.
func (o *observer) emit(ctx context.Context, ev *sagaEvents) {
	for i := range ev.attempts {
		o.attempt(ctx, &ev.attempts[i])
	}
	for i := range ev.statuses {
		o.status(ctx, &ev.statuses[i])
	}
}

// parentOf returns a context whose remote parent is span id in the trace of tp.
func parentOf(tp string, id trace.SpanID) (context.Context, bool) {
	sc, ok := telemetry.ParseTraceparent(tp)
	if !ok {
		return nil, false
	}
	sc = sc.WithSpanID(id)
	return trace.ContextWithRemoteSpanContext(context.Background(), sc), true
}

func sagaSpanID(id uuid.UUID) trace.SpanID { return telemetry.SpanID(id.String(), "saga") }

func attemptSpanID(sagaID string, step int, kind string, attempt int) trace.SpanID {
	return telemetry.SpanID(sagaID, strconv.Itoa(step), kind, strconv.Itoa(attempt))
}

func (o *observer) attempt(ctx context.Context, a *attemptEvent) {
	sg := a.saga
	if o.metrics {
		o.stepDuration.Record(ctx, a.end.Sub(a.start).Seconds(), metric.WithAttributes(
			telemetry.AttrParticipant.String(a.participant), telemetry.AttrKind.String(a.kind), telemetry.AttrOutcome.String(a.outcome)))
	}
	if a.outcome != saga.OutcomeSucceeded {
		o.log.Debug("step attempt ended", "saga_id", sg.ID, "step", a.stepName, "kind", a.kind, "attempt", a.attempt,
			"outcome", a.outcome, "err", a.err, "trace_id", telemetry.TraceID(sg.State.Trace))
	}
	if o.tracer == nil || sg.State.Trace == "" {
		return
	}
	pctx, ok := parentOf(sg.State.Trace, sagaSpanID(sg.ID))
	if !ok {
		return
	}
	pctx = telemetry.WithSpanID(pctx, attemptSpanID(sg.State.ID, a.step, a.kind, a.attempt))
	attrs := []attribute.KeyValue{
		telemetry.AttrSagaID.String(sg.State.ID), telemetry.AttrDefinition.String(sg.DefinitionName),
		telemetry.AttrStep.String(a.stepName), telemetry.AttrStepIndex.Int(a.step), telemetry.AttrKind.String(a.kind),
		telemetry.AttrAttempt.Int(a.attempt), telemetry.AttrOutcome.String(a.outcome), telemetry.AttrParticipant.String(a.participant),
	}
	if a.answeredBy != 0 {
		attrs = append(attrs, attribute.Int("saga.answered_by_attempt", a.answeredBy))
	}
	_, span := o.tracer.Start(pctx, a.stepName+" "+a.kind, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithTimestamp(a.start), trace.WithAttributes(attrs...))
	if a.outcome != saga.OutcomeSucceeded {
		span.SetStatus(codes.Error, a.outcome+": "+a.err)
	}
	span.End(trace.WithTimestamp(a.end))
}

func (o *observer) status(ctx context.Context, s *statusEvent) {
	sg := s.saga
	def := metric.WithAttributes(telemetry.AttrDefinition.String(sg.DefinitionName))
	traceID := telemetry.TraceID(sg.State.Trace)
	switch s.to {
	case saga.StatusCompleted:
		if o.metrics {
			o.sagasCompleted.Add(ctx, 1, def)
		}
		o.log.Debug("saga completed", "saga_id", sg.ID, "definition", sg.DefinitionName, "trace_id", traceID)
	case saga.StatusCompensated:
		if o.metrics {
			o.sagasCompensated.Add(ctx, 1, def)
		}
		o.log.Info("saga compensated", "saga_id", sg.ID, "definition", sg.DefinitionName, "reason", sg.State.Reason, "trace_id", traceID)
	case saga.StatusFailed:
		if o.metrics {
			o.sagasFailed.Add(ctx, 1, def)
		}
		o.log.Warn("saga FAILED: it waits for an operator (RetrySaga or AbortSaga)", "saga_id", sg.ID, "definition", sg.DefinitionName,
			"reason", sg.State.Reason, "resume_status", sg.State.ResumeStatus, "trace_id", traceID)
	case saga.StatusCompensating:
		o.log.Debug("saga compensating", "saga_id", sg.ID, "definition", sg.DefinitionName, "reason", sg.State.Reason, "trace_id", traceID)
	}
	if !s.to.Terminal() || o.tracer == nil || sg.State.Trace == "" {
		return
	}
	sc, ok := telemetry.ParseTraceparent(sg.State.Trace)
	if !ok {
		return
	}
	pctx := telemetry.WithSpanID(trace.ContextWithRemoteSpanContext(context.Background(), sc), sagaSpanID(sg.ID))
	_, span := o.tracer.Start(pctx, "saga "+sg.DefinitionName, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithTimestamp(sg.CreatedAt), trace.WithAttributes(
			telemetry.AttrSagaID.String(sg.State.ID), telemetry.AttrDefinition.String(sg.DefinitionName),
			attribute.Int("saga.definition.version", sg.DefinitionVersion), telemetry.AttrStatus.String(string(s.to)),
		))
	if s.to == saga.StatusCompensated {
		span.SetStatus(codes.Error, "compensated: "+sg.State.Reason)
	}
	span.End(trace.WithTimestamp(s.at))
}

// started counts sagas created by a start batch.
func (o *observer) started(ctx context.Context, sg *store.Saga) {
	if o.metrics {
		o.sagasStarted.Add(ctx, 1, metric.WithAttributes(telemetry.AttrDefinition.String(sg.DefinitionName)))
	}
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
