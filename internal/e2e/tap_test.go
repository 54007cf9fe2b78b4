package e2e_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sagacoord/sagacoord/transport"
)

// tapTransport wraps a participant's transport. It records every delivery and how it was settled,
// and every message it published, by message id, and it can hold back deliveries before the worker sees them, which is a message
// delayed in transit: unlike a handler that blocks, a held delivery has not reached the barrier.
type tapTransport struct {
	transport.Transport

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every event
	hold      func(*transport.Delivery) bool
	held      []*transport.Delivery
	releases  chan struct{} // signals the forwarding goroutine to forward what is held
	delivered map[string]int
	settled   map[string][]string // message id -> "ack", "reject", "requeue" in order
	published map[string]int
	bundled   int // deliveries that arrived in a bundle
}

func newTap(inner transport.Transport, hold func(*transport.Delivery) bool) *tapTransport {
	return &tapTransport{
		Transport: inner,
		changed:   make(chan struct{}),
		hold:      hold,
		releases:  make(chan struct{}, 1),
		delivered: map[string]int{},
		settled:   map[string][]string{},
		published: map[string]int{},
	}
}

// Publish publishes through the inner transport, recording what it is asked to publish.
func (t *tapTransport) Publish(ctx context.Context, msgs []transport.Outgoing) []error {
	t.mu.Lock()
	for _, m := range msgs {
		t.published[m.MessageID]++
	}
	t.mu.Unlock()
	return t.Transport.Publish(ctx, msgs)
}

// publishedCount returns how many times a message with id was given to Publish.
func (t *tapTransport) publishedCount(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.published[id]
}

func (t *tapTransport) notifyLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// Consume forwards the inner deliveries, recording them and holding back those hold matches.
// Held deliveries are left unsettled: the broker requeues them when the connection closes.
func (t *tapTransport) Consume(ctx context.Context, queue string, prefetch int) (<-chan *transport.Delivery, error) {
	in, err := t.Transport.Consume(ctx, queue, prefetch)
	if err != nil {
		return nil, err
	}
	out := make(chan *transport.Delivery)
	go func() {
		defer close(out)
		var queued []*transport.Delivery
		for {
			var send chan<- *transport.Delivery
			var next *transport.Delivery
			if len(queued) > 0 {
				send, next = out, queued[0]
			}
			select {
			case d, ok := <-in:
				if !ok {
					return
				}
				d = t.record(d)
				t.mu.Lock()
				if t.hold != nil && t.hold(d) {
					t.held = append(t.held, d)
					t.notifyLocked()
					t.mu.Unlock()
					continue
				}
				t.mu.Unlock()
				queued = append(queued, d)
			case send <- next:
				queued = queued[1:]
			case <-t.releases:
				t.mu.Lock()
				queued = append(queued, t.held...)
				t.held = nil
				t.mu.Unlock()
			}
		}
	}()
	return out, nil
}

func (t *tapTransport) record(d *transport.Delivery) *transport.Delivery {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.delivered[d.MessageID]++
	if transport.InBundle(d) {
		t.bundled++
	}
	t.notifyLocked()
	c := *d
	c.Acknowledger = &tapAck{inner: d.Acknowledger, tap: t, id: d.MessageID}
	return &c
}

// setHold replaces the hold predicate for deliveries still to come.
func (t *tapTransport) setHold(f func(*transport.Delivery) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hold = f
}

// releaseHeld stops holding and hands every held delivery to the worker.
func (t *tapTransport) releaseHeld() {
	t.mu.Lock()
	t.hold = nil
	t.mu.Unlock()
	select {
	case t.releases <- struct{}{}:
	default:
	}
}

// heldIDs returns the message ids held back now.
func (t *tapTransport) heldIDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := make([]string, len(t.held))
	for i, d := range t.held {
		ids[i] = d.MessageID
	}
	return ids
}

// deliveries returns how often each message id was delivered.
func (t *tapTransport) deliveries() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.delivered))
	for k, v := range t.delivered {
		out[k] = v
	}
	return out
}

// settlements returns how the deliveries of a message id were settled, in order.
func (t *tapTransport) settlements(id string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.settled[id]...)
}

// await waits until cond, evaluated under the tap's lock, holds.
func (t *tapTransport) await(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		ok, ch := cond(), t.changed
		t.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("tap: %s: not within %s (delivered %v, held %v)", what, timeout, t.deliveries(), t.heldIDs())
		}
	}
}

// awaitSettled waits until n deliveries of message id were settled with op.
func (t *tapTransport) awaitSettled(tb testing.TB, id, op string, n int, timeout time.Duration) {
	tb.Helper()
	t.await(tb, timeout, fmt.Sprintf("%d %s of %s", n, op, id), func() bool {
		c := 0
		for _, o := range t.settled[id] {
			if o == op {
				c++
			}
		}
		return c >= n
	})
}

// awaitHeld waits until n deliveries are held.
func (t *tapTransport) awaitHeld(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	t.await(tb, timeout, fmt.Sprintf("%d held", n), func() bool { return len(t.held) >= n })
}

type tapAck struct {
	inner transport.Acknowledger
	tap   *tapTransport
	id    string
}

func (a *tapAck) done(op string, err error) error {
	if err == nil {
		a.tap.mu.Lock()
		a.tap.settled[a.id] = append(a.tap.settled[a.id], op)
		a.tap.notifyLocked()
		a.tap.mu.Unlock()
	}
	return err
}

func (a *tapAck) Ack() error     { return a.done("ack", a.inner.Ack()) }
func (a *tapAck) Reject() error  { return a.done("reject", a.inner.Reject()) }
func (a *tapAck) Requeue() error { return a.done("requeue", a.inner.Requeue()) }
