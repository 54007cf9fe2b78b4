package memstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
)

// table holds the rows of one kind, sagas or transactions, and their row locks. Store.mu guards
// rows and locks; the methods that take s lock it themselves, the others expect it held.
type table[T any] struct {
	codec[T]
	rows map[uuid.UUID]*row
	// locks holds a channel per row locked as by SELECT ... FOR UPDATE; it is closed when the
	// lock is released.
	locks map[uuid.UUID]chan struct{}
}

func newTable[T any](c codec[T]) *table[T] {
	return &table[T]{codec: c, rows: map[uuid.UUID]*row{}, locks: map[uuid.UUID]chan struct{}{}}
}

// lockIDs locks the rows of ids that exist, in id order so that two calls never wait for each
// other in a cycle, waiting while another call holds one. It returns the ids it locked, in that
// order. Ids without a row are skipped, as is a row deleted while it was waited for. When ctx
// ends first it releases what it locked and returns ctx's error.
func (t *table[T]) lockIDs(ctx context.Context, s *Store, ids []uuid.UUID) ([]uuid.UUID, error) {
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, compareIDs)
	sorted = slices.Compact(sorted)
	var held []uuid.UUID
	for _, id := range sorted {
		ok, err := t.lockRow(ctx, s, id)
		if err != nil {
			t.unlock(s, held)
			return nil, err
		}
		if ok {
			held = append(held, id)
		}
	}
	return held, nil
}

// lockRow locks the row of id, waiting while another call holds it. It returns false when there
// is no such row.
func (t *table[T]) lockRow(ctx context.Context, s *Store, id uuid.UUID) (bool, error) {
	for {
		s.mu.Lock()
		if _, ok := t.rows[id]; !ok {
			s.mu.Unlock()
			return false, nil
		}
		released, held := t.locks[id]
		if !held {
			t.locks[id] = make(chan struct{})
			s.mu.Unlock()
			return true, nil
		}
		s.mu.Unlock()
		select {
		case <-released:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// lockDue locks at most limit rows whose wake_at is not after now and that no other call holds
// (SKIP LOCKED), earliest wake_at first, and returns their ids in that order.
func (t *table[T]) lockDue(s *Store, now time.Time, limit int) ([]uuid.UUID, error) {
	if limit < 0 {
		return nil, errNegativeLimit
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*row
	for id, r := range t.rows {
		if _, held := t.locks[id]; !held && !r.wakeAt.IsZero() && !r.wakeAt.After(now) {
			due = append(due, r)
		}
	}
	slices.SortFunc(due, func(a, b *row) int {
		if c := a.wakeAt.Compare(b.wakeAt); c != 0 {
			return c
		}
		return compareIDs(a.id, b.id)
	})
	ids := make([]uuid.UUID, 0, min(limit, len(due)))
	for _, r := range due[:min(limit, len(due))] {
		t.locks[r.id] = make(chan struct{})
		ids = append(ids, r.id)
	}
	return ids, nil
}

// unlock releases the locks of ids.
func (t *table[T]) unlock(s *Store, ids []uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		close(t.locks[id])
		delete(t.locks, id)
	}
}

// read decodes the rows of ids, which the caller holds locked.
func (t *table[T]) read(s *Store, ids []uuid.UUID) ([]T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, len(ids))
	for i, id := range ids {
		v, err := t.decode(t.rows[id])
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// get decodes the row of id, or returns store.ErrNotFound.
func (t *table[T]) get(ctx context.Context, s *Store, id uuid.UUID) (T, error) {
	var zero T
	release, err := s.acquire(ctx)
	if err != nil {
		return zero, fmt.Errorf("get %s %s: %w", t.kind, id, err)
	}
	defer release()
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := t.rows[id]
	if !ok {
		return zero, fmt.Errorf("%s %s: %w", t.kind, id, store.ErrNotFound)
	}
	v, err := t.decode(r)
	if err != nil {
		return zero, fmt.Errorf("get %s %s: %w", t.kind, id, err)
	}
	return v, nil
}

// insert stores r as a new row created at now, at version 1. Store.mu must be held.
func (t *table[T]) insert(r row, now time.Time) {
	r.version, r.createdAt, r.updatedAt = 1, now, now
	t.rows[r.id] = &r
}
