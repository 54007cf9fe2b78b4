// Package transporttest is the conformance suite of transport.Transport. Every implementation runs
// it from its own tests, against the real broker where there is one:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T) transport.Transport { ... })
//	}
//
// The suite checks the contract the engine and the participant SDK rely on: idempotent topology,
// faithful round trips, mandatory returns, batch confirms, dead-lettering, requeue, prefetch,
// and that a delivery never outlives its connection.
package transporttest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// Disconnecter is implemented by a transport, or by a test's wrapper around one, that can lose its
// broker connections on demand as a network failure would. Disconnect returns once the loss has
// happened on the broker's side; the transport may notice it later. Run skips the
// connection-loss test for transports that do not implement it.
type Disconnecter interface {
	Disconnect()
}

// Timeout bounds every wait of the suite: for a delivery, for a reconnection, for a channel to
// close. It is generous because it is only reached when something is broken.
const Timeout = 30 * time.Second

// Run runs the conformance suite as parallel subtests of t.
//
// newTransport returns a transport connected to a broker of its own for the test it is given (a
// fresh vhost, a fresh in-memory broker) on which nothing is declared. Called again with the same
// test, it returns another connection to that same broker, as a second process would have. It
// arranges for what it returns to be closed when the test ends; the suite closes some transports
// itself, so Close must be idempotent.
func Run(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tests := []struct {
		name string
		run  func(t *testing.T, newTransport func(t *testing.T) transport.Transport)
	}{
		{"TopologyIsIdempotent", testTopologyIsIdempotent},
		{"RoundTripKeepsEveryProperty", testRoundTrip},
		{"UnroutableIsReturned", testUnroutable},
		{"BatchOf500IsConfirmed", testBatch},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"ConcurrentPublishersGetTheirOwnResults", testConcurrentMixedPublishers},
		{"PublishWithEndedContextFails", testPublishEndedContext},
		{"RejectDeadLetters", testReject},
		{"RequeueRedelivers", testRequeue},
		{"DoubleSettleFailsHarmlessly", testDoubleSettle},
		{"PrefetchBoundsUnsettled", testPrefetch},
		{"ConsumeUnknownQueueFails", testConsumeUnknownQueue},
		{"ContextEndClosesConsumer", testContextEnd},
		{"ContextEndReturnsUnreadDeliveries", testContextEndUnread},
		{"CloseIsIdempotentAndFinal", testClose},
		{"ConnectionLossMakesDeliveriesStale", testConnectionLoss},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newTransport)
		})
	}
}

const participant = "conformance"

var participantQueue = protocol.ParticipantQueue(participant)

// setup returns a transport with the topology and the test participant declared.
func setup(t *testing.T, newTransport func(t *testing.T) transport.Transport) transport.Transport {
	t.Helper()
	tr := newTransport(t)
	ctx := timeout(t)
	if err := tr.DeclareTopology(ctx); err != nil {
		t.Fatalf("DeclareTopology: %v", err)
	}
	if err := tr.DeclareParticipant(ctx, participant); err != nil {
		t.Fatalf("DeclareParticipant: %v", err)
	}
	return tr
}

// timeout returns a context that ends after Timeout or with the test.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// command returns a step command to the test participant with every property set.
func command(id string) transport.Outgoing {
	return transport.Outgoing{
		Exchange:   protocol.ExchangeCommands,
		RoutingKey: participant,
		Message: protocol.Message{
			MessageID:     id,
			Type:          protocol.TypeSagaAction,
			ContentType:   protocol.ContentType,
			CorrelationID: "corr-" + id,
			Headers: map[string]string{
				protocol.HeaderVersion:     protocol.Version,
				protocol.HeaderSagaID:      "saga-" + id,
				protocol.HeaderStep:        "débit €",
				protocol.HeaderAttempt:     "1",
				protocol.HeaderTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				"x-empty":                  "",
			},
			Body: []byte(`{"id":"` + id + `","bin":"\u0000\u00ff"}`),
		},
	}
}

func publishAll(t *testing.T, tr transport.Transport, msgs ...transport.Outgoing) {
	t.Helper()
	for i, err := range tr.Publish(timeout(t), msgs) {
		if err != nil {
			t.Fatalf("Publish message %d (%s): %v", i, msgs[i].MessageID, err)
		}
	}
}

// publishEventually publishes m, retrying as an outbox relay would until it is confirmed.
func publishEventually(t *testing.T, tr transport.Transport, m transport.Outgoing) {
	t.Helper()
	ctx := timeout(t)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := tr.Publish(attempt, []transport.Outgoing{m})[0]
		cancel()
		if err == nil {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("publish %s did not succeed within %s; last error: %v", m.MessageID, Timeout, err)
		}
	}
}

func consume(t *testing.T, tr transport.Transport, ctx context.Context, queue string, prefetch int) <-chan *transport.Delivery {
	t.Helper()
	ch, err := tr.Consume(ctx, queue, prefetch)
	if err != nil {
		t.Fatalf("Consume %s: %v", queue, err)
	}
	return ch
}

func receive(t *testing.T, ch <-chan *transport.Delivery) *transport.Delivery {
	t.Helper()
	select {
	case d, ok := <-ch:
		if !ok {
			t.Fatalf("delivery channel closed while a delivery was expected")
		}
		return d
	case <-time.After(Timeout):
		t.Fatalf("no delivery within %s", Timeout)
		return nil
	}
}

// receiveID receives one delivery and checks its message id.
func receiveID(t *testing.T, ch <-chan *transport.Delivery, id string) *transport.Delivery {
	t.Helper()
	d := receive(t, ch)
	if d.MessageID != id {
		t.Fatalf("received message %q, want %q", d.MessageID, id)
	}
	return d
}

func ack(t *testing.T, d *transport.Delivery) {
	t.Helper()
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack %s: %v", d.MessageID, err)
	}
}

// requireClosed waits for ch to be closed. It requeues what ch still delivers: a delivery may be
// handed out while the consumer is stopping.
func requireClosed(t *testing.T, ch <-chan *transport.Delivery) {
	t.Helper()
	deadline := time.After(Timeout)
	for {
		select {
		case d, ok := <-ch:
			if !ok {
				return
			}
			_ = d.Requeue()
		case <-deadline:
			t.Fatalf("delivery channel not closed within %s", Timeout)
		}
	}
}

// requireNext proves that nothing but what was already received is left in the queue: a
// sentinel published now must be the next delivery. It acks the sentinel.
func requireNext(t *testing.T, tr transport.Transport, ch <-chan *transport.Delivery, sentinel string) {
	t.Helper()
	publishAll(t, tr, command(sentinel))
	ack(t, receiveID(t, ch, sentinel))
}

func testTopologyIsIdempotent(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	ctx := timeout(t)
	first := newTransport(t)
	for range 2 {
		if err := first.DeclareTopology(ctx); err != nil {
			t.Fatalf("DeclareTopology: %v", err)
		}
		if err := first.DeclareParticipant(ctx, participant); err != nil {
			t.Fatalf("DeclareParticipant: %v", err)
		}
	}
	if err := first.DeclareParticipant(ctx, ""); err == nil {
		t.Fatalf("DeclareParticipant with an empty name succeeded")
	}
	// A second process declares the same topology, participant first, and they interoperate.
	second := newTransport(t)
	if err := second.DeclareParticipant(ctx, participant); err != nil {
		t.Fatalf("DeclareParticipant from a second connection: %v", err)
	}
	if err := second.DeclareTopology(ctx); err != nil {
		t.Fatalf("DeclareTopology from a second connection: %v", err)
	}
	ch := consume(t, second, ctx, participantQueue, 1)
	publishAll(t, first, command("idem-1"))
	ack(t, receiveID(t, ch, "idem-1"))
}

func testRoundTrip(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	commands := consume(t, tr, ctx, participantQueue, 1)
	replies := consume(t, tr, ctx, protocol.QueueReplies, 1)

	cmd := command("rt-1")
	publishAll(t, tr, cmd)
	d := receive(t, commands)
	requireMessage(t, d.Message, cmd.Message)
	if d.Redelivered {
		t.Errorf("first delivery has Redelivered set")
	}
	ack(t, d)

	reply := transport.Outgoing{
		Exchange:   protocol.ExchangeReplies,
		RoutingKey: protocol.RoutingKeyReplies,
		Message: protocol.Message{
			MessageID:     protocol.ReplyID("rt-1"),
			Type:          protocol.TypeReply,
			ContentType:   protocol.ContentType,
			CorrelationID: "rt-1",
			Body:          []byte(`{"outcome":"succeeded"}`),
		},
	}
	publishAll(t, tr, reply)
	d = receive(t, replies)
	requireMessage(t, d.Message, reply.Message)
	ack(t, d)
}

// requireMessage compares every field; nil and empty header maps are equal.
func requireMessage(t *testing.T, got, want protocol.Message) {
	t.Helper()
	if got.MessageID != want.MessageID || got.Type != want.Type || got.ContentType != want.ContentType ||
		got.CorrelationID != want.CorrelationID || string(got.Body) != string(want.Body) ||
		!maps.Equal(got.Headers, want.Headers) {
		t.Fatalf("received message differs:\n got %+v\nwant %+v", got, want)
	}
}

// requireRedelivery is requireMessage for a message the broker delivers again, to which it may
// add headers of its own (a quorum queue adds x-delivery-count).
func requireRedelivery(t *testing.T, got, want protocol.Message) {
	t.Helper()
	headers := maps.Clone(got.Headers)
	for k := range headers {
		if _, ok := want.Headers[k]; !ok && strings.HasPrefix(k, "x-") && !strings.HasPrefix(k, "x-sagacoord") {
			delete(headers, k)
		}
	}
	got.Headers = headers
	requireMessage(t, got, want)
}

func testUnroutable(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)

	lone := command("unroutable-1")
	lone.RoutingKey = "nobody"
	if err := tr.Publish(ctx, []transport.Outgoing{lone})[0]; !errors.Is(err, transport.ErrReturned) {
		t.Fatalf("Publish of an unroutable message: got %v, want ErrReturned", err)
	}

	// A mixed batch: pairs share a message id but not a routing key, and two unroutable
	// messages are identical, so results must be matched by more than the id.
	var msgs []transport.Outgoing
	var routable []string
	for i := range 100 {
		m := command(fmt.Sprintf("mixed-%d", i/2))
		if i%2 == 1 {
			m.RoutingKey = "nobody"
		} else {
			routable = append(routable, m.MessageID)
		}
		msgs = append(msgs, m)
	}
	twin := command("twin")
	twin.RoutingKey = "nobody"
	msgs = append(msgs, twin, twin)
	errs := tr.Publish(ctx, msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("Publish returned %d results for %d messages", len(errs), len(msgs))
	}
	for i, err := range errs {
		wantReturned := msgs[i].RoutingKey == "nobody"
		if wantReturned != errors.Is(err, transport.ErrReturned) || (!wantReturned && err != nil) {
			t.Errorf("message %d (%s, key %s): got %v", i, msgs[i].MessageID, msgs[i].RoutingKey, err)
		}
	}
	ch := consume(t, tr, ctx, participantQueue, 10)
	for _, id := range routable {
		ack(t, receiveID(t, ch, id))
	}
	requireNext(t, tr, ch, "unroutable-sentinel")
}

func testBatch(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	msgs := make([]transport.Outgoing, 500)
	for i := range msgs {
		msgs[i] = command(fmt.Sprintf("batch-%03d", i))
	}
	publishAll(t, tr, msgs...)
	ch := consume(t, tr, ctx, participantQueue, 100)
	seen := map[string]bool{}
	for range msgs {
		d := receive(t, ch)
		if seen[d.MessageID] {
			t.Fatalf("message %s delivered twice", d.MessageID)
		}
		seen[d.MessageID] = true
		ack(t, d)
	}
	requireNext(t, tr, ch, "batch-sentinel")
}

func testConcurrentPublishers(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	const publishers, perPublisher = 8, 40
	var wg sync.WaitGroup
	errc := make(chan error, publishers*perPublisher)
	for p := range publishers {
		wg.Go(func() {
			for i := range perPublisher / 4 {
				batch := make([]transport.Outgoing, 4)
				for j := range batch {
					batch[j] = command(fmt.Sprintf("conc-%d-%d-%d", p, i, j))
				}
				for _, err := range tr.Publish(ctx, batch) {
					if err != nil {
						errc <- err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("concurrent Publish: %v", err)
	}
	ch := consume(t, tr, ctx, participantQueue, 50)
	seen := map[string]bool{}
	for range publishers * perPublisher {
		d := receive(t, ch)
		seen[d.MessageID] = true
		ack(t, d)
	}
	if len(seen) != publishers*perPublisher {
		t.Fatalf("received %d distinct messages, want %d", len(seen), publishers*perPublisher)
	}
}

// testConcurrentMixedPublishers has concurrent callers publish routable and unroutable messages
// with the same ids, as happens when a transport publishes concurrent calls together: each caller
// must get the results of its own messages.
func testConcurrentMixedPublishers(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	const publishers, rounds = 8, 5
	var wg sync.WaitGroup
	errc := make(chan error, publishers*rounds*3)
	for p := range publishers {
		wg.Go(func() {
			for r := range rounds {
				twin := command("mixed-twin") // the same unroutable message from every caller
				twin.RoutingKey = "nobody"
				own := command(fmt.Sprintf("mixed-%d-%d", p, r))
				if p%2 == 1 {
					own.RoutingKey = "nobody"
				}
				batch := []transport.Outgoing{command("mixed-shared"), twin, own}
				errs := tr.Publish(ctx, batch)
				if len(errs) != len(batch) {
					errc <- fmt.Errorf("publisher %d: %d results for %d messages", p, len(errs), len(batch))
					return
				}
				for i, err := range errs {
					wantReturned := batch[i].RoutingKey == "nobody"
					if wantReturned != errors.Is(err, transport.ErrReturned) || (!wantReturned && err != nil) {
						errc <- fmt.Errorf("publisher %d, message %s (key %s): got %v", p, batch[i].MessageID, batch[i].RoutingKey, err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	want := map[string]int{"mixed-shared": publishers * rounds}
	for p := 0; p < publishers; p += 2 {
		for r := range rounds {
			want[fmt.Sprintf("mixed-%d-%d", p, r)] = 1
		}
	}
	ch := consume(t, tr, ctx, participantQueue, 50)
	for range publishers*rounds + publishers/2*rounds {
		d := receive(t, ch)
		if want[d.MessageID] == 0 {
			t.Fatalf("received %s, which was not confirmed as routed (or more often than confirmed)", d.MessageID)
		}
		want[d.MessageID]--
		ack(t, d)
	}
	requireNext(t, tr, ch, "mixed-sentinel")
}

func testPublishEndedContext(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for i, err := range tr.Publish(ctx, []transport.Outgoing{command("ended-1"), command("ended-2")}) {
		if err == nil {
			t.Errorf("message %d: Publish with an ended context succeeded", i)
		}
	}
	if errs := tr.Publish(ctx, nil); len(errs) != 0 {
		t.Errorf("Publish of no messages returned %d results", len(errs))
	}
}

func testReject(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	ch := consume(t, tr, ctx, participantQueue, 1)
	dead := consume(t, tr, ctx, protocol.QueueDead, 1)
	poison := command("poison-1")
	publishAll(t, tr, poison)
	if err := receiveID(t, ch, "poison-1").Reject(); err != nil {
		t.Fatalf("Reject: %v", err)
	}
	d := receiveID(t, dead, "poison-1")
	if string(d.Body) != string(poison.Body) || d.Type != poison.Type || d.CorrelationID != poison.CorrelationID {
		t.Errorf("dead letter differs from the rejected message: %+v", d.Message)
	}
	for k, v := range poison.Headers {
		if d.Headers[k] != v {
			t.Errorf("dead letter header %s = %q, want %q", k, d.Headers[k], v)
		}
	}
	ack(t, d)
	requireNext(t, tr, ch, "poison-sentinel")
}

func testRequeue(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	ch := consume(t, tr, ctx, participantQueue, 1)
	publishAll(t, tr, command("requeue-1"))
	if err := receiveID(t, ch, "requeue-1").Requeue(); err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	d := receiveID(t, ch, "requeue-1")
	if !d.Redelivered {
		t.Errorf("requeued message arrived without Redelivered")
	}
	ack(t, d)
	requireNext(t, tr, ch, "requeue-sentinel")
}

func testDoubleSettle(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	ch := consume(t, tr, ctx, participantQueue, 2)
	publishAll(t, tr, command("double-1"), command("double-2"))
	first := receiveID(t, ch, "double-1")
	second := receiveID(t, ch, "double-2")
	ack(t, first)
	for name, settle := range map[string]func() error{"Ack": first.Ack, "Reject": first.Reject, "Requeue": first.Requeue} {
		if err := settle(); err == nil {
			t.Errorf("%s of a settled delivery succeeded", name)
		}
	}
	// A second acknowledgement reaching the broker would close the channel and with it the
	// other delivery still in flight.
	ack(t, second)
	requireNext(t, tr, ch, "double-sentinel")
}

func testPrefetch(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	const total, prefetch = 10, 3
	msgs := make([]transport.Outgoing, total)
	for i := range msgs {
		msgs[i] = command(fmt.Sprintf("prefetch-%d", i))
	}
	publishAll(t, tr, msgs...)

	slowCtx, stopSlow := context.WithCancel(ctx)
	defer stopSlow()
	slow := consume(t, tr, slowCtx, participantQueue, prefetch)
	var held []*transport.Delivery
	for range prefetch {
		held = append(held, receive(t, slow))
	}
	// slow holds prefetch unsettled deliveries. Had it been sent more, a second consumer could
	// not receive all the rest.
	fast := consume(t, tr, ctx, participantQueue, 100)
	for range total - prefetch {
		ack(t, receive(t, fast))
	}
	for _, d := range held {
		ack(t, d)
	}
	stopSlow()
	requireClosed(t, slow)
	requireNext(t, tr, fast, "prefetch-sentinel")
}

func testConsumeUnknownQueue(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	if _, err := tr.Consume(ctx, protocol.ParticipantQueue("undeclared"), 1); err == nil {
		t.Errorf("Consume of an undeclared queue succeeded")
	}
	if _, err := tr.Consume(ctx, participantQueue, 0); err == nil {
		t.Errorf("Consume with prefetch 0 succeeded")
	}
	// The failures leave the transport usable.
	ch := consume(t, tr, ctx, participantQueue, 1)
	requireNext(t, tr, ch, "unknown-sentinel")
}

func testContextEnd(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	consumerCtx, stop := context.WithCancel(ctx)
	ch := consume(t, tr, consumerCtx, participantQueue, 5)
	publishAll(t, tr, command("ctx-1"), command("ctx-2"))
	d := receiveID(t, ch, "ctx-1")
	stop()
	requireClosed(t, ch)
	// Work in progress when the consumer stopped can still be acknowledged; ctx-2, which the
	// consumer may have received but never handed out, goes back to the queue.
	ack(t, d)
	again := consume(t, tr, ctx, participantQueue, 5)
	ack(t, receiveID(t, again, "ctx-2"))
	requireNext(t, tr, again, "ctx-sentinel")
}

// testContextEndUnread stops a consumer that was sent more than it read. What it never read
// goes back to the queue at once, without anyone reading the closed channel.
func testContextEndUnread(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	const total = 20
	msgs := make([]transport.Outgoing, total)
	for i := range msgs {
		msgs[i] = command(fmt.Sprintf("unread-%d", i))
	}
	publishAll(t, tr, msgs...)
	consumerCtx, stop := context.WithCancel(ctx)
	ch := consume(t, tr, consumerCtx, participantQueue, total)
	ack(t, receiveID(t, ch, "unread-0"))
	stop()
	again := consume(t, tr, ctx, participantQueue, total)
	// Requeued messages need not come back in their order (quorum queues).
	left := map[string]bool{}
	for i := 1; i < total; i++ {
		left[fmt.Sprintf("unread-%d", i)] = true
	}
	for len(left) > 0 {
		d := receive(t, again)
		if !left[d.MessageID] {
			t.Fatalf("received %q, want one of the unread %v", d.MessageID, left)
		}
		delete(left, d.MessageID)
		ack(t, d)
	}
	requireNext(t, tr, again, "unread-sentinel")
}

func testClose(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	ch := consume(t, tr, ctx, participantQueue, 1)
	publishAll(t, tr, command("close-1"))
	d := receiveID(t, ch, "close-1")
	if err := tr.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	requireClosed(t, ch)
	if err := d.Ack(); !errors.Is(err, transport.ErrStale) {
		t.Errorf("Ack after Close: got %v, want ErrStale", err)
	}
	if err := tr.Publish(ctx, []transport.Outgoing{command("close-2")})[0]; err == nil {
		t.Errorf("Publish after Close succeeded")
	}
	if _, err := tr.Consume(ctx, participantQueue, 1); err == nil {
		t.Errorf("Consume after Close succeeded")
	}
	if err := tr.DeclareTopology(ctx); err == nil {
		t.Errorf("DeclareTopology after Close succeeded")
	}
	// The unsettled message went back to the queue.
	other := newTransport(t)
	again := consume(t, other, ctx, participantQueue, 1)
	d = receiveID(t, again, "close-1")
	if !d.Redelivered {
		t.Errorf("message unsettled at Close came back without Redelivered")
	}
	ack(t, d)
}

func testConnectionLoss(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	dc, ok := tr.(Disconnecter)
	if !ok {
		t.Skipf("%T cannot simulate a connection loss (implement transporttest.Disconnecter)", tr)
	}
	ctx := timeout(t)
	ch := consume(t, tr, ctx, participantQueue, 10)
	publishAll(t, tr, command("loss-1"))
	old := receiveID(t, ch, "loss-1")
	if old.Redelivered {
		t.Fatalf("first delivery has Redelivered set")
	}

	dc.Disconnect()

	// The same channel carries on, on a new connection.
	again := receiveID(t, ch, "loss-1")
	requireRedelivery(t, again.Message, command("loss-1").Message)
	if !again.Redelivered {
		t.Errorf("message redelivered after a connection loss without Redelivered")
	}
	for name, settle := range map[string]func() error{"Ack": old.Ack, "Reject": old.Reject, "Requeue": old.Requeue} {
		if err := settle(); !errors.Is(err, transport.ErrStale) {
			t.Errorf("%s of a delivery from the lost connection: got %v, want ErrStale", name, err)
		}
	}
	ack(t, again)

	// Publishing recovers too (the outbox retries until it does), and nothing else is queued:
	// the stale settlements above sent nothing.
	publishEventually(t, tr, command("loss-2"))
	ack(t, receiveID(t, ch, "loss-2"))
}
