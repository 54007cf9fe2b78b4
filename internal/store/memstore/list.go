package memstore

import (
	"context"
	"slices"
	"time"

	"github.com/google/uuid"
)

// page returns the rows of t that keep selects, newest first by (created_at, id) (oldest first
// with oldest), at most limit, and only those that come after (afterAt, afterID) in that order
// when afterAt is set: pgstore's keyset paging, where afterAt counts to the microsecond.
func page[T any](ctx context.Context, s *Store, t *table[T], keep func(*row) bool, afterAt time.Time, afterID uuid.UUID, limit int, oldest bool) ([]T, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if limit < 0 {
		return nil, errNegativeLimit
	}
	after := dbTime(afterAt)
	s.mu.Lock()
	defer s.mu.Unlock()
	var match []*row
	for _, r := range t.rows {
		if keep(r) && (after.IsZero() || afterCursor(after, afterID, r, oldest)) {
			match = append(match, r)
		}
	}
	slices.SortFunc(match, func(a, b *row) int {
		if oldest {
			a, b = b, a
		}
		if c := b.createdAt.Compare(a.createdAt); c != 0 {
			return c
		}
		return compareIDs(b.id, a.id)
	})
	var out []T
	for _, r := range match[:min(limit, len(match))] {
		v, err := t.decode(r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// afterCursor reports whether r comes after the cursor (at, id): older than it, or newer with
// oldest.
func afterCursor(at time.Time, id uuid.UUID, r *row, oldest bool) bool {
	if !oldest {
		return newer(at, id, r)
	}
	return !newer(at, id, r) && (!at.Equal(r.createdAt) || id != r.id)
}

// newer reports whether (at, id) comes after r's (created_at, id), as PostgreSQL compares rows.
func newer(at time.Time, id uuid.UUID, r *row) bool {
	if c := at.Compare(r.createdAt); c != 0 {
		return c > 0
	}
	return compareIDs(id, r.id) > 0
}
