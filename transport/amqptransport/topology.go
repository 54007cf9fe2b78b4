package amqptransport

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/protocol"
)

// maxNameBytes is the longest queue or exchange name AMQP 0-9-1 allows (a short string).
const maxNameBytes = 255

// workQueueArgs returns the declaration arguments of every queue that holds work: the reply queue
// and each participant's queue. The coordinator and the participant SDK both declare these queues
// and RabbitMQ refuses a redeclaration with different arguments (PRECONDITION_FAILED), so the
// arguments are made here and nowhere else.
func (c Config) workQueueArgs() amqp.Table {
	args := amqp.Table{"x-dead-letter-exchange": protocol.ExchangeDead}
	if c.QueueType == QueueTypeQuorum {
		args["x-queue-type"] = QueueTypeQuorum
		args["x-delivery-limit"] = int64(c.DeliveryLimit)
	}
	return args
}

// deadQueueArgs returns the declaration arguments of the dead-letter queue. It has no
// dead-letter exchange of its own (a dead letter must not cycle) and no delivery limit (a dead
// letter is kept until an operator takes it).
func (c Config) deadQueueArgs() amqp.Table {
	if c.QueueType == QueueTypeQuorum {
		return amqp.Table{"x-queue-type": QueueTypeQuorum}
	}
	return nil
}

// DeclareTopology declares the commands, replies and dead-letter exchanges, the dead-letter queue
// and the reply queue, with the queue type of the Config. It is idempotent, and safe to run from
// every coordinator and participant at once.
func (t *Transport) DeclareTopology(ctx context.Context) error {
	return t.withTopologyChannel(ctx, t.declareShared)
}

// DeclareParticipant declares the two queues of participant, its saga queue and its
// two-phase-commit queue, bound to the commands exchange with the participant name and
// protocol.TwoPCRoutingKey. It first declares the shared topology too, so a participant
// may start before any coordinator. It is idempotent.
func (t *Transport) DeclareParticipant(ctx context.Context, participant string) error {
	queue := protocol.ParticipantQueue(participant)
	switch {
	case participant == "":
		return errors.New("declare participant: the participant name is empty")
	case len(protocol.TwoPCQueue(participant)) > maxNameBytes:
		return fmt.Errorf("declare participant %q: queue name %q is longer than %d bytes", participant, queue, maxNameBytes)
	}
	return t.withTopologyChannel(ctx, func(ch *amqp.Channel) error {
		if err := t.declareShared(ch); err != nil {
			return err
		}
		for _, q := range []struct{ name, key string }{
			{queue, participant},
			{protocol.TwoPCQueue(participant), protocol.TwoPCRoutingKey(participant)},
		} {
			if err := t.declareQueue(ch, q.name, t.cfg.workQueueArgs()); err != nil {
				return err
			}
			if err := ch.QueueBind(q.name, q.key, protocol.ExchangeCommands, false, nil); err != nil {
				return fmt.Errorf("bind queue %q to exchange %q: %w", q.name, protocol.ExchangeCommands, err)
			}
		}
		return nil
	})
}

// SubscribeFinals implements transport.Transport: it binds the participant's queue to the
// final notices exchange, declaring that exchange first if it is missing. A coordinator declares
// it at start, so a participant whose user may not declare (docs/security.md) still binds.
func (t *Transport) SubscribeFinals(ctx context.Context, participant string) error {
	queue := protocol.ParticipantQueue(participant)
	return t.withTopologyConn(ctx, func(conn *amqp.Connection) error {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		err = ch.ExchangeDeclarePassive(protocol.ExchangeFinals, amqp.ExchangeDirect, true, false, false, false, nil)
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
			// The broker closed the channel: declare on a new one.
			if ch, err = conn.Channel(); err != nil {
				return fmt.Errorf("open channel: %w", err)
			}
			err = ch.ExchangeDeclare(protocol.ExchangeFinals, amqp.ExchangeDirect, true, false, false, false, nil)
		}
		if err != nil {
			return fmt.Errorf("declare direct exchange %q: %w", protocol.ExchangeFinals, explainDeclareError(err))
		}
		if err := ch.QueueBind(queue, participant, protocol.ExchangeFinals, false, nil); err != nil {
			if errors.As(err, &amqpErr) && amqpErr.Code == amqp.AccessRefused {
				err = fmt.Errorf("%w (grant the user write on its queue and read on %s, or keep every barrier row: participant.Config.BarrierGrace < 0; docs/security.md)", err, protocol.ExchangeFinals)
			}
			return fmt.Errorf("bind queue %q to exchange %q: %w", queue, protocol.ExchangeFinals, err)
		}
		return nil
	})
}

func (t *Transport) declareShared(ch *amqp.Channel) error {
	for _, ex := range []struct{ name, kind string }{
		{protocol.ExchangeCommands, amqp.ExchangeDirect},
		{protocol.ExchangeReplies, amqp.ExchangeDirect},
		{protocol.ExchangeDead, amqp.ExchangeFanout},
		{protocol.ExchangeFinals, amqp.ExchangeDirect},
	} {
		if err := ch.ExchangeDeclare(ex.name, ex.kind, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare %s exchange %q: %w", ex.kind, ex.name, explainDeclareError(err))
		}
	}
	if err := t.declareQueue(ch, protocol.QueueDead, t.cfg.deadQueueArgs()); err != nil {
		return err
	}
	if err := ch.QueueBind(protocol.QueueDead, "", protocol.ExchangeDead, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to exchange %q: %w", protocol.QueueDead, protocol.ExchangeDead, err)
	}
	if err := t.declareQueue(ch, protocol.QueueReplies, t.cfg.workQueueArgs()); err != nil {
		return err
	}
	if err := ch.QueueBind(protocol.QueueReplies, protocol.RoutingKeyReplies, protocol.ExchangeReplies, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to exchange %q: %w", protocol.QueueReplies, protocol.ExchangeReplies, err)
	}
	return nil
}

func (t *Transport) declareQueue(ch *amqp.Channel, name string, args amqp.Table) error {
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		err = explainDeclareError(err)
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.PreconditionFailed {
			return fmt.Errorf("declare queue %q: it exists with other arguments than QueueType=%q "+
				"(DeliveryLimit=%d for quorum): every declarer must use the same QueueType; "+
				"align the configuration or delete the queue: %w",
				name, t.cfg.QueueType, t.cfg.DeliveryLimit, err)
		}
		return fmt.Errorf("declare queue %q: %w", name, err)
	}
	return nil
}

// explainDeclareError adds what to do to the broker errors that a declaration commonly meets.
func explainDeclareError(err error) error {
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) && amqpErr.Code == amqp.AccessRefused {
		return fmt.Errorf("%w (grant the user configure, write and read permissions on what it declares; a participant whose user may not declare leaves it to the coordinator with participant.Config.SkipDeclare: docs/security.md)", err)
	}
	return err
}

// withTopologyChannel runs declare on a channel of a short-lived connection of its own (see
// withTopologyConn).
func (t *Transport) withTopologyChannel(ctx context.Context, declare func(*amqp.Channel) error) error {
	return t.withTopologyConn(ctx, func(conn *amqp.Connection) error {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		return declare(ch)
	})
}

// withTopologyConn runs declare on a short-lived connection of its own. A declaration that
// outlives ctx then only costs that connection, never the publishing or consuming one.
func (t *Transport) withTopologyConn(ctx context.Context, declare func(*amqp.Connection) error) error {
	if t.isClosed() {
		return ErrClosed
	}
	conn, err := t.dial(ctx, "topology")
	if err != nil {
		return fmt.Errorf("declare topology: %w", err)
	}
	s := &session{conn: conn, role: "topology", gen: 1}
	stop := t.interruptible(ctx, s, "declare")
	defer func() {
		stop()
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
	}()
	if err := declare(conn); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("declare topology on %s: %w (%w)", t.redacted, ctx.Err(), err)
		}
		return fmt.Errorf("declare topology on %s: %w", t.redacted, err)
	}
	return nil
}

// ParticipantExists reports whether both queues of the participant exist, with passive declares
// on one short-lived connection, a channel each (the broker closes a channel whose passive
// declare fails).
func (t *Transport) ParticipantExists(ctx context.Context, participant string) (bool, error) {
	queues := []string{protocol.ParticipantQueue(participant), protocol.TwoPCQueue(participant)}
	if participant == "" || len(queues[1]) > maxNameBytes {
		return false, nil
	}
	exists := true
	err := t.withTopologyConn(ctx, func(conn *amqp.Connection) error {
		for _, queue := range queues {
			ch, err := conn.Channel()
			if err != nil {
				return fmt.Errorf("open channel: %w", err)
			}
			_, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
			var aerr *amqp.Error
			if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
				exists = false
				return nil
			}
			if err != nil {
				return fmt.Errorf("look up queue %q: %w", queue, err)
			}
			_ = ch.Close()
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	return exists, nil
}
