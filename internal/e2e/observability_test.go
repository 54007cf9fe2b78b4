package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/internal/telemetry/otelsetup"
	"github.com/sagacoord/sagacoord/internal/telemetry/traceexport"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// failShipping makes the ship step fail (a business failure) for sagas whose input asks for it.
func failShipping(_ context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
	if cmd.Kind == protocol.KindAction && strings.Contains(string(cmd.Input), `"fail"`) {
		return nil, participant.Failf("out of stock")
	}
	return json.RawMessage(`{}`), nil
}

// TestOneTracePerSaga follows two sagas, one completed and one compensated, through the real
// coordinator, broker and participants, with every span in one in-memory exporter, and checks
// that each saga is one connected trace: client span -> StartSaga server span -> saga span ->
// step attempt spans -> participant consumer spans.
func TestOneTracePerSaga(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := traceexport.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	e := newEnvWith(t, envOpts{noCoordinator: true})
	_, conn := e.tracedCoordinator(tp)
	e.client = pb.NewSagaServiceClient(conn)

	e.startParticipant(participantOpts{name: "inventory", tracer: tp})
	e.startParticipant(participantOpts{name: "payments", tracer: tp})
	e.startParticipant(participantOpts{name: "shipping", tracer: tp, behave: failShipping})
	e.register(chain("order", step("reserve", "inventory"), step("charge", "payments"), step("ship", "shipping")))

	good := e.start("order", `{"sku":"a"}`)
	bad := e.start("order", `{"sku":"b","fail":true}`)
	e.waitStatus(good, 30*time.Second, pb.SagaStatus_SAGA_STATUS_COMPLETED)
	e.waitStatus(bad, 30*time.Second, pb.SagaStatus_SAGA_STATUS_COMPENSATED)

	// The saga span is emitted right after the commit that ended the saga, which WatchSaga may
	// see first.
	sagaSpan := func(id string) (sdktrace.ReadOnlySpan, []sdktrace.ReadOnlySpan) {
		spans := exp.GetSpans().Snapshots()
		for _, s := range spans {
			if s.Name() == "saga order" && attr(s, telemetry.AttrSagaID) == id {
				return s, spans
			}
		}
		return nil, spans
	}
	for _, tc := range []struct {
		id       string
		status   string
		attempts []string // "name outcome", sorted
	}{
		{good, "COMPLETED", []string{"charge action succeeded", "reserve action succeeded", "ship action succeeded"}},
		{bad, "COMPENSATED", []string{"charge action succeeded", "charge compensate succeeded", "reserve action succeeded", "reserve compensate succeeded", "ship action failed"}},
	} {
		var root sdktrace.ReadOnlySpan
		var all []sdktrace.ReadOnlySpan
		eventually(t, 10*time.Second, func() (bool, string) {
			root, all = sagaSpan(tc.id)
			return root != nil, "no saga span for " + tc.id
		})
		tid := root.SpanContext().TraceID()
		byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
		var inTrace []sdktrace.ReadOnlySpan
		for _, s := range all {
			if s.SpanContext().TraceID() == tid {
				byID[s.SpanContext().SpanID()] = s
				inTrace = append(inTrace, s)
			}
		}
		t.Logf("saga %s (%s), trace %s:\n%s", tc.id, tc.status, tid, spanTree(inTrace))

		require.Equal(t, tc.status, attr(root, telemetry.AttrStatus))
		server, ok := byID[root.Parent().SpanID()]
		require.True(t, ok, "the saga span's parent is in the trace")
		require.Equal(t, "sagacoord.v1.SagaService/StartSaga", server.Name())
		require.Equal(t, trace.SpanKindServer, server.SpanKind())
		client, ok := byID[server.Parent().SpanID()]
		require.True(t, ok, "the server span's parent is the client span")
		require.Equal(t, trace.SpanKindClient, client.SpanKind())
		require.False(t, client.Parent().IsValid(), "the client span is the root")

		var attempts []string
		attemptIDs := map[trace.SpanID]string{}
		for _, s := range inTrace {
			if p := s.Parent(); p.IsValid() {
				_, ok := byID[p.SpanID()]
				require.True(t, ok, "span %q has its parent %s in the trace: one connected trace", s.Name(), p.SpanID())
			}
			if s.Parent().SpanID() == root.SpanContext().SpanID() {
				require.Equal(t, trace.SpanKindProducer, s.SpanKind(), s.Name())
				attempts = append(attempts, s.Name()+" "+attr(s, telemetry.AttrOutcome))
				attemptIDs[s.SpanContext().SpanID()] = s.Name()
				require.Equal(t, tc.id, attr(s, telemetry.AttrSagaID))
				require.NotEmpty(t, attr(s, telemetry.AttrAttempt))
			}
		}
		sort.Strings(attempts)
		require.Equal(t, tc.attempts, attempts, "step attempt spans under the saga span")

		consumed := map[string]bool{}
		for _, s := range inTrace {
			if s.SpanKind() != trace.SpanKindConsumer {
				continue
			}
			name, ok := attemptIDs[s.Parent().SpanID()]
			require.True(t, ok, "consumer span %q is a child of a step attempt span", s.Name())
			require.Equal(t, tc.id, attr(s, telemetry.AttrSagaID))
			consumed[name] = true
		}
		for _, name := range attemptIDs {
			require.True(t, consumed[name], "the participant continued the trace of %q", name)
		}
	}
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value.Emit()
		}
	}
	return ""
}

// spanTree renders spans as an indented tree, children in start order.
func spanTree(spans []sdktrace.ReadOnlySpan) string {
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	ids := map[trace.SpanID]bool{}
	for _, s := range spans {
		ids[s.SpanContext().SpanID()] = true
	}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if p := s.Parent(); p.IsValid() && ids[p.SpanID()] {
			children[p.SpanID()] = append(children[p.SpanID()], s)
		} else {
			roots = append(roots, s)
		}
	}
	var b strings.Builder
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		extra := ""
		if o := attr(s, telemetry.AttrOutcome); o != "" {
			extra = " outcome=" + o
		}
		if a := attr(s, telemetry.AttrAttempt); a != "" {
			extra += " attempt=" + a
		}
		fmt.Fprintf(&b, "%s%s [%s] %s%s\n", strings.Repeat("  ", depth), s.Name(), s.SpanKind(), s.EndTime().Sub(s.StartTime()).Round(100*time.Microsecond), extra)
		kids := children[s.SpanContext().SpanID()]
		sort.Slice(kids, func(i, j int) bool { return kids[i].StartTime().Before(kids[j].StartTime()) })
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}

// scrape reads a /metrics endpoint in the Prometheus text format.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// metricValue sums the samples of a family whose labels include want: counter and gauge values,
// histogram sample counts. A family that is absent counts 0.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return 0
	}
	sum := 0.0
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func familyNames(fams map[string]*dto.MetricFamily) string {
	var names []string
	for n := range fams {
		if strings.HasPrefix(n, "sagacoord") || strings.HasPrefix(n, "rpc") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// TestMetricsMoveAfterSagas scrapes the coordinator's and the participants' /metrics before and
// after a few sagas and checks that the counters and histograms moved by what happened.
func TestMetricsMoveAfterSagas(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	c := e.runCoordinator(func(cfg *coordinator.Config) { cfg.MetricsAddr = "127.0.0.1:0" })
	e.client = e.dial(c.Addr())
	ptel, err := otelsetup.Start(e.ctx, otelsetup.Config{ServiceName: "participants", MetricsAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ptel.Shutdown(context.Background()) })
	for _, name := range []string{"inventory", "payments"} {
		e.startParticipant(participantOpts{name: name, meter: ptel.MeterProvider})
	}
	e.startParticipant(participantOpts{name: "shipping", meter: ptel.MeterProvider, behave: failShipping})
	e.register(chain("order", step("reserve", "inventory"), step("charge", "payments"), step("ship", "shipping")))

	before, pbefore := scrape(t, c.MetricsAddr()), scrape(t, ptel.MetricsAddr())
	var ids []string
	for i := range 5 {
		input := `{"n":1}`
		if i >= 3 {
			input = `{"fail":true}`
		}
		ids = append(ids, e.start("order", input))
	}
	for _, id := range ids {
		e.waitStatus(id, 30*time.Second)
	}

	def := map[string]string{"saga_definition": "order"}
	delta := func(after, before map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
		return metricValue(after, name, labels) - metricValue(before, name, labels)
	}
	var after map[string]*dto.MetricFamily
	eventually(t, 10*time.Second, func() (bool, string) {
		after = scrape(t, c.MetricsAddr())
		return delta(after, before, "sagacoord_sagas_completed_total", def) == 3 && delta(after, before, "sagacoord_sagas_compensated_total", def) == 2,
			"saga counters did not reach +3 completed, +2 compensated; families: " + familyNames(after)
	})
	require.Equal(t, 5.0, delta(after, before, "sagacoord_sagas_started_total", def), "sagas started")
	require.Zero(t, delta(after, before, "sagacoord_sagas_failed_total", def), "sagas failed")
	// 3 x 3 actions, 2 x (3 actions + 2 compensations)
	require.Equal(t, 19.0, delta(after, before, "sagacoord_step_duration_seconds", nil), "step attempts observed")
	require.Equal(t, 2.0, delta(after, before, "sagacoord_step_duration_seconds", map[string]string{"saga_participant": "shipping", "saga_outcome": "failed"}))
	require.Positive(t, delta(after, before, "sagacoord_outbox_publish_duration_seconds", nil), "relay publish latency")
	require.Equal(t, 19.0, delta(after, before, "sagacoord_outbox_published_total", map[string]string{"result": "confirmed"}), "commands published")
	require.Positive(t, delta(after, before, "rpc_server_call_duration_seconds", nil), "gRPC server metrics (otelgrpc); families: "+familyNames(after))
	for _, g := range []string{"sagacoord_outbox_backlog", "sagacoord_outbox_oldest_age_seconds", "sagacoord_sagas_unfinished", "sagacoord_sagas_oldest_unfinished_age_seconds", "sagacoord_twopc_in_doubt"} {
		require.Contains(t, after, g, "gauge %s", g)
	}
	require.Zero(t, metricValue(after, "sagacoord_sagas_unfinished", map[string]string{"saga_status": "RUNNING"}), "no saga left running")

	pafter := scrape(t, ptel.MetricsAddr())
	require.Equal(t, 19.0, delta(pafter, pbefore, "sagacoord_participant_handler_duration_seconds", nil), "participant handler durations; families: "+familyNames(pafter))
	require.Equal(t, 2.0, delta(pafter, pbefore, "sagacoord_participant_commands_total", map[string]string{"saga_participant": "shipping", "saga_outcome": "failed"}))
}

// tracedCoordinator starts an in-process coordinator whose spans go to tp (its own process, as far
// as tracing knows) and returns it with a client whose calls are traced by tp too.
func (e *env) tracedCoordinator(tp trace.TracerProvider) (*coordinator.Coordinator, *grpc.ClientConn) {
	t := e.t
	c := e.runCoordinator(func(cfg *coordinator.Config) { cfg.TracerProvider = tp })
	conn, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(telemetry.Propagator))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return c, conn
}

// TestTraceSurvivesCoordinatorRestart starts a saga on one coordinator, stops it while a step is
// held in its handler, and lets a second coordinator, with a tracer (and memory) of its own,
// finish the saga: the spans the second one emits belong to the trace the first one began, under
// the first one's StartSaga span, because the trace lives in the saga's row.
func TestTraceSurvivesCoordinatorRestart(t *testing.T) {
	t.Parallel()
	expA, expB, expP := tracetest.NewInMemoryExporter(), tracetest.NewInMemoryExporter(), tracetest.NewInMemoryExporter()
	tpA := traceexport.NewTracerProvider(sdktrace.WithSyncer(expA))
	tpB := traceexport.NewTracerProvider(sdktrace.WithSyncer(expB))
	tpP := traceexport.NewTracerProvider(sdktrace.WithSyncer(expP))
	for _, tp := range []*sdktrace.TracerProvider{tpA, tpB, tpP} {
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	}
	e := newEnvWith(t, envOpts{noCoordinator: true})
	a, connA := e.tracedCoordinator(tpA)
	e.client = pb.NewSagaServiceClient(connA)

	held, entered := e.newGate(), make(chan struct{}, 1)
	e.startParticipant(participantOpts{name: "first", tracer: tpP, behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		select {
		case entered <- struct{}{}:
		default:
		}
		return json.RawMessage(`{}`), held.wait(ctx)
	}})
	e.startParticipant(participantOpts{name: "second", tracer: tpP})
	e.register(chain("handover", step("one", "first"), step("two", "second")))
	id := e.start("handover", `{}`)
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first step's handler never ran")
	}
	a.Stop()

	_, connB := e.tracedCoordinator(tpB)
	e.client = pb.NewSagaServiceClient(connB)
	held.open()
	e.waitStatus(id, 30*time.Second, pb.SagaStatus_SAGA_STATUS_COMPLETED)

	var server sdktrace.ReadOnlySpan
	for _, s := range expA.GetSpans().Snapshots() {
		if s.Name() == "sagacoord.v1.SagaService/StartSaga" && s.SpanKind() == trace.SpanKindServer {
			server = s
		}
	}
	require.NotNil(t, server, "coordinator A traced StartSaga")
	var sagaSpan sdktrace.ReadOnlySpan
	eventually(t, 10*time.Second, func() (bool, string) {
		for _, s := range expB.GetSpans().Snapshots() {
			if s.Name() == "saga handover" {
				sagaSpan = s
			}
		}
		return sagaSpan != nil, "coordinator B emitted no saga span"
	})
	require.Equal(t, server.SpanContext().TraceID(), sagaSpan.SpanContext().TraceID(), "B continues A's trace")
	require.Equal(t, server.SpanContext().SpanID(), sagaSpan.Parent().SpanID(), "under A's StartSaga span")
	attempts := map[trace.SpanID]string{}
	for _, s := range expB.GetSpans().Snapshots() {
		if s.SpanKind() == trace.SpanKindProducer {
			require.Equal(t, sagaSpan.SpanContext().SpanID(), s.Parent().SpanID(), s.Name())
			attempts[s.SpanContext().SpanID()] = s.Name()
		}
	}
	require.ElementsMatch(t, []string{"one action", "two action"}, valuesOf(attempts), "B emitted both attempt spans, the first one's started under A")
	for _, s := range expP.GetSpans().Snapshots() {
		if s.SpanKind() == trace.SpanKindConsumer {
			require.Equal(t, sagaSpan.SpanContext().TraceID(), s.SpanContext().TraceID(), s.Name())
			require.Contains(t, attempts, s.Parent().SpanID(), "consumer span %q is a child of an attempt span B emitted", s.Name())
		}
	}
}

func valuesOf[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestOneTracePerTransaction checks two-phase commit's trace: BeginTransaction server span ->
// transaction span -> prepare and decision spans per participant -> participant consumer spans,
// for a committed and an aborted transaction.
func TestOneTracePerTransaction(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := traceexport.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e := newEnvWith(t, envOpts{noCoordinator: true})
	_, conn := e.tracedCoordinator(tp)
	client := pb.NewTwoPCServiceClient(conn)
	for _, name := range []string{"tx-a", "tx-b", "tx-no"} {
		e.startTracedTxParticipant(name, tp)
	}

	committed := e.beginTx(client, 10*time.Second, txParts("tx-a", "tx-b"))
	aborted := e.beginTx(client, 10*time.Second, txParts("tx-a", "tx-no"))
	e.awaitTx(client, committed, 30*time.Second, "COMMITTED", txInState(pb.TransactionState_TRANSACTION_STATE_COMMITTED))
	e.awaitTx(client, aborted, 30*time.Second, "ABORTED", txInState(pb.TransactionState_TRANSACTION_STATE_ABORTED))

	for _, tc := range []struct {
		id, state string
		want      []string // producer spans under the transaction span, "name outcome"
	}{
		{committed, "COMMITTED", []string{"tx-a commit ack", "tx-a prepare vote_yes", "tx-b commit ack", "tx-b prepare vote_yes"}},
		{aborted, "ABORTED", []string{"tx-a abort ack", "tx-no abort ack", "tx-no prepare vote_no"}},
	} {
		var root sdktrace.ReadOnlySpan
		var all []sdktrace.ReadOnlySpan
		eventually(t, 10*time.Second, func() (bool, string) {
			all = exp.GetSpans().Snapshots()
			for _, s := range all {
				if s.Name() == "transaction" && attr(s, telemetry.AttrTxID) == tc.id {
					root = s
				}
			}
			return root != nil, "no transaction span for " + tc.id
		})
		var inTrace []sdktrace.ReadOnlySpan
		byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
		for _, s := range all {
			if s.SpanContext().TraceID() == root.SpanContext().TraceID() {
				inTrace = append(inTrace, s)
				byID[s.SpanContext().SpanID()] = s
			}
		}
		t.Logf("transaction %s (%s):\n%s", tc.id, tc.state, spanTree(inTrace))
		require.Equal(t, tc.state, attr(root, telemetry.AttrTxState))
		server := byID[root.Parent().SpanID()]
		require.NotNil(t, server, "the transaction span's parent is in the trace")
		require.Equal(t, "sagacoord.v1.TwoPCService/BeginTransaction", server.Name())
		var got []string
		producers := map[trace.SpanID]bool{}
		for _, s := range inTrace {
			if s.SpanKind() == trace.SpanKindProducer && s.Parent().SpanID() == root.SpanContext().SpanID() {
				producers[s.SpanContext().SpanID()] = true
				if o := attr(s, telemetry.AttrOutcome); o != "no_vote" || tc.state != "ABORTED" {
					got = append(got, s.Name()+" "+o)
				}
			}
		}
		sort.Strings(got)
		if tc.state == "ABORTED" {
			// tx-a's YES may come before tx-no's NO (vote_yes) or after the decision (no_vote).
			got = slicesWithout(got, "tx-a prepare vote_yes")
		}
		require.Equal(t, tc.want, got, "prepare and decision spans")
		consumers := 0
		for _, s := range inTrace {
			if s.SpanKind() == trace.SpanKindConsumer {
				consumers++
				require.True(t, producers[s.Parent().SpanID()], "consumer span %q is a child of a prepare or decision span", s.Name())
			}
		}
		require.GreaterOrEqual(t, consumers, 4, "every participant continued the trace of its prepare and its decision")
	}
}

func slicesWithout(s []string, drop string) []string {
	out := s[:0:0]
	for _, v := range s {
		if v != drop {
			out = append(out, v)
		}
	}
	return out
}

// startTracedTxParticipant runs a 2PC participant that votes YES (NO when its name says "no") and
// traces with tp.
func (e *env) startTracedTxParticipant(name string, tp trace.TracerProvider) {
	t := e.t
	tr, err := amqptransport.New(e.ctx, amqptransport.Config{URL: e.amqpURL, ConnectionName: testenv.Name("p-" + name + "-")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	w, err := participant.New(participant.Config{Name: name, Transport: tr, DB: e.pool, Schema: testenv.Name("p_"), Prefetch: 4,
		RetryBackoff: 50 * time.Millisecond, Logger: testLogger(t), TracerProvider: tp})
	require.NoError(t, err)
	nop := func(context.Context, pgx.Tx, *protocol.TxCommand) error { return nil }
	w.HandleTx(participant.TxHandlers{
		Prepare: func(context.Context, pgx.Tx, *protocol.TxCommand) error {
			if strings.Contains(name, "no") {
				return participant.Failf("%s says no", name)
			}
			return nil
		},
		Commit: nop, Abort: nop,
	})
	require.NoError(t, w.Migrate(e.ctx))
	require.NoError(t, w.Start(e.ctx))
	t.Cleanup(w.Stop)
}
