package transporttest

import (
	"context"
	"testing"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

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
