package telemetry

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"

	"go.opentelemetry.io/otel/trace"
)

// IDGenerator is the span id generator every TracerProvider of sagacoord must use
// (traceexport.NewTracerProvider sets it). It gives a span the id that WithSpanID put in the context
// of its start, and random ids otherwise. A span emitted long after the work it describes, by
// whatever coordinator instance applies the event that ends it, can so carry the id that the
// messages sent at its start already named as their parent: nothing about a trace has to be held
// in memory between the two.
type IDGenerator struct{}

var _ interface {
	NewIDs(context.Context) (trace.TraceID, trace.SpanID)
	NewSpanID(context.Context, trace.TraceID) trace.SpanID
} = IDGenerator{}

type spanIDKey struct{}

// WithSpanID returns a context in which the next span started gets id (with IDGenerator).
func WithSpanID(ctx context.Context, id trace.SpanID) context.Context {
	return context.WithValue(ctx, spanIDKey{}, id)
}

// NewIDs implements sdktrace.IDGenerator for a root span: a random trace id.
func (g IDGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	for !tid.IsValid() {
		binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
		binary.BigEndian.PutUint64(tid[8:], rand.Uint64())
	}
	return tid, g.NewSpanID(ctx, tid)
}

// NewSpanID implements sdktrace.IDGenerator: the id preset with WithSpanID, or a random one.
func (IDGenerator) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	if id, ok := ctx.Value(spanIDKey{}).(trace.SpanID); ok && id.IsValid() {
		return id
	}
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.BigEndian.PutUint64(sid[:], rand.Uint64())
	}
	return sid
}

// SpanID returns the deterministic span id of the parts (a saga id, a step, a kind, an attempt):
// every instance computes the same id for the same parts.
func SpanID(parts ...string) trace.SpanID {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	var id trace.SpanID
	copy(id[:], h.Sum(sum[:0]))
	if !id.IsValid() {
		id[7] = 1
	}
	return id
}

// Traceparent returns the W3C traceparent of sc, or "" when sc is not valid.
func Traceparent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	return "00-" + hex.EncodeToString(tid[:]) + "-" + hex.EncodeToString(sid[:]) + "-" + hex.EncodeToString([]byte{byte(sc.TraceFlags())})
}

// traceparentLen is the length of a version 00 traceparent.
const traceparentLen = 55

// ParseTraceparent parses a version 00 W3C traceparent. The span context is remote.
func ParseTraceparent(s string) (trace.SpanContext, bool) {
	if len(s) != traceparentLen || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return trace.SpanContext{}, false
	}
	tid, err := trace.TraceIDFromHex(s[3:35])
	if err != nil {
		return trace.SpanContext{}, false
	}
	sid, err := trace.SpanIDFromHex(s[36:52])
	if err != nil {
		return trace.SpanContext{}, false
	}
	var flags [1]byte
	if _, err := hex.Decode(flags[:], []byte(s[53:])); err != nil {
		return trace.SpanContext{}, false
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]) & trace.FlagsSampled, Remote: true})
	return sc, sc.IsValid()
}

// ChildTraceparent returns the traceparent of the span id in the trace of the traceparent tp (its
// trace id and flags), or "" when tp is not a version 00 traceparent.
func ChildTraceparent(tp string, id trace.SpanID) string {
	if len(tp) != traceparentLen || tp[:3] != "00-" {
		return ""
	}
	var b [traceparentLen]byte
	copy(b[:], tp)
	hex.Encode(b[36:52], id[:])
	return string(b[:])
}

// TraceID returns the trace id (32 hex digits) of the traceparent tp, or "".
func TraceID(tp string) string {
	if len(tp) != traceparentLen {
		return ""
	}
	return tp[3:35]
}
