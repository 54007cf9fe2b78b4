package transport_test

import (
	"testing"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

func TestTakeWaiting(t *testing.T) {
	ch := make(chan *transport.Delivery, 8)
	for i := range 5 {
		ch <- &transport.Delivery{Message: protocol.Message{MessageID: string(rune('a' + i))}}
	}
	first := &transport.Delivery{Message: protocol.Message{MessageID: "first"}}

	got := transport.TakeWaiting(ch, []*transport.Delivery{first}, 3)
	if len(got) != 3 || got[0] != first || got[1].MessageID != "a" || got[2].MessageID != "b" {
		t.Fatalf("TakeWaiting took %d deliveries, want first, a, b", len(got))
	}
	if len(ch) != 3 {
		t.Fatalf("%d deliveries left waiting, want 3: it takes no more than max", len(ch))
	}

	got = transport.TakeWaiting(ch, nil, 10)
	if len(got) != 3 {
		t.Fatalf("TakeWaiting took %d of the 3 waiting, want all of them without waiting for more", len(got))
	}

	close(ch)
	if got := transport.TakeWaiting(ch, nil, 10); len(got) != 0 {
		t.Fatalf("TakeWaiting took %d from a closed, empty channel", len(got))
	}
}
