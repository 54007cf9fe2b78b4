package amqptransport

import (
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// TestBundlePublishesOneMessagePerQueue: with Config.Bundle, the messages of one Publish call for
// one queue reach the broker as one message, and a consumer receives each of them.
func TestBundlePublishesOneMessagePerQueue(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	tr := newTransport(t, Config{URL: url, Bundle: true})
	ctx := t.Context()
	if err := tr.DeclareTopology(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bundle-a", "bundle-b"} {
		if err := tr.DeclareParticipant(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	var msgs []transport.Outgoing
	for i := range 5 {
		msgs = append(msgs, transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: "bundle-a",
			Message: protocol.Message{MessageID: fmt.Sprint("a-", i), Type: protocol.TypeSagaAction, Body: []byte(`{"i":` + fmt.Sprint(i) + `}`)}})
	}
	msgs = append(msgs, transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: "bundle-b",
		Message: protocol.Message{MessageID: "b-0", Type: protocol.TypeSagaAction, Body: []byte(`{}`)}})
	for i, err := range tr.Publish(ctx, msgs) {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if n := brokerCount(t, url, protocol.ParticipantQueue("bundle-a")); n != 1 {
		t.Fatalf("queue of bundle-a holds %d messages, want 1 bundle", n)
	}
	if n := brokerCount(t, url, protocol.ParticipantQueue("bundle-b")); n != 1 {
		t.Fatalf("queue of bundle-b holds %d messages, want 1", n)
	}
	ch, err := tr.Consume(ctx, protocol.ParticipantQueue("bundle-a"), 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		select {
		case d := <-ch:
			if d.MessageID != fmt.Sprint("a-", i) || string(d.Body) != string(msgs[i].Body) {
				t.Fatalf("delivery %d: %+v, want message a-%d", i, d.Message, i)
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("item %d not delivered", i)
		}
	}
	// Closed, the transport's unacknowledged messages return to their queue: none does, as the
	// bundle was acknowledged with its last item.
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if n := brokerCount(t, url, protocol.ParticipantQueue("bundle-a")); n != 0 {
		t.Fatalf("queue of bundle-a holds %d messages after its items were acknowledged, want 0", n)
	}
}

// brokerCount returns the messages ready in queue, as the broker counts them.
func brokerCount(t *testing.T, url, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}
