package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/protocol"
)

// Queues the runner adds to the scenario's vhost: tap queues receive a copy of every command or
// reply, so a duplicate fault can publish real messages a second time. They are deleted before
// the checks.
const (
	tapPrefix   = "chaos.tap."
	tapCommands = tapPrefix + "commands"
	tapReplies  = tapPrefix + "replies"
	deadQueue   = protocol.QueueDead
)

// tapWait bounds how long a duplicate fault waits for the tap connection to come back (after a
// broker restart) before it fails.
const tapWait = 30 * time.Second

// taps holds the tap queues and a connection to them that survives a broker restart: a watcher
// dials again when the connection or its channel closes, and declares and binds the queues
// again. The queues are durable, so the copies they held before a restart are still there.
type taps struct {
	url   string
	parts []string
	event func(format string, args ...any)

	mu    sync.Mutex
	conn  *amqp.Connection
	ch    *amqp.Channel
	ready chan struct{} // closed while conn and ch are usable; replaced when they are lost
	// use serialises duplicate: two faults due at once would interleave their gets and publishes
	// on the one channel, which the broker refuses (UNEXPECTED_FRAME) and closes.
	use sync.Mutex

	stop chan struct{}
	done chan struct{}
}

func newTaps(ctx context.Context, amqpURL string, s *Scenario, event func(string, ...any)) (*taps, error) {
	t := &taps{url: amqpURL, event: event, ready: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	for name := range s.participants() {
		t.parts = append(t.parts, name)
	}
	conn, ch, err := t.connect()
	if err != nil {
		return nil, fmt.Errorf("tap queues: %w", err)
	}
	t.conn, t.ch = conn, ch
	close(t.ready)
	go t.watch(conn, ch)
	return t, nil
}

// connect dials the broker and declares and binds the tap queues.
func (t *taps) connect() (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.DialConfig(t.url, amqp.Config{Properties: amqp.Table{"connection_name": "chaos-taps"}})
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if err := declareTaps(ch, t.parts); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, ch, nil
}

func declareTaps(ch *amqp.Channel, parts []string) error {
	args := amqp.Table{"x-max-length": int32(10000)}
	for _, q := range []string{tapCommands, tapReplies} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
			return fmt.Errorf("declare %s: %w", q, err)
		}
	}
	for _, name := range parts {
		// Saga steps and two-phase-commit commands travel with different routing keys.
		for _, key := range []string{name, protocol.TwoPCRoutingKey(name)} {
			if err := ch.QueueBind(tapCommands, key, protocol.ExchangeCommands, false, nil); err != nil {
				return fmt.Errorf("bind %s: %w", tapCommands, err)
			}
		}
	}
	if err := ch.QueueBind(tapReplies, protocol.RoutingKeyReplies, protocol.ExchangeReplies, false, nil); err != nil {
		return fmt.Errorf("bind %s: %w", tapReplies, err)
	}
	return nil
}

// watch waits until the connection or its channel closes, then dials again (every 250ms) until
// it succeeds or close is called; and so on.
func (t *taps) watch(conn *amqp.Connection, ch *amqp.Channel) {
	defer close(t.done)
	for {
		connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
		chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
		var why *amqp.Error
		select {
		case <-t.stop:
			return
		case why = <-connClosed:
		case why = <-chClosed:
		}
		t.mu.Lock()
		t.ready = make(chan struct{})
		t.mu.Unlock()
		_ = conn.Close()
		t.event("tap connection lost (%v); connecting again", why)
		var err error
		for {
			if conn, ch, err = t.connect(); err == nil {
				break
			}
			select {
			case <-t.stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
		t.mu.Lock()
		t.conn, t.ch = conn, ch
		close(t.ready)
		t.mu.Unlock()
		t.event("tap connection back")
	}
}

// channel returns the tap channel, waiting (at most tapWait) while it is being re-established.
func (t *taps) channel(ctx context.Context) (*amqp.Channel, error) {
	t.mu.Lock()
	ready := t.ready
	t.mu.Unlock()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.stop:
		return nil, errors.New("tap queues closed")
	case <-time.After(tapWait):
		return nil, fmt.Errorf("the tap connection was not back within %s", tapWait)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ch, nil
}

// duplicate publishes again up to n of the messages the tap saw, to the exchange and routing key
// they were first published to, with the same properties (message id included).
func (t *taps) duplicate(ctx context.Context, target string, n int) (int, error) {
	q, exchange := tapCommands, protocol.ExchangeCommands
	if target == "replies" {
		q, exchange = tapReplies, protocol.ExchangeReplies
	}
	t.use.Lock()
	defer t.use.Unlock()
	ch, err := t.channel(ctx)
	if err != nil {
		return 0, err
	}
	done := 0
	for done < n {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			return done, err
		}
		if !ok {
			break
		}
		pub := amqp.Publishing{
			Headers: d.Headers, ContentType: d.ContentType, DeliveryMode: amqp.Persistent,
			CorrelationId: d.CorrelationId, MessageId: d.MessageId, Type: d.Type, Timestamp: d.Timestamp,
			Body: d.Body,
		}
		if err := ch.PublishWithContext(ctx, exchange, d.RoutingKey, false, false, pub); err != nil {
			return done, err
		}
		done++
	}
	return done, nil
}

// close stops the watcher, deletes the tap queues and closes the connection.
func (t *taps) close(context.Context) {
	select {
	case <-t.stop:
		return
	default:
	}
	close(t.stop)
	<-t.done
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.ready:
		for _, q := range []string{tapCommands, tapReplies} {
			_, _ = t.ch.QueueDelete(q, false, false, false)
		}
	default:
	}
	_ = t.conn.Close()
}

// publishPoison publishes n malformed messages straight to a participant's queue or the reply
// queue: bodies that are not JSON, messages without headers, an unknown protocol version and
// an unknown type, in turn. Each must be dead-lettered without blocking the queue.
func publishPoison(ctx context.Context, amqpURL, target string, n int, seed uint64) (int, error) {
	queue := protocol.QueueReplies
	if name, ok := strings.CutPrefix(target, "participant:"); ok {
		queue = protocol.ParticipantQueue(name)
	}
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "chaos-poison"}})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	r := newRand(seed, target, "poison")
	sent := 0
	for i := range n {
		pub := amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: fmt.Sprintf("chaos-poison-%d-%d", time.Now().UnixNano(), i), Timestamp: time.Now()}
		switch i % 4 {
		case 0:
			garbage := make([]byte, 16+r.intn(64))
			for j := range garbage {
				garbage[j] = byte(r.intn(256))
			}
			pub.Body, pub.Type = garbage, protocol.TypeSagaAction
			pub.Headers = amqp.Table{protocol.HeaderVersion: protocol.Version}
		case 1:
			pub.Body = []byte(`{"not":"a command"`)
		case 2:
			pub.Body, pub.Type, pub.ContentType = []byte(`{}`), protocol.TypeReply, protocol.ContentType
			pub.Headers = amqp.Table{protocol.HeaderVersion: "999"}
		default:
			pub.Body, pub.Type, pub.ContentType = []byte(`{"saga_id":"not-a-uuid"}`), "chaos.unknown", protocol.ContentType
			pub.Headers = amqp.Table{protocol.HeaderVersion: protocol.Version}
		}
		conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, pub)
		if err != nil {
			return sent, err
		}
		if ok, err := conf.WaitContext(ctx); err != nil || !ok {
			return sent, fmt.Errorf("poison message to %s not confirmed: %v", queue, err)
		}
		sent++
	}
	return sent, nil
}
