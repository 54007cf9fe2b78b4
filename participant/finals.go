package participant

import (
	"context"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// Barrier retention: the coordinator announces the sagas and transactions it deleted after its
// own retention (final notices, docs/protocol.md §11). Their gids are recorded in the finals
// table, after which no command of theirs claims a barrier row: a late copy is acknowledged
// without effect or reply. After Config.BarrierGrace their barrier rows are deleted, and after
// Config.FinalHorizon the gids themselves.

const (
	// DefaultBarrierGrace is the default Config.BarrierGrace.
	DefaultBarrierGrace = time.Hour
	// DefaultFinalHorizon is the default Config.FinalHorizon.
	DefaultFinalHorizon = 30 * 24 * time.Hour
	// DefaultSweepInterval is the default Config.SweepInterval.
	DefaultSweepInterval = time.Minute
	// sweepBatch bounds the gids one sweep statement handles, so that none holds many locks.
	sweepBatch = 500
)

// keepsFinals reports whether the worker subscribes to final notices.
func (c Config) keepsFinals() bool { return c.BarrierGrace >= 0 }

// subscribeFinals binds the worker's queue to its final notices, unless it keeps every row.
func (w *Worker) subscribeFinals(ctx context.Context) error {
	if !w.cfg.keepsFinals() {
		return nil
	}
	return w.cfg.Transport.SubscribeFinals(ctx, w.cfg.Name)
}

// processFinal records a final notice and acknowledges it. A malformed notice, or one addressed
// to another participant, is dead-lettered; a database error requeues it after RetryBackoff.
func (w *Worker) processFinal(ctx context.Context, d *transport.Delivery) {
	log := w.log.With("message_id", d.MessageID)
	f, err := protocol.DecodeFinal(d.Message)
	switch {
	case err != nil:
		log.Error("dead-lettering a final notice that cannot be decoded", "err", err)
		w.settle(d, "reject", (*transport.Delivery).Reject)
		return
	case d.Headers[protocol.HeaderParticipant] != w.cfg.Name:
		log.Error("dead-lettering a final notice addressed to another participant", "addressed_to", d.Headers[protocol.HeaderParticipant])
		w.settle(d, "reject", (*transport.Delivery).Reject)
		return
	}
	gids := append(append([]string{}, f.Sagas...), f.Transactions...)
	if _, err := w.cfg.DB.Exec(ctx, w.barrier.sql.noteFinals, gids); err != nil {
		w.barrierFailed(ctx, log, d, err)
		return
	}
	log.Debug("final notice recorded", "sagas", len(f.Sagas), "transactions", len(f.Transactions))
	w.settle(d, "ack", (*transport.Delivery).Ack)
}

// sweeper deletes the barrier rows of gids final for longer than BarrierGrace, and forgets gids
// final for longer than FinalHorizon, every SweepInterval until Stop or the end of ctx.
func (w *Worker) sweeper(ctx context.Context) {
	defer w.wg.Done()
	w.every(ctx, w.cfg.SweepInterval, false, func() {
		if _, err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("sweeping the barrier failed; trying again", "err", err, "interval", w.cfg.SweepInterval)
		}
	})
}

// Sweep runs one sweep now, as the worker does every Config.SweepInterval, and returns how many
// final sagas and transactions had their barrier rows deleted. It runs until nothing is due.
func (w *Worker) Sweep(ctx context.Context) (int, error) {
	swept := 0
	for _, step := range []struct {
		sql   string
		after time.Duration
		count *int
	}{
		{w.barrier.sql.sweepBarrier, w.cfg.BarrierGrace, &swept},
		{w.barrier.sql.forgetFinals, w.cfg.FinalHorizon, new(int)},
	} {
		for {
			tag, err := w.cfg.DB.Exec(ctx, step.sql, step.after.Microseconds(), sweepBatch)
			if err != nil {
				return swept, err
			}
			*step.count += int(tag.RowsAffected())
			if tag.RowsAffected() < sweepBatch {
				break
			}
		}
	}
	return swept, nil
}
