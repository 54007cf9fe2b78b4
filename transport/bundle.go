package transport

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sagacoord/sagacoord/protocol"
)

// Bundles (docs/protocol.md §16): a publisher may carry several messages for the same exchange and
// routing key in one broker message, so that the broker stores, confirms and delivers one message
// instead of many. Every consumer reads bundles (Unbundle); publishers make them only when told
// (the transports' Bundle settings), once every consumer of their messages runs a version that
// reads them.

// Bundle groups msgs by exchange and routing key into bundles of at most protocol.MaxBundleItems
// items and about protocol.MaxBundleBytes of bodies. It returns the messages to publish and, for
// each, the indexes in msgs of the messages it carries: a message that travels alone (the only
// one for its queue, or one that protocol.Bundleable refuses) keeps its own form.
func Bundle(msgs []Outgoing) (out []Outgoing, carries [][]int) {
	type dest struct{ exchange, key string }
	open := map[dest]int{} // the bundle still filling for a destination: its index in groups
	var groups [][]int
	var sizes []int
	for i := range msgs {
		m := &msgs[i]
		// Dead letters travel alone, so that each can be inspected and replayed by itself.
		if !protocol.Bundleable(m.Message) || m.Exchange == protocol.ExchangeDead {
			groups, sizes = append(groups, []int{i}), append(sizes, 0)
			continue
		}
		d := dest{m.Exchange, m.RoutingKey}
		g, ok := open[d]
		if ok && (len(groups[g]) == protocol.MaxBundleItems || sizes[g]+len(m.Body) > protocol.MaxBundleBytes) {
			ok = false
		}
		if !ok {
			open[d] = len(groups)
			groups, sizes = append(groups, []int{i}), append(sizes, len(m.Body))
			continue
		}
		groups[g] = append(groups[g], i)
		sizes[g] += len(m.Body)
	}
	out = make([]Outgoing, len(groups))
	for g, idx := range groups {
		first := msgs[idx[0]]
		if len(idx) == 1 {
			out[g] = first
			continue
		}
		items := make([]protocol.Message, len(idx))
		for k, i := range idx {
			items[k] = msgs[i].Message
		}
		out[g] = Outgoing{Exchange: first.Exchange, RoutingKey: first.RoutingKey, Message: protocol.EncodeBundle(items)}
	}
	return out, groups
}

// Unbundle returns the deliveries that d carries: d itself unless it is a bundle, and d itself
// too when the bundle is malformed (its consumer dead-letters it as any unknown message). The
// items of a bundle share d's settlement: once every item is settled, d is requeued if any item
// was, else acknowledged, after the items that were rejected went to deadLetter (d is
// requeued when that fails), so that a rejected item is dead-lettered alone and the others are
// not held back with it. An item acknowledged before another was requeued comes again, which the
// protocol allows: every consumer deduplicates.
func Unbundle(d *Delivery, deadLetter func([]protocol.Message) error) []*Delivery {
	if d.Type != protocol.TypeBundle {
		return []*Delivery{d}
	}
	items, err := protocol.DecodeBundle(d.Message)
	if err != nil {
		return []*Delivery{d}
	}
	shared := &bundleAck{parent: d.Acknowledger, left: len(items), deadLetter: deadLetter, items: items}
	out := make([]*Delivery, len(items))
	for i, m := range items {
		out[i] = &Delivery{Message: m, Redelivered: d.Redelivered, Acknowledger: &itemAck{b: shared, i: i}}
	}
	return out
}

// InBundle reports whether d arrived in a bundle (Unbundle handed it out as an item).
func InBundle(d *Delivery) bool {
	_, ok := d.Acknowledger.(*itemAck)
	return ok
}

// bundleAck settles a bundle once all its items are settled.
type bundleAck struct {
	parent     Acknowledger
	deadLetter func([]protocol.Message) error
	items      []protocol.Message

	mu       sync.Mutex
	left     int
	requeue  bool
	rejected []int
}

// ErrItemSettled is returned when an item of a bundle is settled twice.
var ErrItemSettled = errors.New("bundle item already settled")

// itemAck settles one item of a bundle.
type itemAck struct {
	b       *bundleAck
	i       int
	settled atomic.Bool
}

func (a *itemAck) Ack() error     { return a.settle(false, false) }
func (a *itemAck) Reject() error  { return a.settle(true, false) }
func (a *itemAck) Requeue() error { return a.settle(false, true) }

// settle records the item's settlement; the last one settles the bundle and returns its error.
func (a *itemAck) settle(reject, requeue bool) error {
	if !a.settled.CompareAndSwap(false, true) {
		return ErrItemSettled
	}
	b := a.b
	b.mu.Lock()
	b.left--
	b.requeue = b.requeue || requeue
	if reject {
		b.rejected = append(b.rejected, a.i)
	}
	last := b.left == 0
	b.mu.Unlock()
	if !last {
		return nil
	}
	return b.finish()
}

// finish settles the bundle once its items are.
func (b *bundleAck) finish() error {
	if b.requeue || len(b.rejected) == 0 {
		if b.requeue {
			return b.parent.Requeue()
		}
		return b.parent.Ack()
	}
	dead := make([]protocol.Message, len(b.rejected))
	for k, i := range b.rejected {
		dead[k] = b.items[i]
	}
	if err := b.deadLetter(dead); err != nil {
		if rerr := b.parent.Requeue(); rerr != nil {
			return errors.Join(fmt.Errorf("dead-letter %d items of a bundle: %w", len(dead), err), rerr)
		}
		return fmt.Errorf("dead-letter %d items of a bundle; the bundle was requeued: %w", len(dead), err)
	}
	return b.parent.Ack()
}
