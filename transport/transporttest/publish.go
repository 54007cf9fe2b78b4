package transporttest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

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

// testTwoPCQueue: a two-phase-commit command published with the participant's two-phase-commit
// routing key lands in its own queue, a step command in the saga queue, each only there; and the
// participant exists once both queues do.
func testTwoPCQueue(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	exists, err := tr.ParticipantExists(ctx, participant)
	if err != nil || !exists {
		t.Fatalf("ParticipantExists after DeclareParticipant = %v, %v; want true", exists, err)
	}
	sagas := consume(t, tr, ctx, participantQueue, 2)
	txs := consume(t, tr, ctx, protocol.TwoPCQueue(participant), 2)
	prepare := command("tx-1")
	prepare.RoutingKey, prepare.Message.Type = protocol.TwoPCRoutingKey(participant), protocol.TypePrepare
	publishAll(t, tr, prepare, command("step-1"))
	d := receive(t, txs)
	requireMessage(t, d.Message, prepare.Message)
	ack(t, d)
	ack(t, receiveID(t, sagas, "step-1"))
	publishAll(t, tr, command("step-2"), prepare)
	ack(t, receiveID(t, sagas, "step-2"))
	ack(t, receiveID(t, txs, "tx-1"))
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

// testFinalNotices checks that final notices are not mandatory, and reach a participant's queue
// once it subscribed to them.
func testFinalNotices(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	notice := func(id string) transport.Outgoing {
		m := command(id)
		m.Exchange, m.Type = protocol.ExchangeFinals, protocol.TypeFinal
		return m
	}
	if err := tr.Publish(ctx, []transport.Outgoing{notice("final-unheard")})[0]; err != nil {
		t.Fatalf("Publish of a final notice nobody subscribed to: got %v, want nil (it is dropped)", err)
	}
	if err := tr.SubscribeFinals(ctx, participant); err != nil {
		t.Fatalf("SubscribeFinals: %v", err)
	}
	if err := tr.SubscribeFinals(ctx, participant); err != nil {
		t.Fatalf("SubscribeFinals again: %v", err)
	}
	publishAll(t, tr, notice("final-heard"))
	ch := consume(t, tr, ctx, participantQueue, 10)
	d := receive(t, ch)
	if d.MessageID != "final-heard" || d.Type != protocol.TypeFinal {
		t.Fatalf("first delivery after subscribing: got %s (%s), want final-heard: the notice before subscribing is dropped", d.MessageID, d.Type)
	}
	ack(t, d)
	other := notice("final-other")
	other.RoutingKey = "someone-else"
	publishAll(t, tr, other)
	requireNext(t, tr, ch, "final-sentinel")
	if err := tr.SubscribeFinals(ctx, "nobody"); err == nil {
		t.Fatal("SubscribeFinals of a participant without a queue: got nil, want an error")
	}
}
