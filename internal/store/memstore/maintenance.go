package memstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// DeleteFinished implements store.Store: it deletes up to limit sagas and up to limit
// transactions that finished more than olderThan ago by the clock, oldest first, skipping rows
// a mutation holds locked.
func (s *Store) DeleteFinished(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("delete finished rows: %w", err)
	}
	defer release()
	if limit < 0 {
		return 0, fmt.Errorf("delete finished rows: %w", errNegativeLimit)
	}
	cutoff := s.now().Add(-olderThan)
	s.mu.Lock()
	defer s.mu.Unlock()
	return deleteFinished(s.sagas, cutoff, limit) + deleteFinished(s.txs, cutoff, limit), nil
}

// deleteFinished deletes up to limit unlocked rows of t that finished before cutoff. Store.mu
// must be held.
func deleteFinished[T any](t *table[T], cutoff time.Time, limit int) int {
	var old []*row
	for id, r := range t.rows {
		if _, held := t.locks[id]; !held && !r.finishedAt.IsZero() && r.finishedAt.Before(cutoff) {
			old = append(old, r)
		}
	}
	slices.SortFunc(old, func(a, b *row) int {
		if c := a.finishedAt.Compare(b.finishedAt); c != 0 {
			return c
		}
		return compareIDs(a.id, b.id)
	})
	n := min(limit, len(old))
	for _, r := range old[:n] {
		delete(t.rows, r.id)
	}
	return n
}

// Stats implements store.Store: unfinished sagas and transactions by state, with the age of the
// oldest by the clock.
func (s *Store) Stats(ctx context.Context) (store.Stats, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return store.Stats{}, fmt.Errorf("stats: %w", err)
	}
	defer release()
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := store.Stats{Sagas: map[saga.Status]store.Pending{}, Transactions: map[twopc.State]store.Pending{}}
	for status, p := range pending(s.sagas.rows, now, saga.StatusRunning, saga.StatusCompensating, saga.StatusFailed) {
		out.Sagas[saga.Status(status)] = p
	}
	for state, p := range pending(s.txs.rows, now, twopc.StatePreparing, twopc.StateCommitting, twopc.StateAborting) {
		out.Transactions[twopc.State(state)] = p
	}
	return out, nil
}

// pending counts the rows in each of the given states and the age of the oldest at now.
func pending[S ~string](rows map[uuid.UUID]*row, now time.Time, states ...S) map[string]store.Pending {
	out := map[string]store.Pending{}
	oldest := map[string]time.Time{}
	for _, r := range rows {
		if !slices.Contains(states, S(r.status)) {
			continue
		}
		p := out[r.status]
		p.Count++
		if o, ok := oldest[r.status]; !ok || r.createdAt.Before(o) {
			oldest[r.status] = r.createdAt
		}
		out[r.status] = p
	}
	for status, p := range out {
		p.OldestAge = now.Sub(oldest[status])
		out[status] = p
	}
	return out
}
