package memtransport_test

import (
	"errors"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/memtransport"
	"github.com/sagacoord/sagacoord/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	var mu sync.Mutex
	brokers := map[*testing.T]*memtransport.Broker{}
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		mu.Lock()
		b, ok := brokers[t]
		if !ok {
			b = memtransport.NewBroker()
			brokers[t] = b
		}
		mu.Unlock()
		tr := memtransport.New(b)
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	})
}

func TestRoutingAndDepth(t *testing.T) {
	t.Parallel()
	b := memtransport.NewBroker()
	tr := memtransport.New(b)
	t.Cleanup(func() { _ = tr.Close() })
	ctx := t.Context()
	if err := tr.DeclareParticipant(ctx, "bank"); err != nil {
		t.Fatalf("DeclareParticipant: %v", err)
	}
	queue := protocol.ParticipantQueue("bank")
	msgs := []transport.Outgoing{
		{Exchange: protocol.ExchangeCommands, RoutingKey: "bank", Message: protocol.Message{MessageID: "direct"}},
		{Exchange: "", RoutingKey: queue, Message: protocol.Message{MessageID: "default-exchange"}},
		{Exchange: protocol.ExchangeDead, RoutingKey: "anything", Message: protocol.Message{MessageID: "fanout"}},
		{Exchange: "no.such.exchange", RoutingKey: "bank", Message: protocol.Message{MessageID: "lost"}},
	}
	errs := tr.Publish(ctx, msgs)
	for i, err := range errs[:3] {
		if err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
	if errs[3] == nil || errors.Is(errs[3], transport.ErrReturned) {
		t.Errorf("publish to an undeclared exchange: got %v, want a not-found error", errs[3])
	}
	if ready, unacked := b.Depth(queue); ready != 2 || unacked != 0 {
		t.Fatalf("Depth(%s) = %d ready, %d unacked; want 2, 0", queue, ready, unacked)
	}
	if ready, _ := b.Depth(protocol.QueueDead); ready != 1 {
		t.Fatalf("fanout to the dead exchange reached %d messages, want 1", ready)
	}
	ch, err := tr.Consume(ctx, queue, 1)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	d := <-ch
	if ready, unacked := b.Depth(queue); ready != 1 || unacked != 1 {
		t.Fatalf("after one delivery Depth = %d ready, %d unacked; want 1, 1", ready, unacked)
	}
	// The consumer's copy is its own.
	d.Body = append(d.Body, 'x')
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if d := <-ch; d.MessageID != "default-exchange" {
		t.Fatalf("second delivery %s, want default-exchange", d.MessageID)
	} else if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if ready, unacked := b.Depth(queue); ready != 0 || unacked != 0 {
		t.Fatalf("drained queue Depth = %d, %d", ready, unacked)
	}
	if ready, unacked := b.Depth("missing"); ready != 0 || unacked != 0 {
		t.Fatalf("Depth of a missing queue = %d, %d", ready, unacked)
	}
}
