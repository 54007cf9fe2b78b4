package transport_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

func out(exchange, key, id string, body string) transport.Outgoing {
	return transport.Outgoing{Exchange: exchange, RoutingKey: key, Message: protocol.Message{MessageID: id, Type: protocol.TypeReply, Body: []byte(body)}}
}

func TestBundleGroupsByQueue(t *testing.T) {
	big := `"` + strings.Repeat("x", protocol.MaxBundleBytes/2) + `"`
	msgs := []transport.Outgoing{
		out(protocol.ExchangeCommands, "a", "a1", `{}`),
		out(protocol.ExchangeCommands, "b", "b1", `{}`),
		out(protocol.ExchangeCommands, "a", "a2", `{}`),
		out(protocol.ExchangeDead, "q", "d1", `{}`), // dead letters travel alone
		out(protocol.ExchangeDead, "q", "d2", `{}`), // dead letters travel alone
		out(protocol.ExchangeCommands, "a", "raw", `not json`),
		out(protocol.ExchangeCommands, "c", "c1", big),
		out(protocol.ExchangeCommands, "c", "c2", big), // would pass MaxBundleBytes with c1
		out(protocol.ExchangeCommands, "a", "a3", `[1]`),
	}
	got, carries := transport.Bundle(msgs)
	want := [][]int{{0, 2, 8}, {1}, {3}, {4}, {5}, {6}, {7}}
	if fmt.Sprint(carries) != fmt.Sprint(want) {
		t.Fatalf("carries %v, want %v", carries, want)
	}
	if got[0].Type != protocol.TypeBundle || got[0].Exchange != protocol.ExchangeCommands || got[0].RoutingKey != "a" {
		t.Fatalf("first message %+v is not the bundle for queue a", got[0])
	}
	items, err := protocol.DecodeBundle(got[0].Message)
	if err != nil || len(items) != 3 || items[0].MessageID != "a1" || items[2].MessageID != "a3" {
		t.Fatalf("bundle for a carries %+v (%v)", items, err)
	}
	for g := 1; g < len(got); g++ {
		if got[g].MessageID != msgs[carries[g][0]].MessageID || got[g].Type == protocol.TypeBundle {
			t.Errorf("message %d: %+v, want message %d alone", g, got[g].Message, carries[g][0])
		}
	}
}

func TestBundleHoldsAtMostMaxItems(t *testing.T) {
	msgs := make([]transport.Outgoing, protocol.MaxBundleItems+1)
	for i := range msgs {
		msgs[i] = out(protocol.ExchangeReplies, protocol.RoutingKeyReplies, fmt.Sprint(i), `{}`)
	}
	_, carries := transport.Bundle(msgs)
	if len(carries) != 2 || len(carries[0]) != protocol.MaxBundleItems || len(carries[1]) != 1 {
		t.Fatalf("bundles of %d messages: %d bundles, want %d and 1", len(msgs), len(carries), protocol.MaxBundleItems)
	}
}

// parent records how a bundle was settled.
type parent struct {
	settled []string
	err     error
}

func (p *parent) Ack() error     { p.settled = append(p.settled, "ack"); return p.err }
func (p *parent) Reject() error  { p.settled = append(p.settled, "reject"); return p.err }
func (p *parent) Requeue() error { p.settled = append(p.settled, "requeue"); return p.err }

func bundleDelivery(p *parent, n int) *transport.Delivery {
	msgs := make([]protocol.Message, n)
	for i := range msgs {
		msgs[i] = protocol.Message{MessageID: fmt.Sprint("m", i), Type: protocol.TypeReply, Body: []byte(`{}`)}
	}
	return &transport.Delivery{Message: protocol.EncodeBundle(msgs), Redelivered: true, Acknowledger: p}
}

func TestUnbundleSettlesTheBundleOnceEveryItemIs(t *testing.T) {
	noDead := func([]protocol.Message) error { t.Fatal("nothing was rejected"); return nil }
	cases := map[string]struct {
		settle []string // per item: ack, reject or requeue
		dead   error
		want   []string
		dlq    []string
	}{
		"all acked":          {settle: []string{"ack", "ack", "ack"}, want: []string{"ack"}},
		"one requeued":       {settle: []string{"ack", "requeue", "ack"}, want: []string{"requeue"}},
		"one rejected":       {settle: []string{"ack", "reject", "ack"}, want: []string{"ack"}, dlq: []string{"m1"}},
		"rejected, requeued": {settle: []string{"reject", "requeue", "ack"}, want: []string{"requeue"}},
		"dead letter fails":  {settle: []string{"reject", "ack", "ack"}, dead: errors.New("broker gone"), want: []string{"requeue"}, dlq: []string{"m0"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := &parent{}
			var dlq []string
			dead := func(ms []protocol.Message) error {
				for _, m := range ms {
					dlq = append(dlq, m.MessageID)
				}
				return tc.dead
			}
			if tc.dlq == nil && tc.dead == nil {
				dead = noDead
			}
			items := transport.Unbundle(bundleDelivery(p, len(tc.settle)), dead)
			if len(items) != len(tc.settle) {
				t.Fatalf("%d items, want %d", len(items), len(tc.settle))
			}
			for i, how := range tc.settle {
				if !items[i].Redelivered || items[i].MessageID != fmt.Sprint("m", i) {
					t.Fatalf("item %d: %+v, want m%d flagged redelivered as its bundle", i, items[i], i)
				}
				if len(p.settled) != 0 {
					t.Fatalf("bundle settled (%v) before its item %d", p.settled, i)
				}
				var err error
				switch how {
				case "ack":
					err = items[i].Ack()
				case "reject":
					err = items[i].Reject()
				case "requeue":
					err = items[i].Requeue()
				}
				if err != nil && tc.dead == nil {
					t.Fatalf("%s item %d: %v", how, i, err)
				}
			}
			if !slices.Equal(p.settled, tc.want) || !slices.Equal(dlq, tc.dlq) {
				t.Fatalf("bundle settled %v with dead letters %v, want %v and %v", p.settled, dlq, tc.want, tc.dlq)
			}
			if err := items[0].Ack(); !errors.Is(err, transport.ErrItemSettled) {
				t.Fatalf("second settlement of an item: %v, want ErrItemSettled", err)
			}
		})
	}
}

func TestUnbundleLeavesOtherMessagesWhole(t *testing.T) {
	p := &parent{}
	plain := &transport.Delivery{Message: protocol.Message{Type: protocol.TypeReply, Body: []byte(`{}`)}, Acknowledger: p}
	bad := &transport.Delivery{Message: protocol.Message{Type: protocol.TypeBundle, Body: []byte(`{`)}, Acknowledger: p}
	for _, d := range []*transport.Delivery{plain, bad} {
		if got := transport.Unbundle(d, nil); len(got) != 1 || got[0] != d {
			t.Errorf("Unbundle(%s) = %v, want the delivery itself", d.Type, got)
		}
	}
}
