package participant

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// queryBatch bounds the decision queries published at once.
const queryBatch = 256

// startTime returns the database time before the worker consumes anything, or nil when the
// database cannot say (then the watchdog asks only after PreparedSilence).
func (w *Worker) startTime(ctx context.Context) *time.Time {
	var now time.Time
	if err := w.cfg.DB.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		w.log.Warn("cannot read the database time; prepared transactions will be asked about after the silence only", "err", err, "silence", w.cfg.PreparedSilence)
		return nil
	}
	return &now
}

// watchdog asks the coordinator for the decision of transactions prepared here: at once for
// those prepared before the worker started (startedAt: it may have missed their decision while
// it was down), then for those silent for Config.PreparedSilence. A transaction this worker
// prepares itself is never asked about before the silence, so the question cannot overtake its
// own vote (a question to a coordinator still collecting votes aborts the transaction). It runs
// until Stop or the end of ctx.
func (w *Worker) watchdog(ctx context.Context, startedAt *time.Time) {
	defer w.wg.Done()
	w.every(ctx, w.cfg.QueryInterval, true, func() {
		if w.txHandlersOrNil() == nil {
			return
		}
		if err := w.queryDecisions(ctx, startedAt); err != nil {
			if ctx.Err() == nil {
				w.log.Warn("looking for prepared transactions to ask about failed; trying again", "err", err, "interval", w.cfg.QueryInterval)
			}
			return
		}
		startedAt = nil
	})
}

// every runs fn every interval (and once at once when now is set) until Stop or the end of ctx.
func (w *Worker) every(ctx context.Context, interval time.Duration, now bool, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	if now {
		fn()
	}
	for {
		select {
		case <-w.stopping:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// queryDecisions publishes a decision query for every prepared transaction that is due, and
// with startedAt for every one prepared before then. A query whose publish fails is asked again
// after PreparedSilence.
func (w *Worker) queryDecisions(ctx context.Context, startedAt *time.Time) error {
	for ctx.Err() == nil {
		rows, err := w.cfg.DB.Query(ctx, w.barrier.sql.claimQueries, w.cfg.Name, startedAt, w.cfg.PreparedSilence.Microseconds(), queryBatch)
		if err != nil {
			return fmt.Errorf("claim prepared transactions: %w", err)
		}
		var (
			txID string
			at   time.Time
			msgs []transport.Outgoing
		)
		_, err = pgx.ForEachRow(rows, []any{&txID, &at}, func() error {
			msg, err := protocol.EncodeTxQuery(protocol.TxQuery{TxID: txID, Participant: w.cfg.Name}, strconv.FormatInt(at.UnixMicro(), 10))
			if err != nil {
				return err
			}
			msgs = append(msgs, transport.Outgoing{Exchange: protocol.ExchangeReplies, RoutingKey: protocol.RoutingKeyReplies, Message: msg})
			return nil
		})
		if err != nil {
			return fmt.Errorf("claim prepared transactions: %w", err)
		}
		if len(msgs) == 0 {
			return nil
		}
		errs := w.cfg.Transport.Publish(ctx, msgs)
		failed := 0
		for i, err := range errs {
			if err != nil {
				failed++
				w.log.Debug("publishing a decision query failed", "message_id", msgs[i].MessageID, "err", err)
			}
		}
		if len(errs) != len(msgs) || failed > 0 {
			return fmt.Errorf("publish decision queries: %d of %d failed (%w); they are asked again after %s", max(failed, len(msgs)-len(errs)), len(msgs), errors.Join(errs...), w.cfg.PreparedSilence)
		}
		w.log.Info("asked the coordinator for the decision of prepared transactions", "count", len(msgs), "startup", startedAt != nil)
		if len(msgs) < queryBatch {
			return nil
		}
	}
	return ctx.Err()
}
