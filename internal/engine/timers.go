package engine

import (
	"context"
	"time"
)

// timerLoop fires due timers (step timeouts, retry backoffs, saga deadlines, prepare timeouts,
// decision re-sends) of any saga or transaction, claiming them with SKIP LOCKED so that instances
// share the work.
//
// Polling is the fallback. A timer set by this instance that falls due before the next poll (a
// short retry backoff, say) kicks the loop to run at that time instead; the instance that set a
// timer is alive to fire it, and if it dies, every other instance's poll picks it up.
func (e *Engine) timerLoop(ctx context.Context) {
	t := time.NewTimer(e.cfg.TimerPoll)
	defer t.Stop()
	next := time.Now().Add(e.cfg.TimerPoll)
	for {
		select {
		case <-ctx.Done():
			return
		case at := <-e.kick:
			// A little late rather than early: the database's clock decides what is due.
			at = at.Add(2 * time.Millisecond)
			if at.Before(next) {
				next = at
				t.Reset(max(time.Until(next), 0))
			}
			continue
		case <-t.C:
		}
		next = time.Now().Add(e.cfg.TimerPoll)
		t.Reset(e.cfg.TimerPoll)
		e.fireDue(ctx, "transaction", func() (int, error) { return applyDue(ctx, e, e.txs, e.txTick) })
		e.fireDue(ctx, "saga", func() (int, error) { return applyDue(ctx, e, e.sagas, e.sagaTick) })
	}
}

// fireDue runs batches of due timers until a batch is not full.
func (e *Engine) fireDue(ctx context.Context, kind string, batch func() (int, error)) {
	for ctx.Err() == nil {
		n, err := batch()
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("fire timers", "kind", kind, "err", err)
			}
			return
		}
		if n < e.cfg.TimerBatch {
			return
		}
	}
}

// wakeSoon kicks the timer loop when a timer falls due before its next poll. It may be called
// from a transaction that then rolls back: a spurious wake-up only finds nothing due.
func (e *Engine) wakeSoon(at, now time.Time) {
	if at.IsZero() || at.Sub(now) >= e.cfg.TimerPoll {
		return
	}
	select {
	case e.kick <- time.Now().Add(at.Sub(now)):
	default:
	}
}
