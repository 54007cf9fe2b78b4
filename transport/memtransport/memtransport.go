// Package memtransport is an in-memory transport.Transport for fast unit tests of engine and
// participant logic. A Broker holds exchanges, queues and bindings; each Transport made with New
// is one client connection to it, so a test can give the coordinator and every participant a
// connection of its own, as processes would have. It follows RabbitMQ where sagacoord relies on
// it: direct and fanout routing, mandatory returns, prefetch, dead-lettering on reject, requeue
// with the redelivered flag, and stale deliveries after a connection loss (Disconnect). It has no
// persistence, no delivery limit and no flow control; integration tests use amqptransport.
package memtransport

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// ErrClosed is returned by every method of a Transport after Close.
var ErrClosed = errors.New("memtransport: transport is closed")

// errAlreadySettled is returned when a delivery is settled twice.
var errAlreadySettled = errors.New("delivery already settled")

// Exchange kinds.
const (
	kindDirect = "direct"
	kindFanout = "fanout"
)

// Broker is an in-memory message broker. Its zero value is not usable; use NewBroker. It is safe
// for concurrent use.
type Broker struct {
	mu        sync.Mutex
	exchanges map[string]string    // name -> kind
	bindings  map[string][]binding // exchange -> bindings
	queues    map[string]*queue
	seq       uint64 // orders deliveries, so requeued messages keep their order
}

type binding struct{ queue, key string }

type queue struct {
	name       string
	deadLetter string // exchange that receives rejected messages; "" drops them
	ready      []*message
	unacked    int // delivered and not settled, by any consumer
	consumers  []*consumer
	next       int // round-robin position in consumers
}

type message struct {
	protocol.Message
	exchange, key string
	redelivered   bool
	seq           uint64
}

// NewBroker returns an empty broker: no exchanges, no queues.
func NewBroker() *Broker {
	return &Broker{
		exchanges: map[string]string{},
		bindings:  map[string][]binding{},
		queues:    map[string]*queue{},
	}
}

// Depth returns the number of messages of queue that are ready and that are delivered but not
// yet settled; both are zero for a queue that does not exist.
func (b *Broker) Depth(queue string) (ready, unacked int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[queue]
	if q == nil {
		return 0, 0
	}
	return len(q.ready), q.unacked
}

// Transport is one client connection to a Broker. It implements transport.Transport and adds
// Disconnect to simulate a connection loss.
type Transport struct {
	b         *Broker
	closing   chan struct{}
	consumers map[*consumer]struct{} // guarded by b.mu
	closed    bool                   // guarded by b.mu
	wg        sync.WaitGroup
	once      sync.Once
}

var _ transport.Transport = (*Transport)(nil)

// New returns a new connection to b.
func New(b *Broker) *Transport {
	return &Transport{b: b, closing: make(chan struct{}), consumers: map[*consumer]struct{}{}}
}

// DeclareTopology declares sagacoord's exchanges, the dead-letter queue and the reply queue. It
// is idempotent.
func (t *Transport) DeclareTopology(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("declare topology: %w", err)
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	b.declareShared()
	return nil
}

// DeclareParticipant declares the shared topology and the participant's two queues, bound to the
// commands exchange with the participant name and its two-phase-commit routing key. It is
// idempotent.
func (t *Transport) DeclareParticipant(ctx context.Context, participant string) error {
	if participant == "" {
		return errors.New("declare participant: the participant name is empty")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("declare participant %q: %w", participant, err)
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	b.declareShared()
	name := protocol.ParticipantQueue(participant)
	b.declareQueue(name, protocol.ExchangeDead)
	b.bind(protocol.ExchangeCommands, name, participant)
	tx := protocol.TwoPCQueue(participant)
	b.declareQueue(tx, protocol.ExchangeDead)
	b.bind(protocol.ExchangeCommands, tx, protocol.TwoPCRoutingKey(participant))
	return nil
}

// SubscribeFinals implements transport.Transport.
func (t *Transport) SubscribeFinals(ctx context.Context, participant string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("subscribe %q to final notices: %w", participant, err)
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	name := protocol.ParticipantQueue(participant)
	switch {
	case t.closed:
		return ErrClosed
	case b.queues[name] == nil:
		return fmt.Errorf("subscribe %q to final notices: queue %q does not exist", participant, name)
	}
	b.declareShared()
	b.bind(protocol.ExchangeFinals, name, participant)
	return nil
}

func (b *Broker) declareShared() {
	b.declareExchange(protocol.ExchangeCommands, kindDirect)
	b.declareExchange(protocol.ExchangeReplies, kindDirect)
	b.declareExchange(protocol.ExchangeDead, kindFanout)
	b.declareExchange(protocol.ExchangeFinals, kindDirect)
	b.declareQueue(protocol.QueueDead, "")
	b.bind(protocol.ExchangeDead, protocol.QueueDead, "")
	b.declareQueue(protocol.QueueReplies, protocol.ExchangeDead)
	b.bind(protocol.ExchangeReplies, protocol.QueueReplies, protocol.RoutingKeyReplies)
}

func (b *Broker) declareExchange(name, kind string) {
	if _, ok := b.exchanges[name]; !ok {
		b.exchanges[name] = kind
	}
}

func (b *Broker) declareQueue(name, deadLetter string) {
	if _, ok := b.queues[name]; !ok {
		b.queues[name] = &queue{name: name, deadLetter: deadLetter}
	}
}

func (b *Broker) bind(exchange, queue, key string) {
	bd := binding{queue: queue, key: key}
	if !slices.Contains(b.bindings[exchange], bd) {
		b.bindings[exchange] = append(b.bindings[exchange], bd)
	}
}

// route returns the queues a message published to exchange with key reaches. The default
// exchange "" routes to the queue named key, as in AMQP.
func (b *Broker) route(exchange, key string) ([]*queue, error) {
	if exchange == "" {
		if q := b.queues[key]; q != nil {
			return []*queue{q}, nil
		}
		return nil, nil
	}
	kind, ok := b.exchanges[exchange]
	if !ok {
		return nil, fmt.Errorf("exchange %q not found: declare the topology first", exchange)
	}
	var qs []*queue
	for _, bd := range b.bindings[exchange] {
		if kind == kindFanout || bd.key == key {
			if q := b.queues[bd.queue]; q != nil && !slices.Contains(qs, q) {
				qs = append(qs, q)
			}
		}
	}
	return qs, nil
}

// enqueue appends a copy of m to every queue in qs and hands out what it can.
func (b *Broker) enqueue(qs []*queue, m *message) {
	for _, q := range qs {
		b.seq++
		c := &message{Message: copyMessage(m.Message), exchange: m.exchange, key: m.key, seq: b.seq}
		q.ready = append(q.ready, c)
		b.dispatch(q)
	}
}

// requeue puts ms back at the head of q in their original order, flagged redelivered.
func (b *Broker) requeue(q *queue, ms []*message) {
	slices.SortFunc(ms, func(x, y *message) int { return cmp.Compare(x.seq, y.seq) })
	for _, m := range ms {
		m.redelivered = true
	}
	q.ready = append(ms, q.ready...)
	b.dispatch(q)
}

// dispatch assigns ready messages of q round-robin to consumers with free prefetch.
func (b *Broker) dispatch(q *queue) {
	for len(q.ready) > 0 {
		var c *consumer
		for i := range q.consumers {
			cand := q.consumers[(q.next+i)%len(q.consumers)]
			if len(cand.unacked) < cand.prefetch {
				c = cand
				q.next = (q.next + i + 1) % len(q.consumers)
				break
			}
		}
		if c == nil {
			return
		}
		m := q.ready[0]
		q.ready = q.ready[1:]
		d := &delivery{c: c, m: m}
		c.unacked = append(c.unacked, d)
		q.unacked++
		c.pending = append(c.pending, d)
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// Publish routes every message synchronously. A message reaches every queue bound for its
// routing key; its entry is an error wrapping transport.ErrReturned when there is none (unless
// transport.Mandatory says it may be dropped), and an error when its exchange does not exist.
func (t *Transport) Publish(ctx context.Context, msgs []transport.Outgoing) []error {
	errs := make([]error, len(msgs))
	if err := ctx.Err(); err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("publish: %w", err)
		}
		return errs
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range msgs {
		m := &msgs[i]
		if t.closed {
			errs[i] = ErrClosed
			continue
		}
		qs, err := b.route(m.Exchange, m.RoutingKey)
		switch {
		case err != nil:
			errs[i] = fmt.Errorf("publish message %q: %w", m.MessageID, err)
		case len(qs) == 0 && !transport.Mandatory(m.Exchange):
		case len(qs) == 0:
			errs[i] = fmt.Errorf("publish message %q to exchange %q with routing key %q: %w",
				m.MessageID, m.Exchange, m.RoutingKey, transport.ErrReturned)
		default:
			b.enqueue(qs, &message{Message: m.Message, exchange: m.Exchange, key: m.RoutingKey})
		}
	}
	return errs
}

// consumer is one Consume call.
type consumer struct {
	t        *Transport
	q        *queue
	prefetch int
	unacked  []*delivery // assigned and not settled, in delivery order
	pending  []*delivery // assigned and not yet handed to the channel
	wake     chan struct{}
	stopped  bool
}

// Consume delivers the messages of queue with at most prefetch (1 to 65535) unsettled. It fails
// when the queue does not exist. The channel is closed when ctx ends or the transport closes;
// deliveries already received can still be settled after ctx ends.
func (t *Transport) Consume(ctx context.Context, queue string, prefetch int) (<-chan *transport.Delivery, error) {
	if prefetch < 1 || prefetch > 65535 {
		return nil, fmt.Errorf("consume %q: prefetch %d must be between 1 and 65535", queue, prefetch)
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	q := b.queues[queue]
	if q == nil {
		return nil, fmt.Errorf("consume %q: the queue does not exist; declare it first", queue)
	}
	c := &consumer{t: t, q: q, prefetch: prefetch, wake: make(chan struct{}, 1)}
	q.consumers = append(q.consumers, c)
	t.consumers[c] = struct{}{}
	out := make(chan *transport.Delivery)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(out)
		c.run(ctx, out)
	}()
	b.dispatch(q)
	return out, nil
}

// run hands pending deliveries to out until ctx ends or the transport closes.
func (c *consumer) run(ctx context.Context, out chan<- *transport.Delivery) {
	b := c.t.b
	for {
		b.mu.Lock()
		var d *delivery
		var td *transport.Delivery
		if len(c.pending) > 0 {
			d = c.pending[0]
			c.pending = c.pending[1:]
			td = d.toTransport()
		}
		b.mu.Unlock()
		if d == nil {
			select {
			case <-c.wake:
				continue
			case <-ctx.Done():
			case <-c.t.closing:
			}
			c.stop(nil)
			return
		}
		if !c.handOut(ctx, d, td, out) {
			return
		}
	}
}

// handOut hands td to out, the messages it carries one by one when it is a bundle (as
// amqptransport does). It reports false when ctx ended or the transport closed first: a delivery
// never handed out goes back to its queue; the rest of a bundle is requeued, which requeues the
// bundle once the items handed out are settled.
func (c *consumer) handOut(ctx context.Context, d *delivery, td *transport.Delivery, out chan<- *transport.Delivery) bool {
	items := transport.Unbundle(td, c.deadLetter)
	for k, item := range items {
		select {
		case out <- item:
			continue
		case <-ctx.Done():
		case <-c.t.closing:
		}
		if k == 0 {
			c.stop(d)
			return false
		}
		for _, rest := range items[k:] {
			_ = rest.Requeue()
		}
		c.stop(nil)
		return false
	}
	return true
}

// deadLetter publishes the rejected items of a bundle to the queue's dead-letter exchange, each
// alone, with the headers amqptransport sets.
func (c *consumer) deadLetter(msgs []protocol.Message) error {
	out := make([]transport.Outgoing, len(msgs))
	for i, m := range msgs {
		m = copyMessage(m)
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers[protocol.HeaderDeadQueue], m.Headers[protocol.HeaderDeadReason] = c.q.name, "rejected"
		out[i] = transport.Outgoing{Exchange: c.q.deadLetter, RoutingKey: c.q.name, Message: m}
	}
	if c.q.deadLetter == "" {
		return nil
	}
	return errors.Join(c.t.Publish(context.Background(), out)...)
}

// stop detaches c from its queue and requeues what was never handed out (inHand included).
// Deliveries already handed out stay settleable.
func (c *consumer) stop(inHand *delivery) {
	b := c.t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	c.stopped = true
	c.q.consumers = slices.DeleteFunc(c.q.consumers, func(x *consumer) bool { return x == c })
	c.q.next = 0
	unsent := c.pending
	if inHand != nil && !inHand.stale {
		unsent = append(unsent, inHand)
	}
	c.pending = nil
	var ms []*message
	for _, d := range unsent {
		d.stale = true
		c.unacked = slices.DeleteFunc(c.unacked, func(x *delivery) bool { return x == d })
		c.q.unacked--
		ms = append(ms, d.m)
	}
	if len(ms) > 0 {
		b.requeue(c.q, ms)
	}
	if len(c.unacked) == 0 {
		delete(c.t.consumers, c)
	}
	b.dispatch(c.q)
}

// Disconnect simulates the loss of this connection: every delivery not yet settled becomes
// stale (settling it returns transport.ErrStale) and its message goes back to its queue, flagged
// redelivered, to be delivered again; consumers carry on as if they had reconnected.
func (t *Transport) Disconnect() {
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	t.dropDeliveries()
}

// dropDeliveries makes all unsettled deliveries stale and requeues them. Callers hold b.mu.
func (t *Transport) dropDeliveries() {
	for c := range t.consumers {
		var ms []*message
		for _, d := range c.unacked {
			d.stale = true
			ms = append(ms, d.m)
		}
		c.q.unacked -= len(c.unacked)
		c.unacked, c.pending = nil, nil
		if c.stopped {
			delete(t.consumers, c)
		}
		if len(ms) > 0 {
			t.b.requeue(c.q, ms)
		}
	}
}

// Close ends every consumer of this connection and requeues its unsettled deliveries, which
// become stale. It is idempotent.
func (t *Transport) Close() error {
	t.once.Do(func() {
		b := t.b
		b.mu.Lock()
		t.closed = true
		close(t.closing)
		b.mu.Unlock()
		t.wg.Wait()
		b.mu.Lock()
		t.dropDeliveries()
		b.mu.Unlock()
	})
	return nil
}

// delivery is one assignment of a message to a consumer; it is also its Acknowledger.
type delivery struct {
	c       *consumer
	m       *message
	settled bool
	stale   bool
}

func (d *delivery) toTransport() *transport.Delivery {
	return &transport.Delivery{
		Message:      copyMessage(d.m.Message),
		Redelivered:  d.m.redelivered,
		Acknowledger: d,
	}
}

// Ack removes the message from its queue. It returns transport.ErrStale after the connection
// was lost or closed.
func (d *delivery) Ack() error {
	return d.settle("ack", func(b *Broker, q *queue) {})
}

// Reject dead-letters the message through its queue's dead-letter exchange, adding the
// x-first-death-* headers RabbitMQ adds. Stale as Ack.
func (d *delivery) Reject() error {
	return d.settle("reject", func(b *Broker, q *queue) {
		if q.deadLetter == "" {
			return
		}
		m := &message{Message: copyMessage(d.m.Message), exchange: q.deadLetter, key: d.m.key}
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		if _, ok := m.Headers["x-first-death-queue"]; !ok {
			m.Headers["x-first-death-queue"] = q.name
			m.Headers["x-first-death-reason"] = "rejected"
			m.Headers["x-first-death-exchange"] = d.m.exchange
		}
		if qs, err := b.route(q.deadLetter, d.m.key); err == nil {
			b.enqueue(qs, m)
		}
	})
}

// Requeue puts the message back at the head of its queue, flagged redelivered. Stale as Ack.
func (d *delivery) Requeue() error {
	return d.settle("requeue", func(b *Broker, q *queue) {
		b.requeue(q, []*message{d.m})
	})
}

func (d *delivery) settle(op string, then func(*Broker, *queue)) error {
	c := d.c
	b := c.t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case d.stale:
		return fmt.Errorf("%s message %q from queue %q: %w", op, d.m.MessageID, c.q.name, transport.ErrStale)
	case d.settled:
		return fmt.Errorf("%s message %q from queue %q: %w", op, d.m.MessageID, c.q.name, errAlreadySettled)
	}
	d.settled = true
	c.unacked = slices.DeleteFunc(c.unacked, func(x *delivery) bool { return x == d })
	c.q.unacked--
	if c.stopped && len(c.unacked) == 0 {
		delete(c.t.consumers, c)
	}
	then(b, c.q)
	b.dispatch(c.q)
	return nil
}

// copyMessage returns m with its own headers and body, so neither side of a delivery can change
// what the other sees.
func copyMessage(m protocol.Message) protocol.Message {
	if m.Headers != nil {
		h := make(map[string]string, len(m.Headers))
		for k, v := range m.Headers {
			h[k] = v
		}
		if len(h) == 0 {
			h = nil
		}
		m.Headers = h
	}
	if m.Body != nil {
		m.Body = slices.Clone(m.Body)
	}
	return m
}

// ParticipantExists reports whether the participant's two queues were declared.
func (t *Transport) ParticipantExists(ctx context.Context, participant string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.closed {
		return false, ErrClosed
	}
	_, saga := b.queues[protocol.ParticipantQueue(participant)]
	_, tx := b.queues[protocol.TwoPCQueue(participant)]
	return saga && tx, nil
}
