package memstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
)

// locker locks the rows a mutation passes to its function and returns their ids, in the order
// the function sees them, and the database time of the mutation.
type locker func(ctx context.Context) ([]uuid.UUID, time.Time, error)

// byIDs is the locker of Mutate: it waits for the rows' locks, then reads the clock, so that the
// time fn is given is not older than the rows it changes.
func byIDs[T any](s *Store, t *table[T], ids []uuid.UUID) locker {
	return func(ctx context.Context) ([]uuid.UUID, time.Time, error) {
		held, err := t.lockIDs(ctx, s, ids)
		return held, s.now(), err
	}
}

// due is the locker of MutateDue: it claims due rows at once, skipping locked ones.
func due[T any](s *Store, t *table[T], limit int) locker {
	return func(context.Context) ([]uuid.UUID, time.Time, error) {
		now := s.now()
		held, err := t.lockDue(s, now, limit)
		return held, now, err
	}
}

// mutate runs a mutation on one connection: it locks rows with lock, passes them to fn, and
// writes fn's changes and their messages together, or nothing. Like pgstore, it runs again when
// the changes conflict (fn returned a row it was not given, or at another version), at most
// maxConflictRetries more times. It returns how many rows it locked and the outbox rows written.
func mutate[T any](ctx context.Context, s *Store, t *table[T], lock locker, fn store.MutateFunc[T]) (int, []store.OutboxRow, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("update %s: %w", t.name, err)
	}
	defer release()
	var (
		claimed int
		out     []store.OutboxRow
	)
	for range maxConflictRetries + 1 {
		claimed, out, err = mutateOnce(ctx, s, t, lock, fn)
		if !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	if err != nil {
		return 0, nil, fmt.Errorf("update %s: %w", t.name, err)
	}
	return claimed, out, nil
}

// mutateOnce is one attempt of mutate. The rows stay locked until it returns.
func mutateOnce[T any](ctx context.Context, s *Store, t *table[T], lock locker, fn store.MutateFunc[T]) (int, []store.OutboxRow, error) {
	ids, now, err := lock(ctx)
	if err != nil {
		return 0, nil, err
	}
	defer t.unlock(s, ids)
	if len(ids) == 0 {
		return 0, nil, nil // pgstore does not call fn without rows
	}
	rows, err := t.read(s, ids)
	if err != nil {
		return 0, nil, err
	}
	versions := make(map[uuid.UUID]int64, len(rows))
	for _, v := range rows {
		id, version, _ := t.key(v)
		versions[id] = version
	}
	changes, err := fn(now, rows)
	if err != nil {
		return 0, nil, err
	}
	if len(changes) == 0 {
		return len(ids), nil, commitable(ctx)
	}
	changed, msgs, err := t.prepare(versions, changes)
	if err != nil {
		return 0, nil, err
	}
	if err := commitable(ctx); err != nil {
		return 0, nil, err
	}
	out, err := write(s, t, changed, msgs, now)
	if err != nil {
		return 0, nil, err
	}
	for i, c := range changes {
		t.stamp(c.Row, changed[i].id, changed[i].version+1, time.Time{}, now)
	}
	return len(ids), out, nil
}

// commitable returns the error a COMMIT sent with ctx would fail with: none unless ctx ended.
func commitable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// prepare checks that changes are of rows that were locked (versions holds their ids and the
// versions they were read at), at that version, each once, and encodes them and their messages.
func (t *table[T]) prepare(versions map[uuid.UUID]int64, changes []store.Changed[T]) ([]row, []message, error) {
	changed := make([]row, len(changes))
	var msgs []message
	for i, c := range changes {
		id, version, ok := t.key(c.Row)
		if v, locked := versions[id]; !ok || !locked || v != version {
			return nil, nil, fmt.Errorf("%w: %s %s version %d was not locked at that version", store.ErrConflict, t.kind, id, version)
		}
		delete(versions, id) // a row changed twice in one batch is a conflict too
		r, err := t.encode(c.Row)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", t.kind, id, err)
		}
		r.version = version
		changed[i] = r
		for _, m := range c.Messages {
			enc, err := encodeMessage(m)
			if err != nil {
				return nil, nil, err
			}
			msgs = append(msgs, enc)
		}
	}
	return changed, msgs, nil
}

// write stores the changed rows, each only if it is still at the version it was read at
// (compare-and-set), and inserts msgs into the outbox, all at once or, on a conflict, nothing.
func write[T any](s *Store, t *table[T], changed []row, msgs []message, now time.Time) ([]store.OutboxRow, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range changed {
		if r, ok := t.rows[c.id]; !ok || r.version != c.version {
			return nil, fmt.Errorf("%w: %s %s changed under us", store.ErrConflict, t.kind, c.id)
		}
	}
	for _, c := range changed {
		r := t.rows[c.id]
		r.status, r.state, r.wakeAt, r.finishedAt = c.status, c.state, c.wakeAt, c.finishedAt
		r.version++
		r.updatedAt = now
	}
	return s.outbox.insert(msgs, now, s.cfg.OutboxLease), nil
}

// mutateIDs is Mutate and MutateTx: it locks the rows of t with ids and lets fn change them.
func mutateIDs[T any](ctx context.Context, s *Store, t *table[T], ids []uuid.UUID, fn store.MutateFunc[T]) ([]store.OutboxRow, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	_, rows, err := mutate(ctx, s, t, byIDs(s, t, ids), fn)
	return rows, err
}
