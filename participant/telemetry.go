package participant

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// instruments are a worker's spans and metrics. Each part is off (nil) when its provider in
// Config is nil, and then costs nothing.
type instruments struct {
	participant  string
	tracer       trace.Tracer
	duration     metric.Float64Histogram
	commands     metric.Int64Counter
	deadLettered metric.Int64Counter
}

func newInstruments(cfg Config) (*instruments, error) {
	in := &instruments{participant: cfg.Name}
	if cfg.TracerProvider != nil {
		in.tracer = cfg.TracerProvider.Tracer("github.com/sagacoord/sagacoord/participant")
	}
	if cfg.MeterProvider == nil {
		return in, nil
	}
	m := cfg.MeterProvider.Meter("github.com/sagacoord/sagacoord/participant")
	var err error
	if in.duration, err = m.Float64Histogram("sagacoord.participant.handler.duration",
		metric.WithDescription("Time to decide one command through the barrier (handler included), by participant, kind, action and outcome."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(telemetry.DurationBuckets...)); err != nil {
		return nil, err
	}
	if in.commands, err = m.Int64Counter("sagacoord.participant.commands",
		metric.WithDescription("Commands decided, by participant, kind, outcome and whether the barrier answered a duplicate.")); err != nil {
		return nil, err
	}
	if in.deadLettered, err = m.Int64Counter("sagacoord.participant.dead_lettered",
		metric.WithDescription("Commands this participant dead-lettered (malformed, misaddressed, no handler, values the database refuses).")); err != nil {
		return nil, err
	}
	return in, nil
}

// start continues the trace of a delivery with a consumer span, a child of the command's
// traceparent (for a saga step, the coordinator's span of that attempt). The context it returns
// carries the span, or with tracing off the delivery's own trace context, for the reply.
func (in *instruments) start(ctx context.Context, d *transport.Delivery, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if in.tracer == nil {
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx = telemetry.Propagator.Extract(ctx, propagation.MapCarrier(d.Headers))
	attrs = append(attrs, telemetry.AttrParticipant.String(in.participant), telemetry.AttrMessageID.String(d.MessageID),
		telemetry.AttrMessaging.String("rabbitmq"), attribute.Bool("messaging.rabbitmq.redelivered", d.Redelivered))
	return in.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// end records how a command was decided and ends its span. outcome is the reply's, or "error"
// when nothing was decided (the command is redelivered).
func (in *instruments) end(ctx context.Context, span trace.Span, began time.Time, kind protocol.Kind, action string, outcome protocol.Outcome, duplicate, handlerRan bool, cause error) {
	if in.duration != nil {
		in.duration.Record(ctx, time.Since(began).Seconds(), metric.WithAttributes(telemetry.AttrParticipant.String(in.participant),
			telemetry.AttrKind.String(string(kind)), telemetry.AttrAction.String(action), telemetry.AttrOutcome.String(string(outcome))))
		in.commands.Add(ctx, 1, metric.WithAttributes(telemetry.AttrParticipant.String(in.participant),
			telemetry.AttrKind.String(string(kind)), telemetry.AttrOutcome.String(string(outcome)), telemetry.AttrDuplicate.Bool(duplicate)))
	}
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(telemetry.AttrOutcome.String(string(outcome)), telemetry.AttrDuplicate.Bool(duplicate), telemetry.AttrHandlerRan.Bool(handlerRan))
	switch outcome {
	case protocol.OutcomeSucceeded, protocol.OutcomeVoteYes, protocol.OutcomeAck:
	default:
		msg := string(outcome)
		if cause != nil {
			msg += ": " + cause.Error()
		}
		span.SetStatus(codes.Error, msg)
	}
	span.End()
}

// inject writes the trace context of ctx into a reply's headers: the consumer span's, so that the
// reply continues the trace. With tracing off the command's traceparent and tracestate are copied.
func (in *instruments) inject(ctx context.Context, d *transport.Delivery, h map[string]string) {
	if in.tracer != nil && trace.SpanContextFromContext(ctx).IsValid() {
		telemetry.Propagator.Inject(ctx, propagation.MapCarrier(h))
		return
	}
	for _, k := range []string{protocol.HeaderTraceparent, protocol.HeaderTracestate} {
		if v, ok := d.Headers[k]; ok {
			h[k] = v
		}
	}
}

func (in *instruments) rejected(ctx context.Context) {
	if in.deadLettered != nil {
		in.deadLettered.Add(ctx, 1, metric.WithAttributes(telemetry.AttrParticipant.String(in.participant)))
	}
}

func sagaAttrs(cmd *protocol.StepCommand) []attribute.KeyValue {
	return []attribute.KeyValue{
		telemetry.AttrSagaID.String(cmd.SagaID), telemetry.AttrStep.String(cmd.Step), telemetry.AttrStepIndex.Int(cmd.StepIndex),
		telemetry.AttrKind.String(string(cmd.Kind)), telemetry.AttrAttempt.Int(cmd.Attempt), telemetry.AttrAction.String(cmd.Action),
	}
}

func txAttrs(cmd *protocol.TxCommand) []attribute.KeyValue {
	return []attribute.KeyValue{
		telemetry.AttrTxID.String(cmd.TxID), telemetry.AttrKind.String(string(cmd.Kind)), telemetry.AttrAttempt.Int(cmd.Attempt),
	}
}
