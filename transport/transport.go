// Package transport is the seam between sagacoord and its message broker. The engine, the outbox
// relay and the participant SDK talk to a Transport; transport/amqptransport implements it over
// RabbitMQ with amqp091-go, and transport/memtransport implements it in memory for fast unit tests
// of pure logic. transport/transporttest is the conformance suite every implementation passes.
//
// # Stability
//
// A worker passes the Transport of amqptransport (memtransport in tests) to participant.Config.
// This package follows the module's semantic versioning, with one exception: the Transport and
// Acknowledger interfaces may gain methods in a minor release, when the engine or the SDK needs
// more of the broker. Implement them outside this module only if you can follow such changes,
// and run transporttest.Run against your implementation.
package transport

import (
	"context"
	"errors"

	"github.com/sagacoord/sagacoord/protocol"
)

// Outgoing is a message to publish and where to.
type Outgoing struct {
	Exchange   string
	RoutingKey string
	protocol.Message
}

// TakeWaiting appends to batch the values (deliveries, say) already waiting on ch, without
// waiting for more, until batch holds max. A batch so gathered is as large as the load makes it:
// one value when they come one at a time, more when they arrive faster than they are processed.
func TakeWaiting[T any](ch <-chan T, batch []T, max int) []T {
	for len(batch) < max {
		select {
		case d, ok := <-ch:
			if !ok {
				return batch
			}
			batch = append(batch, d)
		default:
			return batch
		}
	}
	return batch
}

// Delivery is one message received from a queue. Exactly one of Ack, Reject or Requeue should be
// called. A delivery belongs to the connection it arrived on: after that connection is lost, its
// Ack, Reject and Requeue return ErrStale and send nothing, so a delivery tag of an old connection
// can never acknowledge a different message on a new one.
type Delivery struct {
	protocol.Message
	// Redelivered is the broker's flag: the message may have been seen before.
	Redelivered bool
	// Acknowledger settles the delivery. Set by the transport.
	Acknowledger Acknowledger
}

// Acknowledger settles a delivery on the connection it came from.
type Acknowledger interface {
	Ack() error
	// Reject drops the message without requeueing: the broker dead-letters it.
	Reject() error
	// Requeue returns the message to its queue.
	Requeue() error
}

// Ack acknowledges the delivery.
func (d *Delivery) Ack() error { return d.Acknowledger.Ack() }

// Reject dead-letters the delivery.
func (d *Delivery) Reject() error { return d.Acknowledger.Reject() }

// Requeue returns the delivery to its queue.
func (d *Delivery) Requeue() error { return d.Acknowledger.Requeue() }

// ErrStale is returned when settling a delivery whose connection is gone.
var ErrStale = errors.New("delivery belongs to a closed connection")

// ErrReturned is the error for a message the broker could not route (mandatory flag).
var ErrReturned = errors.New("message returned by the broker: no queue is bound for its routing key")

// ErrNacked is the error for a message the broker refused to take responsibility for.
var ErrNacked = errors.New("message nacked by the broker")

// Mandatory reports whether a message published to exchange must reach a queue, or else come back
// as ErrReturned: every message but the final notices of protocol.ExchangeFinals, which reach only
// the participants that subscribed to them (Transport.SubscribeFinals).
func Mandatory(exchange string) bool { return exchange != protocol.ExchangeFinals }

// Transport publishes and consumes sagacoord messages.
type Transport interface {
	// DeclareTopology declares the exchanges, the reply queue and the dead-letter queue. It is
	// idempotent.
	DeclareTopology(ctx context.Context) error
	// DeclareParticipant declares the two durable queues of a participant, bound to the
	// commands exchange: protocol.ParticipantQueue with the participant name as routing key,
	// for saga step commands, and protocol.TwoPCQueue with protocol.TwoPCRoutingKey, for
	// two-phase-commit commands. It is idempotent.
	DeclareParticipant(ctx context.Context, participant string) error
	// SubscribeFinals binds the queue of participant to protocol.ExchangeFinals with the
	// participant name as routing key, so that the final notices addressed to it reach its
	// workers. The queue must exist (DeclareParticipant). It is idempotent.
	SubscribeFinals(ctx context.Context, participant string) error
	// ParticipantExists reports whether both queues of a participant exist (a worker or a saga
	// definition declared them), without creating them.
	ParticipantExists(ctx context.Context, participant string) (bool, error)
	// Publish publishes every message persistently, with the mandatory flag when Mandatory says
	// so, and waits for the broker's confirms. The result has one entry per message: nil when the broker confirmed it
	// and routed it, otherwise why not (ErrReturned, ErrNacked, a connection error). A message
	// whose entry is not nil may or may not have reached a queue; the caller publishes it again.
	Publish(ctx context.Context, msgs []Outgoing) []error
	// Consume starts consuming queue with at most prefetch unacknowledged deliveries. The channel
	// delivers across reconnects and is closed when ctx ends or the transport is closed.
	Consume(ctx context.Context, queue string, prefetch int) (<-chan *Delivery, error)
	// Close releases the connections. It is idempotent.
	Close() error
}
