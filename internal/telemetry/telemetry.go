// Package telemetry holds what sagacoord's coordinator and its participant SDK share about traces
// and metrics: the attribute names, the histogram buckets, the W3C propagator, the span id
// generator that lets any instance emit a span whose id was fixed when its work began
// (IDGenerator, WithSpanID, SpanID) and the traceparent helpers. docs/observability.md describes
// every span and metric.
//
// It depends on the OpenTelemetry API alone, because the participant SDK imports it and must not
// make its users link an exporter. The setup of a process is in packages that only the binaries
// and tests import: traceexport (the OTLP tracer provider), pgxtrace (the pgx query tracer) and
// otelsetup (a server's traces and Prometheus /metrics).
package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
)

// Propagator is the W3C Trace Context propagator (traceparent, tracestate) used on gRPC and in
// AMQP headers; propagation.MapCarrier(msg.Headers) carries it in a protocol.Message.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// DurationBuckets are the histogram bucket bounds, in seconds, of every sagacoord duration.
var DurationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

// Attribute keys of sagacoord's spans and metrics.
const (
	AttrSagaID      = attribute.Key("saga.id")
	AttrDefinition  = attribute.Key("saga.definition")
	AttrStatus      = attribute.Key("saga.status")
	AttrStep        = attribute.Key("saga.step")
	AttrStepIndex   = attribute.Key("saga.step.index")
	AttrKind        = attribute.Key("saga.kind")
	AttrAttempt     = attribute.Key("saga.attempt")
	AttrOutcome     = attribute.Key("saga.outcome")
	AttrParticipant = attribute.Key("saga.participant")
	AttrAction      = attribute.Key("saga.action")
	AttrTxID        = attribute.Key("tx.id")
	AttrTxState     = attribute.Key("tx.state")
	AttrDuplicate   = attribute.Key("participant.duplicate")
	AttrHandlerRan  = attribute.Key("participant.handler_ran")
	AttrMessageID   = attribute.Key("messaging.message.id")
	AttrMessaging   = attribute.Key("messaging.system")
	// AttrEndUserID is the caller of a gRPC call (auth.Caller), on the call's server span.
	AttrEndUserID = attribute.Key("enduser.id")
)
