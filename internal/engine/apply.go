package engine

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/transport"
)

// Every change of a saga or a transaction goes through applyEvents or applyDue: the events of a
// batch (replies, decision queries, an operator's call, timer ticks) are applied to their locked
// rows in one store transaction, each changed row is written once with all the messages its events
// caused, and what the events decided is observed after the commit. The machines decide; a
// table[T] says how a kind of row is keyed and stored.

// table is one kind of state row (sagas or transactions) as the batch-apply sees it.
type table[T any] struct {
	// kind names the rows in logs and metrics: "saga" or "transaction".
	kind      string
	mutate    func(ctx context.Context, ids []uuid.UUID, fn store.MutateFunc[T]) ([]store.OutboxRow, error)
	mutateDue func(ctx context.Context, limit int, fn store.MutateFunc[T]) (int, []store.OutboxRow, error)
	id        func(T) uuid.UUID
	// hub hands committed rows to their watchers.
	hub *hub[T]
	// settle sets a changed row's derived columns (wake_at, finished_at) once its events are
	// applied; it runs inside the transaction.
	settle func(row T, now time.Time)
}

// event is one thing to apply to the row with id. apply changes the row in place, inside the
// store transaction: it must do no I/O, and it may run again if the transaction is retried.
type event[T any] struct {
	id    uuid.UUID
	apply func(row T, now time.Time) (applied, error)
}

// applied is what one event decided for its row.
type applied struct {
	// changed false means the event changed nothing (a duplicate, a stale reply).
	changed bool
	// msgs are committed to the outbox with the row.
	msgs []transport.Outgoing
	// observe reports the event once the transaction committed.
	observe func(context.Context)
}

// verdict is what became of one event of a batch that committed.
type verdict int

const (
	// applied, or changed nothing: its row exists.
	verdictApplied verdict = iota
	// no row has its id.
	verdictMissing
	// apply refused it with a rejection.
	verdictRejected
)

// rejection is an apply error that refuses one event (a reply naming a step its saga does not
// have, say) without failing the others of its batch.
type rejection struct {
	// reason labels the dead-letter metric.
	reason string
	why    string
}

func (r *rejection) Error() string { return r.why }

// results holds the verdict of each event of a batch and, for a rejected one, why.
type results struct {
	verdicts []verdict
	why      []error
}

// applyEvents applies evs in one store transaction and publishes the messages they caused. It
// returns each event's verdict; an error means nothing was committed.
func applyEvents[T any](ctx context.Context, e *Engine, t *table[T], evs []event[T]) (results, error) {
	ids := make([]uuid.UUID, 0, len(evs))
	seen := make(map[uuid.UUID]bool, len(evs))
	for _, ev := range evs {
		if !seen[ev.id] {
			seen[ev.id] = true
			ids = append(ids, ev.id)
		}
	}
	var b batch[T]
	err := e.withDefinitions(ctx, func() error {
		// The store does not call the function when it locked no row: every event is missing.
		b.reset(len(evs))
		rows, err := t.mutate(ctx, ids, func(now time.Time, locked []T) ([]store.Changed[T], error) {
			return b.decide(t, now, locked, evs)
		})
		if err == nil {
			e.cfg.Relay.Enqueue(rows)
		}
		return err
	})
	if err != nil {
		return results{}, err
	}
	b.committed(ctx, t)
	return b.results, nil
}

// applyDue applies tick to at most TimerBatch rows whose timer is due, claimed so that other
// instances skip them, and returns how many it claimed. Every claimed row is written, changed or
// not: its wake_at is recomputed.
func applyDue[T any](ctx context.Context, e *Engine, t *table[T], tick func(row T, now time.Time) (applied, error)) (int, error) {
	var (
		b       batch[T]
		claimed int
	)
	err := e.withDefinitions(ctx, func() error {
		n, rows, err := t.mutateDue(ctx, e.cfg.TimerBatch, func(now time.Time, locked []T) ([]store.Changed[T], error) {
			evs := make([]event[T], len(locked))
			for i, row := range locked {
				evs[i] = event[T]{id: t.id(row), apply: tick}
			}
			return b.decide(t, now, locked, evs)
		})
		if err == nil {
			claimed = n
			e.cfg.Relay.Enqueue(rows)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	b.committed(ctx, t)
	return claimed, nil
}

// batch is what one run of a mutate function decided. The store may run the function again (a
// retried transaction), so decide starts afresh each time.
type batch[T any] struct {
	results
	observers []func(context.Context)
	changed   []T
}

// reset forgets what an earlier run decided: every one of n events is missing.
func (b *batch[T]) reset(n int) {
	b.verdicts, b.why, b.observers, b.changed = make([]verdict, n), make([]error, n), b.observers[:0], b.changed[:0]
	for i := range b.verdicts {
		b.verdicts[i] = verdictMissing
	}
}

// decide applies evs to the locked rows and returns one change per changed row, with the
// messages of all its events.
func (b *batch[T]) decide(t *table[T], now time.Time, locked []T, evs []event[T]) ([]store.Changed[T], error) {
	b.reset(len(evs))
	byID := make(map[uuid.UUID]T, len(locked))
	for _, row := range locked {
		byID[t.id(row)] = row
	}
	index := make(map[uuid.UUID]int, len(locked)) // id -> position in changes
	var changes []store.Changed[T]
	for i, ev := range evs {
		row, ok := byID[ev.id]
		if !ok {
			continue
		}
		b.verdicts[i] = verdictApplied
		a, err := ev.apply(row, now)
		var rej *rejection
		if errors.As(err, &rej) {
			b.verdicts[i], b.why[i] = verdictRejected, rej
			continue
		}
		if err != nil {
			return nil, err
		}
		if !a.changed {
			continue
		}
		k, ok := index[ev.id]
		if !ok {
			k = len(changes)
			index[ev.id] = k
			changes = append(changes, store.Changed[T]{Row: row})
		}
		changes[k].Messages = append(changes[k].Messages, a.msgs...)
		if a.observe != nil {
			b.observers = append(b.observers, a.observe)
		}
	}
	for _, c := range changes {
		t.settle(c.Row, now)
		b.changed = append(b.changed, c.Row)
	}
	return changes, nil
}

// committed reports what the committed batch decided and hands the changed rows to watchers.
func (b *batch[T]) committed(ctx context.Context, t *table[T]) {
	for _, o := range b.observers {
		o(ctx)
	}
	for _, row := range b.changed {
		t.hub.committed(t.id(row), row)
	}
}

// withDefinitions runs a batch, and runs it again each time it failed because a definition it
// needs was not cached, once that definition is loaded (outside the batch's transaction).
func (e *Engine) withDefinitions(ctx context.Context, run func() error) error {
	for {
		err := run()
		var need needDefinition
		if !errors.As(err, &need) {
			return err
		}
		if err := e.defs.load(ctx, need); err != nil {
			return err
		}
	}
}

// settleTimes is the end of settleSaga and settleTx: it sets a changed row's wake_at to wake,
// kicks the timer loop when that is soon, and sets finished_at at now the first time the row is
// terminal.
func (e *Engine) settleTimes(wakeAt, finishedAt *time.Time, wake time.Time, terminal bool, now time.Time) {
	*wakeAt = wake
	e.wakeSoon(wake, now)
	if terminal && finishedAt.IsZero() {
		*finishedAt = now
	}
}
