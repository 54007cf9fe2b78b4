package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PublishBaseline measures confirmed persistent publishes per second, 64 in flight on one channel,
// to a durable scratch queue that a consumer drains, acknowledging each message.
func PublishBaseline(ctx context.Context, amqpURL string, d time.Duration) (float64, error) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return 0, fmt.Errorf("bench: baseline publish: dial: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	// Durable, so that persistent messages are really written, and drained by a consumer that
	// acknowledges each message, as every sagacoord queue is: the broker's work per message is
	// then what it is for a command or a reply.
	const queue = "sagacoord.bench.baseline"
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return 0, fmt.Errorf("bench: baseline publish: scratch queue: %w", err)
	}
	defer func() { _, _ = ch.QueueDelete(queue, false, false, false) }()
	if _, err := ch.QueuePurge(queue, false); err != nil {
		return 0, err
	}
	cch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	if err := cch.Qos(256, 0, false); err != nil {
		return 0, err
	}
	deliveries, err := cch.Consume(queue, "", false, true, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("bench: baseline publish: consume: %w", err)
	}
	go func() {
		for dv := range deliveries {
			_ = dv.Ack(false)
		}
	}()
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	body := make([]byte, 300)
	var confirmed int64
	end := time.Now().Add(d)
	start := time.Now()
	for time.Now().Before(end) && ctx.Err() == nil {
		var batch []*amqp.DeferredConfirmation
		for range 64 {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
			if err != nil {
				return 0, fmt.Errorf("bench: baseline publish: %w", err)
			}
			batch = append(batch, dc)
		}
		for _, dc := range batch {
			if ok, err := dc.WaitContext(ctx); err == nil && ok {
				confirmed++
			}
		}
	}
	return float64(confirmed) / time.Since(start).Seconds(), nil
}

// InsertBaseline measures single-row insert transactions per second with the given number of
// clients, into a temporary table.
func InsertBaseline(ctx context.Context, databaseURL string, clients int, d time.Duration) (float64, error) {
	pool, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	table := "bench_baseline_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	if _, err := pool.Exec(ctx, `CREATE UNLOGGED TABLE IF NOT EXISTS `+table+` (id bigserial primary key, v text)`); err != nil {
		return 0, fmt.Errorf("bench: baseline insert: %w", err)
	}
	// UNLOGGED would flatter the figure; switch to logged so each commit waits for the WAL flush.
	if _, err := pool.Exec(ctx, `ALTER TABLE `+table+` SET LOGGED`); err != nil {
		return 0, err
	}
	defer pool.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS `+table)
	var n atomic.Int64
	end := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (v) VALUES ('x')`); err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}
