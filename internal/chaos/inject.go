package chaos

import (
	"context"
	"fmt"
	"strings"
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

type taps struct {
	conn *amqp.Connection
	ch   *amqp.Channel
}

func newTaps(ctx context.Context, amqpURL string, s *Scenario) (*taps, error) {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "chaos-taps"}})
	if err != nil {
		return nil, fmt.Errorf("tap queues: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, err
	}
	t := &taps{conn: conn, ch: ch}
	args := amqp.Table{"x-max-length": int32(10000)}
	for _, q := range []string{tapCommands, tapReplies} {
		if _, err := ch.QueueDeclare(q, false, false, false, false, args); err != nil {
			t.close(ctx)
			return nil, fmt.Errorf("declare %s: %w", q, err)
		}
	}
	for name := range s.participants() {
		if err := ch.QueueBind(tapCommands, name, protocol.ExchangeCommands, false, nil); err != nil {
			t.close(ctx)
			return nil, fmt.Errorf("bind %s: %w", tapCommands, err)
		}
	}
	if err := ch.QueueBind(tapReplies, protocol.RoutingKeyReplies, protocol.ExchangeReplies, false, nil); err != nil {
		t.close(ctx)
		return nil, fmt.Errorf("bind %s: %w", tapReplies, err)
	}
	return t, nil
}

// duplicate publishes again up to n of the messages the tap saw, to the exchange and routing key
// they were first published to, with the same properties (message id included).
func (t *taps) duplicate(ctx context.Context, target string, n int) (int, error) {
	q, exchange := tapCommands, protocol.ExchangeCommands
	if target == "replies" {
		q, exchange = tapReplies, protocol.ExchangeReplies
	}
	done := 0
	for done < n {
		d, ok, err := t.ch.Get(q, true)
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
		if err := t.ch.PublishWithContext(ctx, exchange, d.RoutingKey, false, false, pub); err != nil {
			return done, err
		}
		done++
	}
	return done, nil
}

func (t *taps) close(context.Context) {
	if t.ch != nil {
		for _, q := range []string{tapCommands, tapReplies} {
			_, _ = t.ch.QueueDelete(q, false, false, false)
		}
	}
	if t.conn != nil {
		_ = t.conn.Close()
	}
	t.ch, t.conn = nil, nil
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
