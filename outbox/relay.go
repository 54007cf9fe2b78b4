// Package outbox publishes the transactional outbox. Messages are committed to the outbox table
// with the state change that caused them; the Relay publishes them with publisher confirms and
// deletes each row only after the broker confirmed it. A crash between confirm and delete
// publishes a message twice, which every consumer deduplicates; a crash before the confirm leaves
// the row for the next claim. Nothing committed is lost and nothing uncommitted is published.
//
// It is the coordinator's machinery, not an API for users (its store types are internal), and
// may change in any release.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sagacoord/sagacoord/internal/lifecycle"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/transport"
)

// Config configures a Relay.
type Config struct {
	// BatchSize is the most messages published and deleted together. Default 256.
	BatchSize int
	// Workers is the number of goroutines publishing freshly committed rows; each waits for the
	// broker's confirms of its batch, so this bounds the batches in flight. Default 16.
	Workers int
	// PollInterval is how often the relay claims rows whose lease lapsed (left by a crash or a
	// failed publish). Default 1s.
	PollInterval time.Duration
	// QueueSize bounds rows handed over in memory after commit; when it is full, rows wait for
	// their lease to lapse and the poller. Default 8192.
	QueueSize int
	// Logger defaults to discarding.
	Logger *slog.Logger
	// MeterProvider, when set, records the relay's metrics: publish latency and messages
	// published (docs/observability.md). Nil turns them off.
	MeterProvider metric.MeterProvider
	// Test holds hooks for tests; production leaves it zero.
	Test TestConfig
}

// TestConfig holds the relay's test hooks.
type TestConfig struct {
	// Disabled stops all publishing: the chaos suite proves with it that its invariants catch a
	// coordinator that loses messages.
	Disabled bool
	// AfterConfirm, when set, runs after the broker confirmed a batch and before its rows are
	// deleted: a crash point for fault injection.
	AfterConfirm func()
}

// WithDefaults returns c with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.Workers == 0 {
		c.Workers = 16
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.QueueSize == 0 {
		c.QueueSize = 8192
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Relay publishes outbox rows. Start it once; Stop it once (Stop is idempotent).
type Relay struct {
	cfg       Config
	outbox    store.Outbox
	transport transport.Transport
	queue     chan store.OutboxRow
	// latency and published are nil when metrics are off.
	latency   metric.Float64Histogram
	published metric.Int64Counter

	// deletes carries confirmed row ids from the workers to the deleter.
	deletes chan []int64
	// deferred is the outbox when it deletes confirmed rows later itself; nil otherwise.
	deferred store.DeferredDelete

	workers lifecycle.Group // publishing workers and the poller
	deleter lifecycle.Group // stopped after the workers, so that it drains what they handed over
}

// NewRelay returns a relay over the given outbox and transport.
func NewRelay(ob store.Outbox, tr transport.Transport, cfg Config) *Relay {
	cfg = cfg.WithDefaults()
	r := &Relay{cfg: cfg, outbox: ob, transport: tr, queue: make(chan store.OutboxRow, cfg.QueueSize), deletes: make(chan []int64, 1024)}
	r.deferred, _ = ob.(store.DeferredDelete)
	if cfg.MeterProvider != nil {
		m := cfg.MeterProvider.Meter("github.com/sagacoord/sagacoord/outbox")
		// Creating an instrument fails only for an invalid name; these are constant.
		r.latency, _ = m.Float64Histogram("sagacoord.outbox.publish.duration",
			metric.WithDescription("Time to publish one batch of outbox rows until the broker confirmed (or refused) every message."),
			metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(telemetry.DurationBuckets...))
		r.published, _ = m.Int64Counter("sagacoord.outbox.published",
			metric.WithDescription("Outbox messages published, by result: confirmed, or failed (left for a later attempt)."))
	}
	return r
}

// Enqueue hands rows that were just committed (and are leased to this instance) to the relay. It
// never blocks: rows that do not fit are published by the poller when their lease lapses.
func (r *Relay) Enqueue(rows []store.OutboxRow) {
	for i, row := range rows {
		select {
		case r.queue <- row:
		default:
			r.cfg.Logger.Warn("outbox relay queue full; rows wait for the poller", "dropped", len(rows)-i)
			return
		}
	}
}

// Start starts the publishing workers and the poller.
func (r *Relay) Start(ctx context.Context) error {
	wctx, err := r.workers.Start(ctx)
	if err != nil {
		return fmt.Errorf("outbox relay: %w", err)
	}
	// The deleter outlives the workers' context: it is stopped after them.
	dctx, err := r.deleter.Start(context.WithoutCancel(ctx))
	if err != nil {
		r.workers.Stop()
		return fmt.Errorf("outbox relay: %w", err)
	}
	for range r.cfg.Workers {
		r.workers.Go(func() { r.work(wctx) })
	}
	r.workers.Go(func() { r.poll(wctx) })
	r.deleter.Go(func() { r.deleteLoop(dctx) })
	return nil
}

// Stop stops the relay and waits for its goroutines. Rows still queued are left to their lease.
// It is idempotent.
func (r *Relay) Stop() {
	r.workers.Stop()
	// Only now that no worker can hand over more ids does the deleter drain and stop.
	r.deleter.Stop()
	if r.deferred != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.deferred.FlushDeletes(ctx); err != nil {
			r.cfg.Logger.Error("delete confirmed outbox rows; they will be published again", "err", err)
		}
	}
}

func (r *Relay) work(ctx context.Context) {
	batch := make([]store.OutboxRow, 0, r.cfg.BatchSize)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case row := <-r.queue:
			batch = append(batch, row)
		}
		r.publish(ctx, transport.TakeWaiting(r.queue, batch, r.cfg.BatchSize))
	}
}

func (r *Relay) poll(ctx context.Context) {
	t := time.NewTicker(r.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			rows, err := r.outbox.ClaimExpired(ctx, r.cfg.BatchSize)
			if err != nil {
				if ctx.Err() == nil {
					r.cfg.Logger.Error("claim outbox rows", "err", err)
				}
				break
			}
			if len(rows) == 0 {
				break
			}
			r.publish(ctx, rows)
			if len(rows) < r.cfg.BatchSize {
				break
			}
		}
	}
}

// publish publishes rows and deletes those the broker confirmed. Rows that failed keep their
// lease and are claimed again when it lapses.
func (r *Relay) publish(ctx context.Context, rows []store.OutboxRow) {
	if r.cfg.Test.Disabled || len(rows) == 0 {
		return
	}
	msgs := make([]transport.Outgoing, len(rows))
	for i, row := range rows {
		msgs[i] = row.Outgoing
	}
	pctx, cancel := context.WithTimeout(ctx, r.outbox.Lease())
	began := time.Now()
	errs := r.transport.Publish(pctx, msgs)
	took := time.Since(began)
	cancel()
	done := make([]int64, 0, len(rows))
	var firstErr error
	failed := 0
	for i, err := range errs {
		if err == nil {
			done = append(done, rows[i].ID)
			continue
		}
		failed++
		if firstErr == nil {
			firstErr = err
		}
	}
	if r.latency != nil {
		r.latency.Record(ctx, took.Seconds())
		r.published.Add(ctx, int64(len(done)), metric.WithAttributes(attribute.String("result", "confirmed")))
		if failed > 0 {
			r.published.Add(ctx, int64(failed), metric.WithAttributes(attribute.String("result", "failed")))
		}
	}
	if failed > 0 && ctx.Err() == nil {
		level := slog.LevelWarn
		if errors.Is(firstErr, transport.ErrReturned) {
			level = slog.LevelError
		}
		r.cfg.Logger.Log(ctx, level, "publish outbox rows failed; they will be retried", "failed", failed, "of", len(rows), "err", firstErr)
	}
	if r.cfg.Test.AfterConfirm != nil && len(done) > 0 {
		r.cfg.Test.AfterConfirm()
	}
	if len(done) == 0 {
		return
	}
	// A crash before the delete only publishes confirmed messages again, which consumers
	// deduplicate. A store that defers deletes batches them itself, most often into the
	// engine's next state transaction (see Stop); otherwise the deleter batches them across
	// publishes.
	if r.deferred != nil {
		r.deferred.DeleteSoon(done)
		return
	}
	select {
	case r.deletes <- done:
	case <-ctx.Done():
		r.delete(context.WithoutCancel(ctx), done)
	}
}

// deleteLoop deletes confirmed rows in batches gathered from every worker, off the publish path.
func (r *Relay) deleteLoop(ctx context.Context) {
	for {
		var ids []int64
		select {
		case <-ctx.Done():
			// Workers are gone; delete what they handed over.
			for {
				select {
				case more := <-r.deletes:
					ids = append(ids, more...)
				default:
					r.delete(context.WithoutCancel(ctx), ids)
					return
				}
			}
		case ids = <-r.deletes:
		}
	gather:
		for len(ids) < 8*r.cfg.BatchSize {
			select {
			case more := <-r.deletes:
				ids = append(ids, more...)
			default:
				break gather
			}
		}
		r.delete(ctx, ids)
	}
}

func (r *Relay) delete(ctx context.Context, ids []int64) {
	if len(ids) == 0 {
		return
	}
	if err := r.outbox.Delete(ctx, ids); err != nil && ctx.Err() == nil {
		r.cfg.Logger.Error("delete confirmed outbox rows; they will be published again", "rows", len(ids), "err", err)
	}
}
