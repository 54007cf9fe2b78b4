package engine

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/internal/store"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const startSpan = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func testMachine(t *testing.T) *saga.Machine {
	t.Helper()
	d, err := saga.Normalize(saga.Definition{Name: "order", Steps: []saga.StepDefinition{
		{Name: "reserve", Participant: "inventory", Action: "reserve", Compensation: "release", Timeout: time.Second},
		{Name: "charge", Participant: "payments", Action: "charge", Compensation: "refund", Timeout: 2 * time.Second},
	}})
	require.NoError(t, err)
	return saga.NewMachine(&d)
}

// driver applies events to one saga the way the engine's mutate functions do.
type driver struct {
	o  *observer
	m  *saga.Machine
	sg *store.Saga
}

func (d *driver) reply(step int, kind string, attempt int, outcome string, at time.Time) {
	var ev sagaEvents
	mark := len(d.sg.State.History)
	r := saga.Reply{StepIndex: step, Kind: kind, Attempt: attempt, Outcome: outcome, Output: json.RawMessage(`{}`), Error: "no"}
	d.o.before(&ev, d.m, d.sg)
	if _, ok := d.m.ApplyReply(d.sg.State, r, at); ok {
		d.o.after(&ev, d.m, d.sg, &r, at)
	}
	d.o.statuses(&ev, d.sg, mark)
	d.o.emit(context.Background(), &ev)
}

func (d *driver) tick(at time.Time) {
	var ev sagaEvents
	mark := len(d.sg.State.History)
	d.o.before(&ev, d.m, d.sg)
	d.m.Tick(d.sg.State, at)
	d.o.after(&ev, d.m, d.sg, nil, at)
	d.o.statuses(&ev, d.sg, mark)
	d.o.emit(context.Background(), &ev)
}

// TestSpansOfACompensatedSaga drives a saga whose second step fails once by timeout and then for
// good, and checks the spans: ids the commands named, parents, real start times and outcomes.
func TestSpansOfACompensatedSaga(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := telemetry.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	o, err := newObserver(slog.New(slog.DiscardHandler), tp, nil)
	require.NoError(t, err)
	e := &Engine{obs: o}
	m := testMachine(t)
	id := uuid.New()
	st, cmds := m.New(id.String(), json.RawMessage(`{}`), time.Time{}, t0)
	st.Trace = startSpan
	sg := &store.Saga{ID: id, DefinitionName: "order", DefinitionVersion: 1, State: st, CreatedAt: t0}
	d := &driver{o: o, m: m, sg: sg}

	msg, err := e.command(m, st, cmds[0])
	require.NoError(t, err)
	require.Equal(t, telemetry.ChildTraceparent(startSpan, attemptSpanID(id.String(), 0, saga.KindAction, 1)), msg.Headers[protocol.HeaderTraceparent])

	t1, t2, t3, t4, t5 := t0.Add(100*time.Millisecond), t0.Add(3*time.Second), t0.Add(4*time.Second), t0.Add(5*time.Second), t0.Add(6*time.Second)
	d.reply(0, saga.KindAction, 1, saga.OutcomeSucceeded, t1) // charge attempt 1 sent at t1
	d.tick(t2)                                                // charge attempt 1 times out (2s)
	require.True(t, st.Steps[1].Waiting)
	d.tick(st.Steps[1].TimerAt) // charge attempt 2 sent
	sent2 := st.Steps[1].TimerAt.Add(-2 * time.Second)
	d.reply(1, saga.KindAction, 2, saga.OutcomeFailed, t3)        // the timed-out attempt may have charged: refund sent
	d.reply(1, saga.KindCompensate, 1, saga.OutcomeSucceeded, t4) // release sent
	d.reply(0, saga.KindCompensate, 1, saga.OutcomeSucceeded, t5)
	require.Equal(t, saga.StatusCompensated, st.Status)

	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	sagaSpans := byName["saga order"]
	require.Len(t, sagaSpans, 1)
	sagaSpan := sagaSpans[0]
	parent, _ := telemetry.ParseTraceparent(startSpan)
	require.Equal(t, parent.TraceID(), sagaSpan.SpanContext().TraceID())
	require.Equal(t, parent.SpanID(), sagaSpan.Parent().SpanID(), "the saga span is a child of the StartSaga span")
	require.Equal(t, sagaSpanID(id), sagaSpan.SpanContext().SpanID())
	require.Equal(t, t0, sagaSpan.StartTime())
	require.Equal(t, t5, sagaSpan.EndTime())

	check := func(name string, n int, step int, kind string, attempt int, start, end time.Time, outcome string) {
		t.Helper()
		require.Len(t, byName[name], n, name)
		var s sdktrace.ReadOnlySpan
		for _, c := range byName[name] {
			if c.SpanContext().SpanID() == attemptSpanID(id.String(), step, kind, attempt) {
				s = c
			}
		}
		require.NotNil(t, s, "%s attempt %d has the id its command named", name, attempt)
		require.Equal(t, sagaSpan.SpanContext().SpanID(), s.Parent().SpanID(), "%s is a child of the saga span", name)
		require.Equal(t, trace.SpanKindProducer, s.SpanKind())
		require.Equal(t, start, s.StartTime(), "%s starts when its command was sent", name)
		require.Equal(t, end, s.EndTime(), name)
		found := false
		for _, kv := range s.Attributes() {
			if kv.Key == telemetry.AttrOutcome {
				require.Equal(t, outcome, kv.Value.AsString(), name)
				found = true
			}
		}
		require.True(t, found, "%s has an outcome", name)
	}
	check("reserve action", 1, 0, saga.KindAction, 1, t0, t1, saga.OutcomeSucceeded)
	check("charge action", 2, 1, saga.KindAction, 1, t1, t2, "timeout")
	check("charge action", 2, 1, saga.KindAction, 2, sent2, t3, saga.OutcomeFailed)
	check("charge compensate", 1, 1, saga.KindCompensate, 1, t3, t4, saga.OutcomeSucceeded)
	check("reserve compensate", 1, 0, saga.KindCompensate, 1, t4, t5, saga.OutcomeSucceeded)
	require.Len(t, rec.Ended(), 6)
}

// TestNoSpanWorkWhenOff checks the hot path with tracing and metrics off: observing a reply
// allocates nothing, and commands carry no traceparent.
func TestNoSpanWorkWhenOff(t *testing.T) {
	o, err := newObserver(slog.New(slog.DiscardHandler), nil, nil)
	require.NoError(t, err)
	e := &Engine{obs: o}
	m := testMachine(t)
	id := uuid.New()
	st, cmds := m.New(id.String(), json.RawMessage(`{}`), time.Time{}, t0)
	sg := &store.Saga{ID: id, DefinitionName: "order", State: st, CreatedAt: t0}
	msg, err := e.command(m, st, cmds[0])
	require.NoError(t, err)
	require.NotContains(t, msg.Headers, protocol.HeaderTraceparent)

	var ev sagaEvents
	r := saga.Reply{StepIndex: 0, Kind: saga.KindAction, Attempt: 1, Outcome: saga.OutcomeRetry}
	allocs := testing.AllocsPerRun(100, func() {
		ev.reset()
		mark := len(sg.State.History)
		o.before(&ev, m, sg)
		o.after(&ev, m, sg, &r, t0) // the state is unchanged: nothing ended
		o.statuses(&ev, sg, mark)
		o.emit(context.Background(), &ev)
	})
	require.Zero(t, allocs, "observing a reply with telemetry off allocates")
	tp, end := o.traceparent(context.Background(), "x")
	end()
	require.Empty(t, tp, "no trace is stored when tracing is off")
}
