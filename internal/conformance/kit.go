// Package conformance is the participant conformance kit: it checks, over the broker only, that a
// running worker follows docs/protocol.md. It publishes step commands to the worker's queue on
// sagacoord.commands exactly as a coordinator would, and reads the replies and dead letters from
// queues of its own. The worker under test implements the test contract of docs/conformance.md;
// Register implements it with the Go SDK. `sagalab participant-check` runs the kit.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/protocol"
)

// Config says where the worker under test is.
type Config struct {
	// AMQPURL is the broker and vhost the worker consumes from. No coordinator may run on that
	// vhost: it would take the replies the kit waits for. Required.
	AMQPURL string
	// Participant is the worker's participant name. Required.
	Participant string
	// CaseTimeout bounds each case. Default 10s.
	CaseTimeout time.Duration
	// QueryTimeout bounds the wait for a decision query from a prepared worker left without a
	// decision, added to CaseTimeout in that case. Default 30s.
	QueryTimeout time.Duration
}

// Result is the verdict on one case.
type Result struct {
	Name   string
	Passed bool
	// Why says what failed, or what was checked when the case passed.
	Why string
}

// kit is a connection to the broker with the kit's private reply and dead-letter queues.
type kit struct {
	cfg  Config
	conn *amqp.Connection
	pub  *amqp.Channel
	sub  *amqp.Channel

	mu      sync.Mutex
	changed chan struct{}
	replies []amqp.Delivery
	dead    []amqp.Delivery
	// published receives publisher confirms and returns, in publishing order.
	confirms chan amqp.Confirmation
	returns  chan amqp.Return
}

// Run runs every case against the worker, writes a line per case to out, and returns the results.
// An error means the kit could not run (the broker is unreachable); a failed case is a Result.
func Run(ctx context.Context, cfg Config, out io.Writer) ([]Result, error) {
	if cfg.CaseTimeout <= 0 {
		cfg.CaseTimeout = 10 * time.Second
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	if err := protocol.CheckName(cfg.Participant); err != nil {
		return nil, fmt.Errorf("participant: %w", err)
	}
	k, err := open(cfg)
	if err != nil {
		return nil, err
	}
	defer k.conn.Close()
	var results []Result
	for _, c := range cases {
		limit := cfg.CaseTimeout
		if c.asks {
			limit += cfg.QueryTimeout
		}
		cctx, cancel := context.WithTimeout(ctx, limit)
		why, err := c.run(cctx, k)
		cancel()
		r := Result{Name: c.name, Passed: err == nil, Why: why}
		if err != nil {
			r.Why = err.Error()
		}
		results = append(results, r)
		verdict := "PASS"
		if !r.Passed {
			verdict = "FAIL"
		}
		fmt.Fprintf(out, "%s  %-22s %s\n", verdict, r.Name, r.Why)
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
	}
	return results, nil
}

// open connects and declares the kit's queues: an exclusive queue bound to sagacoord.replies with
// the coordinator's routing key, and one bound to the fanout sagacoord.dead, which receives a copy
// of every dead letter.
func open(cfg Config) (*kit, error) {
	conn, err := amqp.Dial(cfg.AMQPURL)
	if err != nil {
		return nil, fmt.Errorf("connect to the broker: %w", err)
	}
	k := &kit{cfg: cfg, conn: conn, changed: make(chan struct{})}
	if err := k.setup(); err != nil {
		conn.Close()
		return nil, err
	}
	return k, nil
}

func (k *kit) setup() error {
	var err error
	if k.pub, err = k.conn.Channel(); err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := k.pub.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	k.confirms = k.pub.NotifyPublish(make(chan amqp.Confirmation, 16))
	k.returns = k.pub.NotifyReturn(make(chan amqp.Return, 16))
	if k.sub, err = k.conn.Channel(); err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	for name, kind := range map[string]string{protocol.ExchangeCommands: "direct", protocol.ExchangeReplies: "direct", protocol.ExchangeDead: "fanout"} {
		if err := k.sub.ExchangeDeclare(name, kind, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", name, err)
		}
	}
	replies, err := k.privateQueue(protocol.ExchangeReplies, protocol.RoutingKeyReplies)
	if err != nil {
		return err
	}
	dead, err := k.privateQueue(protocol.ExchangeDead, "")
	if err != nil {
		return err
	}
	go k.collect(replies, &k.replies)
	go k.collect(dead, &k.dead)
	return nil
}

func (k *kit) privateQueue(exchange, key string) (<-chan amqp.Delivery, error) {
	q, err := k.sub.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return nil, fmt.Errorf("declare the kit's queue: %w", err)
	}
	if err := k.sub.QueueBind(q.Name, key, exchange, false, nil); err != nil {
		return nil, fmt.Errorf("bind the kit's queue to %s: %w", exchange, err)
	}
	ds, err := k.sub.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume the kit's queue: %w", err)
	}
	return ds, nil
}

func (k *kit) collect(ds <-chan amqp.Delivery, into *[]amqp.Delivery) {
	for d := range ds {
		k.mu.Lock()
		*into = append(*into, d)
		close(k.changed)
		k.changed = make(chan struct{})
		k.mu.Unlock()
	}
}

// publish sends m to the worker's queue (or its 2PC queue when twopc) with the mandatory flag and
// waits for the broker's confirm.
func (k *kit) publish(ctx context.Context, m protocol.Message, routingKey string) error {
	headers := amqp.Table{}
	for h, v := range m.Headers {
		headers[h] = v
	}
	err := k.pub.PublishWithContext(ctx, protocol.ExchangeCommands, routingKey, true, false, amqp.Publishing{
		MessageId: m.MessageID, Type: m.Type, ContentType: m.ContentType, CorrelationId: m.CorrelationID,
		DeliveryMode: amqp.Persistent, Timestamp: time.Now(), Headers: headers, Body: m.Body,
	})
	if err != nil {
		return fmt.Errorf("publish %s: %w", m.MessageID, err)
	}
	select {
	case c := <-k.confirms:
		if !c.Ack {
			return fmt.Errorf("the broker nacked %s", m.MessageID)
		}
	case <-ctx.Done():
		return fmt.Errorf("no confirm for %s: %w", m.MessageID, ctx.Err())
	}
	// The broker sends a return before the confirm of the same message, and the client hands it
	// over before the confirm: it is waiting now, or there is none.
	for {
		select {
		case r := <-k.returns:
			if r.MessageId == m.MessageID {
				return fmt.Errorf("the broker returned %s (%s): no queue is bound to %s with key %q; is the worker running on this vhost?", r.MessageId, r.ReplyText, protocol.ExchangeCommands, routingKey)
			}
		default:
			return nil
		}
	}
}

// errTimeout is what a wait ends with when nothing came in the case's time.
var errTimeout = errors.New("timed out")

// await takes the first message of list (k.replies or k.dead) that match accepts.
func (k *kit) await(ctx context.Context, list *[]amqp.Delivery, match func(amqp.Delivery) bool) (amqp.Delivery, error) {
	for {
		k.mu.Lock()
		for i, d := range *list {
			if match(d) {
				*list = append((*list)[:i:i], (*list)[i+1:]...)
				k.mu.Unlock()
				return d, nil
			}
		}
		changed := k.changed
		k.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return amqp.Delivery{}, errTimeout
		}
	}
}

// reply waits for a reply whose correlation_id is commandID.
func (k *kit) reply(ctx context.Context, commandID string) (amqp.Delivery, error) {
	d, err := k.await(ctx, &k.replies, func(d amqp.Delivery) bool { return d.CorrelationId == commandID })
	if err != nil {
		return d, fmt.Errorf("no reply with correlation_id %s within the case's time", commandID)
	}
	return d, nil
}

// deadLetter waits for the dead letter of the message messageID.
func (k *kit) deadLetter(ctx context.Context, messageID string) error {
	_, err := k.await(ctx, &k.dead, func(d amqp.Delivery) bool { return d.MessageId == messageID })
	if err != nil {
		return fmt.Errorf("%s was not dead-lettered to %s within the case's time", messageID, protocol.ExchangeDead)
	}
	return nil
}

// noReply checks that no reply to commandID arrived.
func (k *kit) noReply(commandID string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, d := range k.replies {
		if d.CorrelationId == commandID {
			return fmt.Errorf("%s was answered (%s), but a malformed command gets no reply", commandID, d.Body)
		}
	}
	return nil
}
