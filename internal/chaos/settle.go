package chaos

import (
	"context"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// quiescent reports whether every started saga or transaction is final, the outbox is empty and
// no queue holds work; if not, it says what is left.
func (r *run) quiescent(ctx context.Context) (bool, string) {
	var open, outbox int
	if err := r.admin.QueryRow(ctx, "SELECT count(*) FROM "+r.mainTable()+" WHERE NOT (status = ANY($1))", r.terminalStatuses()).Scan(&open); err != nil {
		return false, err.Error()
	}
	if open > 0 {
		return false, fmt.Sprintf("%d not final", open)
	}
	if err := r.admin.QueryRow(ctx, "SELECT count(*) FROM "+r.table("outbox")).Scan(&outbox); err != nil {
		return false, err.Error()
	}
	if outbox > 0 {
		return false, fmt.Sprintf("%d outbox rows", outbox)
	}
	qs, err := r.queueStats(ctx)
	if err != nil {
		return false, "queue depths: " + err.Error()
	}
	for _, q := range qs {
		if !r.ignoredQueue(q.Name) && q.Ready+q.Unacked > 0 {
			return false, fmt.Sprintf("queue %s: %d ready, %d unacked", q.Name, q.Ready, q.Unacked)
		}
	}
	return true, ""
}

func (r *run) ignoredQueue(name string) bool {
	return name == deadQueue || strings.HasPrefix(name, tapPrefix)
}

// queueStats lists the scenario's queues with their depths. The management API names the
// queues and counts unacknowledged messages, but its numbers are samples up to its collection
// interval (5s) old; the ready counts are therefore read exactly with a passive declare over
// AMQP.
func (r *run) queueStats(ctx context.Context) ([]QueueStat, error) {
	var qs []QueueStat
	var err error
	if r.mq != nil {
		qs, err = r.mq.queueStats(ctx, r.vhost)
	} else {
		qs, err = r.mgmt.queueStats(ctx, r.vhost)
	}
	if err != nil {
		return nil, err
	}
	conn, err := amqp.DialConfig(r.amqpBase, amqp.Config{Properties: amqp.Table{"connection_name": "chaos-inspect"}})
	if err != nil {
		return nil, fmt.Errorf("inspect queues: %w", err)
	}
	defer conn.Close()
	var ch *amqp.Channel
	for i := range qs {
		if ch == nil || ch.IsClosed() {
			if ch, err = conn.Channel(); err != nil {
				return nil, fmt.Errorf("inspect queues: %w", err)
			}
		}
		// A queue that is gone, or exclusive to another connection, keeps the API's count.
		if q, err := ch.QueueDeclarePassive(qs[i].Name, false, false, false, false, nil); err == nil {
			qs[i].Ready = q.Messages
		}
	}
	return qs, nil
}

// statsInterval is how old the management API's message counts may be.
const statsInterval = 5 * time.Second

// settle waits until the system is quiescent (twice in a row) or the settle time is over.
func (r *run) settle(ctx context.Context) {
	deadline := time.Now().Add(r.s.Settle.D())
	r.progress("   settling (at most %s)", r.s.Settle.D())
	streak := 0
	var said time.Time
	for time.Now().Before(deadline) && ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ok, left := r.quiescent(qctx)
		cancel()
		if !ok && time.Since(said) > 10*time.Second {
			r.event("waiting for quiescence: %s", left)
			said = time.Now()
		}
		if ok {
			streak++
			if streak >= 2 {
				// The unacked counts come from the management API's samples: look again once
				// they are surely newer than the moment the system went quiet.
				select {
				case <-ctx.Done():
				case <-time.After(statsInterval + time.Second):
				}
				qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				ok, left = r.quiescent(qctx)
				cancel()
				if ok {
					r.event("quiescent")
					return
				}
				r.event("not quiescent after all: %s", left)
				streak = 0
			}
		} else {
			streak = 0
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	_, left := r.quiescent(ctx)
	r.event("not quiescent after the settle time of %s (%s); checking anyway", r.s.Settle.D(), left)
}
