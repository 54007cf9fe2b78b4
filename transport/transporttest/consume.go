package transporttest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

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
