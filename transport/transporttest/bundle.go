package transporttest

import (
	"fmt"
	"maps"
	"testing"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// bundleOf returns the commands with ids prefix-0..n-1 and one message that carries them all.
func bundleOf(prefix string, n int) ([]transport.Outgoing, transport.Outgoing) {
	items := make([]transport.Outgoing, n)
	msgs := make([]protocol.Message, n)
	for i := range items {
		items[i] = command(fmt.Sprintf("%s-%d", prefix, i))
		msgs[i] = items[i].Message
	}
	return items, transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: participant, Message: protocol.EncodeBundle(msgs)}
}

// receiveItems receives one delivery per item, in order, and checks that each is its item.
func receiveItems(t *testing.T, ch <-chan *transport.Delivery, items []transport.Outgoing, redelivered bool) []*transport.Delivery {
	t.Helper()
	out := make([]*transport.Delivery, len(items))
	for i, want := range items {
		d := receiveID(t, ch, want.MessageID)
		if d.Type != want.Type || d.CorrelationID != want.CorrelationID || string(d.Body) != string(want.Body) || !maps.Equal(d.Headers, want.Headers) {
			t.Errorf("item %d differs from the message bundled:\n got  %+v\n want %+v", i, d.Message, want.Message)
		}
		if d.Redelivered != redelivered {
			t.Errorf("item %d: Redelivered = %v, want %v", i, d.Redelivered, redelivered)
		}
		out[i] = d
	}
	return out
}

func testBundleCarriesItsMessages(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	// A bundle is one message to the broker: a prefetch of 1 hands out all of its items.
	ch := consume(t, tr, ctx, participantQueue, 1)
	items, bundle := bundleOf("bundle", 3)
	publishAll(t, tr, bundle)
	for _, d := range receiveItems(t, ch, items, false) {
		ack(t, d)
	}
	requireNext(t, tr, ch, "bundle-sentinel")
}

func testBundleItemRejectedAlone(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	ch := consume(t, tr, ctx, participantQueue, 1)
	dead := consume(t, tr, ctx, protocol.QueueDead, 1)
	items, bundle := bundleOf("bundle-reject", 3)
	publishAll(t, tr, bundle)
	got := receiveItems(t, ch, items, false)
	ack(t, got[0])
	if err := got[1].Reject(); err != nil {
		t.Fatalf("Reject item 1: %v", err)
	}
	ack(t, got[2])
	d := receiveID(t, dead, items[1].MessageID)
	if string(d.Body) != string(items[1].Body) || d.Type != items[1].Type {
		t.Errorf("dead letter differs from the rejected item: %+v", d.Message)
	}
	if d.Headers[protocol.HeaderDeadQueue] != participantQueue || d.Headers[protocol.HeaderDeadReason] != "rejected" {
		t.Errorf("dead letter headers %v do not name the queue %q and the reason", d.Headers, participantQueue)
	}
	ack(t, d)
	// Only the rejected item was dead-lettered, and the bundle left its queue.
	publishAll(t, tr, transport.Outgoing{Exchange: protocol.ExchangeDead, RoutingKey: participantQueue, Message: command("dead-sentinel").Message})
	ack(t, receiveID(t, dead, "dead-sentinel"))
	requireNext(t, tr, ch, "bundle-reject-sentinel")
}

func testBundleRequeuedWhenAnItemIs(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	ch := consume(t, tr, ctx, participantQueue, 1)
	items, bundle := bundleOf("bundle-requeue", 3)
	publishAll(t, tr, bundle)
	got := receiveItems(t, ch, items, false)
	ack(t, got[0])
	if err := got[1].Requeue(); err != nil {
		t.Fatalf("Requeue item 1: %v", err)
	}
	if err := got[2].Ack(); err != nil {
		t.Fatalf("Ack of the last item, which requeues the bundle: %v", err)
	}
	// Every item comes again, the acknowledged ones too: consumers deduplicate.
	for _, d := range receiveItems(t, ch, items, true) {
		ack(t, d)
	}
	requireNext(t, tr, ch, "bundle-requeue-sentinel")
}

func testMalformedBundleArrivesWhole(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tr := setup(t, newTransport)
	ctx := timeout(t)
	ch := consume(t, tr, ctx, participantQueue, 1)
	bad := command("bundle-malformed")
	bad.Type = protocol.TypeBundle
	bad.Body = []byte(`{"items":"not a list"}`)
	publishAll(t, tr, bad)
	d := receiveID(t, ch, "bundle-malformed")
	if d.Type != protocol.TypeBundle || string(d.Body) != string(bad.Body) {
		t.Errorf("malformed bundle arrived as %+v, want it whole", d.Message)
	}
	ack(t, d)
	requireNext(t, tr, ch, "bundle-malformed-sentinel")
}
