package engine

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
)

// sagaObserver returns what reports the events of one transition of sg once it committed.
func (o *observer) sagaObserver(sg *store.Saga, def *saga.Definition, evs []saga.Event) func(context.Context) {
	if len(evs) == 0 {
		return nil
	}
	return func(ctx context.Context) {
		for _, ev := range evs {
			switch ev := ev.(type) {
			case saga.AttemptEnded:
				o.attempt(ctx, sg, def, ev)
			case saga.StatusChanged:
				o.status(ctx, sg, ev)
			}
		}
	}
}

func (o *observer) attempt(ctx context.Context, sg *store.Saga, def *saga.Definition, a saga.AttemptEnded) {
	step := def.Steps[a.Step]
	if o.metrics {
		o.stepDuration.Record(ctx, a.End.Sub(a.Start).Seconds(), metric.WithAttributes(
			telemetry.AttrParticipant.String(step.Participant), telemetry.AttrKind.String(string(a.Kind)), telemetry.AttrOutcome.String(string(a.Outcome))))
	}
	if a.Outcome != protocol.OutcomeSucceeded {
		o.log.Debug("step attempt ended", "saga_id", sg.ID, "step", step.Name, "kind", a.Kind, "attempt", a.Attempt,
			"outcome", a.Outcome, "err", a.Err, "trace_id", telemetry.TraceID(sg.State.Trace))
	}
	if !o.tracing(sg.State.Trace) {
		return
	}
	span := pastSpan{
		traceparent: sg.State.Trace, parent: sagaSpanID(sg.ID), id: attemptSpanID(sg.State.ID, a.Step, a.Kind, a.Attempt),
		name: step.Name + " " + string(a.Kind), kind: trace.SpanKindProducer, start: a.Start, end: a.End,
		attrs: []attribute.KeyValue{
			telemetry.AttrSagaID.String(sg.State.ID), telemetry.AttrDefinition.String(sg.DefinitionName),
			telemetry.AttrStep.String(step.Name), telemetry.AttrStepIndex.Int(a.Step), telemetry.AttrKind.String(string(a.Kind)),
			telemetry.AttrAttempt.Int(a.Attempt), telemetry.AttrOutcome.String(string(a.Outcome)), telemetry.AttrParticipant.String(step.Participant),
		},
	}
	if a.AnsweredBy != 0 {
		span.attrs = append(span.attrs, attribute.Int("saga.answered_by_attempt", a.AnsweredBy))
	}
	if a.Outcome != protocol.OutcomeSucceeded {
		span.failure = string(a.Outcome) + ": " + a.Err
	}
	o.emit(span)
}

func (o *observer) status(ctx context.Context, sg *store.Saga, s saga.StatusChanged) {
	o.statusMetricsAndLog(ctx, sg, s)
	if !s.To.Terminal() || !o.tracing(sg.State.Trace) {
		return
	}
	span := pastSpan{
		traceparent: sg.State.Trace, id: sagaSpanID(sg.ID), name: "saga " + sg.DefinitionName, kind: trace.SpanKindInternal,
		start: sg.CreatedAt, end: s.At,
		attrs: []attribute.KeyValue{
			telemetry.AttrSagaID.String(sg.State.ID), telemetry.AttrDefinition.String(sg.DefinitionName),
			attribute.Int("saga.definition.version", sg.DefinitionVersion), telemetry.AttrStatus.String(string(s.To)),
		},
	}
	if s.To == saga.StatusCompensated {
		span.failure = "compensated: " + sg.State.Reason
	}
	o.emit(span)
}

func (o *observer) statusMetricsAndLog(ctx context.Context, sg *store.Saga, s saga.StatusChanged) {
	def := metric.WithAttributes(telemetry.AttrDefinition.String(sg.DefinitionName))
	traceID := telemetry.TraceID(sg.State.Trace)
	var counter metric.Int64Counter
	switch {
	case s.From == "":
		counter = o.sagasStarted
	case s.To == saga.StatusCompleted:
		counter = o.sagasCompleted
		o.log.Debug("saga completed", "saga_id", sg.ID, "definition", sg.DefinitionName, "trace_id", traceID)
	case s.To == saga.StatusCompensated:
		counter = o.sagasCompensated
		o.log.Info("saga compensated", "saga_id", sg.ID, "definition", sg.DefinitionName, "reason", sg.State.Reason, "trace_id", traceID)
	case s.To == saga.StatusFailed:
		counter = o.sagasFailed
		o.log.Warn("saga FAILED: it waits for an operator (RetrySaga or AbortSaga)", "saga_id", sg.ID, "definition", sg.DefinitionName,
			"reason", sg.State.Reason, "resume_status", sg.State.ResumeStatus, "trace_id", traceID)
	case s.To == saga.StatusCompensating:
		o.log.Debug("saga compensating", "saga_id", sg.ID, "definition", sg.DefinitionName, "reason", sg.State.Reason, "trace_id", traceID)
	}
	if o.metrics && counter != nil {
		counter.Add(ctx, 1, def)
	}
}
