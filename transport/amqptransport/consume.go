package amqptransport

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// errAlreadySettled is returned when a delivery is settled twice. Sending the second
// acknowledgement would make the broker close the channel, and with it every other delivery
// in flight on it.
var errAlreadySettled = errors.New("delivery already settled")

// Consume consumes queue with at most prefetch unacknowledged deliveries (1 to 65535). It returns
// once the broker has registered the consumer, or an error when it cannot, for instance because
// the queue does not exist. After the consuming connection or channel is lost, a goroutine owned
// by the transport subscribes again on a new channel, with backoff; deliveries from before are
// then stale. The returned channel is closed when ctx ends or the transport closes. After ctx
// ends, deliveries already received can still be settled until the transport closes; the
// broker requeues those left unsettled.
func (t *Transport) Consume(ctx context.Context, queue string, prefetch int) (<-chan *transport.Delivery, error) {
	switch {
	case queue == "":
		return nil, errors.New("consume: the queue name is empty")
	case prefetch < 1 || prefetch > 65535:
		return nil, fmt.Errorf("consume %q: prefetch %d must be between 1 and 65535", queue, prefetch)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("consume %q: %w", queue, err)
	}
	sub, err := t.subscribe(ctx, queue, prefetch, 1)
	if err != nil {
		return nil, err
	}
	// The hand-off is buffered up to the prefetch (the most the broker sends unacknowledged), so
	// a consumer that applies deliveries in batches finds every delivery that has arrived, not
	// one at a time. Deliveries left in the buffer when ctx ends are taken back (see reclaim).
	out := make(chan *transport.Delivery, prefetch)
	if !t.goTracked(func() { t.consumeLoop(ctx, sub, out) }) {
		sub.retire()
		return nil, ErrClosed
	}
	return out, nil
}

// subscription is one consumer on one channel. Deliveries are bound to it: once it is retired
// or its channel closed, settling them returns transport.ErrStale.
type subscription struct {
	t          *Transport
	queue      string
	prefetch   int
	gen        uint64 // 1 for the first subscription of a Consume call, then one more per resubscription
	sess       *session
	ch         *amqp.Channel
	tag        string
	deliveries <-chan amqp.Delivery
	closes     chan *amqp.Error
	// deadLetter dead-letters the rejected items of a bundle (deadLetterFrom).
	deadLetter func([]protocol.Message) error

	stale atomic.Bool

	mu          sync.Mutex
	outstanding int           // deliveries handed out and not settled
	idle        chan struct{} // signalled when outstanding drops to zero
}

// subscribe opens a channel on the consuming connection and starts consuming queue on it.
func (t *Transport) subscribe(ctx context.Context, queue string, prefetch int, gen uint64) (*subscription, error) {
	ctx, cancel := t.untilClosed(ctx)
	defer cancel()
	s, err := t.consumer.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("consume %q: %w", queue, err)
	}
	// The RPCs below do not observe ctx. They are not interrupted by killing the connection, as
	// publishing does, because the consuming connection is shared by every consumer; on a dead
	// link they end when the heartbeat timeout closes it, and Close ends them at once.
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("consume %q: open channel: %w", queue, err)
	}
	sub := &subscription{
		t:        t,
		queue:    queue,
		prefetch: prefetch,
		gen:      gen,
		sess:     s,
		ch:       ch,
		tag:      t.consumerTag(queue),
		closes:   ch.NotifyClose(make(chan *amqp.Error, 1)),
		idle:     make(chan struct{}, 1),
	}
	sub.deadLetter = t.deadLetterFrom(queue)
	if err := ch.Qos(prefetch, 0, false); err != nil {
		sub.retire()
		return nil, fmt.Errorf("consume %q: set prefetch %d: %w", queue, prefetch, err)
	}
	sub.deliveries, err = ch.Consume(queue, sub.tag, false, false, false, false, nil)
	if err != nil {
		sub.retire()
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
			return nil, fmt.Errorf("consume %q: the queue does not exist; declare it first (DeclareTopology, DeclareParticipant): %w", queue, err)
		}
		return nil, fmt.Errorf("consume %q: %w", queue, err)
	}
	return sub, nil
}

// consumerTag returns a tag unique within the transport that names the process and the queue
// in the management UI, within AMQP's 255-byte limit.
func (t *Transport) consumerTag(queue string) string {
	n := t.consumerSeq.Add(1)
	if tag := fmt.Sprintf("%s %s #%d", t.cfg.ConnectionName, queue, n); len(tag) <= maxNameBytes {
		return tag
	}
	return fmt.Sprintf("sagacoord #%d", n)
}

// retire makes the subscription's deliveries stale and closes its channel; the broker requeues
// what was not settled.
func (sub *subscription) retire() {
	sub.stale.Store(true)
	if !sub.ch.IsClosed() {
		_ = sub.ch.Close()
	}
}

// closeReason says why the deliveries channel of sub closed.
func (sub *subscription) closeReason() error {
	if !sub.ch.IsClosed() {
		return errors.New("consumer cancelled by the broker (was the queue deleted?)")
	}
	select {
	case e, ok := <-sub.closes:
		if ok && e != nil {
			return e
		}
	default:
	}
	return amqp.ErrClosed
}

func (sub *subscription) hold() {
	sub.mu.Lock()
	sub.outstanding++
	sub.mu.Unlock()
}

func (sub *subscription) release() {
	sub.mu.Lock()
	sub.outstanding--
	n := sub.outstanding
	sub.mu.Unlock()
	if n == 0 {
		select {
		case sub.idle <- struct{}{}:
		default:
		}
	}
}

func (sub *subscription) busy() bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.outstanding > 0
}

type stopReason int

const (
	stopLost stopReason = iota
	stopCtx
	stopClosing
)

// consumeLoop forwards deliveries to out and resubscribes after every loss until ctx ends or
// the transport closes.
func (t *Transport) consumeLoop(ctx context.Context, sub *subscription, out chan *transport.Delivery) {
	outOpen := true
	defer func() {
		if outOpen {
			close(out)
		}
	}()
	log := t.log.With("queue", sub.queue)
	for {
		switch t.pump(ctx, sub, out) {
		case stopClosing:
			sub.retire()
			return
		case stopCtx:
			reclaim(out)
			close(out)
			outOpen = false
			t.drain(sub)
			return
		case stopLost:
			log.Warn("consumer lost; subscribing again", "subscription", sub.gen, "error", sub.closeReason())
			sub.retire()
		}
		next, ok := t.resubscribe(ctx, sub)
		if !ok {
			return
		}
		log.Info("consumer subscribed again", "subscription", next.gen, "connection_generation", next.sess.gen)
		sub = next
	}
}

// resubscribe subscribes to sub's queue again, waiting with backoff before each attempt. It
// returns false when ctx ends or the transport closes first.
func (t *Transport) resubscribe(ctx context.Context, sub *subscription) (*subscription, bool) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for attempt := 1; ; attempt++ {
		// Wait even before the first attempt, so a consumer the broker cancels right after each
		// subscription cannot spin.
		timer.Reset(backoff(t.cfg, attempt))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, false
		case <-t.closing:
			return nil, false
		}
		next, err := t.subscribe(ctx, sub.queue, sub.prefetch, sub.gen+1)
		if err == nil {
			return next, true
		}
		if ctx.Err() != nil || t.isClosed() {
			return nil, false
		}
		t.log.Warn("subscribe failed; will retry", "queue", sub.queue, "attempt", attempt, "error", err)
	}
}

// pump hands deliveries to out until the subscription is lost, ctx ends or the transport closes.
func (t *Transport) pump(ctx context.Context, sub *subscription, out chan<- *transport.Delivery) stopReason {
	for {
		select {
		case d, ok := <-sub.deliveries:
			if !ok {
				return stopLost
			}
			if ctx.Err() != nil {
				return stopCtx // not handed out: the broker requeues it when the channel closes
			}
			sub.hold() // before the hand-off, so a settlement cannot run ahead of the count
			if stop, ok := t.handOut(ctx, sub, d, out); !ok {
				return stop
			}
		case <-ctx.Done():
			return stopCtx
		case <-t.closing:
			return stopClosing
		}
	}
}

// handOut hands d to out: the messages it carries when it is a bundle, one by one. It reports
// false, and why, when ctx ended or the transport closed first.
func (t *Transport) handOut(ctx context.Context, sub *subscription, d amqp.Delivery, out chan<- *transport.Delivery) (stopReason, bool) {
	items := transport.Unbundle(toDelivery(d, &acknowledger{sub: sub, tag: d.DeliveryTag}), sub.deadLetter)
	for k, item := range items {
		select {
		case out <- item:
			continue
		case <-ctx.Done():
			unsent(sub, items, k)
			return stopCtx, false
		case <-t.closing:
			unsent(sub, items, k)
			return stopClosing, false
		}
	}
	return 0, true
}

// unsent settles the items of a delivery from the k-th on, which were never handed out. A
// delivery that is not a bundle only leaves the count: the broker requeues it when the channel
// closes. The rest of a bundle is requeued, which requeues the bundle once the items handed out
// are settled.
func unsent(sub *subscription, items []*transport.Delivery, k int) {
	if _, plain := items[0].Acknowledger.(*acknowledger); plain {
		sub.release()
		return
	}
	for _, item := range items[k:] {
		_ = item.Requeue()
	}
}

// deadLetterFrom returns how the rejected items of a bundle from queue are dead-lettered: each
// published alone to the dead-letter exchange, with headers that say where it came from, as the
// broker's own dead-lettering does with x-death.
func (t *Transport) deadLetterFrom(queue string) func([]protocol.Message) error {
	return func(msgs []protocol.Message) error {
		out := make([]transport.Outgoing, len(msgs))
		for i, m := range msgs {
			h := make(map[string]string, len(m.Headers)+2)
			maps.Copy(h, m.Headers)
			h[protocol.HeaderDeadQueue], h[protocol.HeaderDeadReason] = queue, "rejected"
			m.Headers = h
			out[i] = transport.Outgoing{Exchange: protocol.ExchangeDead, RoutingKey: queue, Message: m}
		}
		ctx, cancel := context.WithTimeout(context.Background(), deadLetterTimeout)
		defer cancel()
		return errors.Join(t.Publish(ctx, out)...)
	}
}

// deadLetterTimeout bounds the publish of a bundle's rejected items; past it the bundle is
// requeued, and its items come again.
const deadLetterTimeout = 30 * time.Second

// reclaim takes back the deliveries still buffered in out, which the consumer never received,
// so that drain does not wait for them to be settled: the broker requeues them when the channel
// closes, as if they had never been handed out.
func reclaim(out chan *transport.Delivery) {
	for {
		select {
		case d := <-out:
			if a, ok := d.Acknowledger.(*acknowledger); !ok {
				_ = d.Requeue() // an item of a bundle: requeues the bundle once the others are settled
			} else if a.settled.CompareAndSwap(false, true) {
				a.sub.release()
			}
		default:
			return
		}
	}
}

// drain stops the consumer and keeps its channel open until every delivery handed out has been
// settled (or the channel or transport closes), so work in progress when ctx ended can still
// be acknowledged.
func (t *Transport) drain(sub *subscription) {
	if !sub.ch.IsClosed() {
		_ = sub.ch.Cancel(sub.tag, false)
	}
	for sub.busy() && !sub.ch.IsClosed() {
		select {
		case <-sub.idle:
		case <-sub.closes: // receives the close reason or is closed: the channel is gone
		case <-t.closing:
			sub.retire()
			return
		}
	}
	sub.retire()
}

// acknowledger settles one delivery on the channel it arrived on, and nowhere else.
type acknowledger struct {
	sub     *subscription
	tag     uint64
	settled atomic.Bool
}

// Ack acknowledges the delivery. It returns an error wrapping transport.ErrStale, and sends
// nothing, when the delivery's channel is gone.
func (a *acknowledger) Ack() error {
	return a.settle("ack", func() error { return a.sub.ch.Ack(a.tag, false) })
}

// Reject nacks the delivery without requeueing, so the queue dead-letters it. Stale as Ack.
func (a *acknowledger) Reject() error {
	return a.settle("reject", func() error { return a.sub.ch.Nack(a.tag, false, false) })
}

// Requeue nacks the delivery with requeue, returning it to its queue. Stale as Ack.
func (a *acknowledger) Requeue() error {
	return a.settle("requeue", func() error { return a.sub.ch.Nack(a.tag, false, true) })
}

func (a *acknowledger) settle(op string, send func() error) error {
	sub := a.sub
	if sub.stale.Load() || sub.ch.IsClosed() {
		return fmt.Errorf("%s delivery %d from queue %q (subscription %d): %w", op, a.tag, sub.queue, sub.gen, transport.ErrStale)
	}
	if !a.settled.CompareAndSwap(false, true) {
		return fmt.Errorf("%s delivery %d from queue %q: %w", op, a.tag, sub.queue, errAlreadySettled)
	}
	defer sub.release()
	if err := send(); err != nil {
		if errors.Is(err, amqp.ErrClosed) || sub.ch.IsClosed() {
			return fmt.Errorf("%s delivery %d from queue %q (subscription %d): %w (%w)", op, a.tag, sub.queue, sub.gen, transport.ErrStale, err)
		}
		return fmt.Errorf("%s delivery %d from queue %q: %w", op, a.tag, sub.queue, err)
	}
	return nil
}

// toDelivery converts an AMQP delivery. It accepts any headers a foreign publisher may send.
func toDelivery(d amqp.Delivery, ack transport.Acknowledger) *transport.Delivery {
	return &transport.Delivery{
		Message: protocol.Message{
			MessageID:     d.MessageId,
			Type:          d.Type,
			ContentType:   d.ContentType,
			CorrelationID: d.CorrelationId,
			Headers:       headersFromTable(d.Headers),
			Body:          d.Body,
		},
		Redelivered:  d.Redelivered,
		Acknowledger: ack,
	}
}

// headersFromTable converts AMQP headers to strings: strings as they are, byte arrays as their
// bytes, nil as "", anything else (numbers, booleans, timestamps, the tables and arrays of
// x-death) in fmt.Sprint's format. An empty table gives nil.
func headersFromTable(tbl amqp.Table) map[string]string {
	if len(tbl) == 0 {
		return nil
	}
	h := make(map[string]string, len(tbl))
	for k, v := range tbl {
		switch v := v.(type) {
		case string:
			h[k] = v
		case []byte:
			h[k] = string(v)
		case nil:
			h[k] = ""
		default:
			h[k] = fmt.Sprint(v)
		}
	}
	return h
}
