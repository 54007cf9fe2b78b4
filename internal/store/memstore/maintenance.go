package memstore

import (
	"context"
	"encoding/json"
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
// a mutation holds locked, and puts the notices of each kind in the outbox with its deletion.
func (s *Store) DeleteFinished(ctx context.Context, olderThan time.Duration, limit int, notices store.Notices) (int, error) {
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
	n, err := s.deleteFinished(finishedRows(s.sagas, cutoff, limit), s.sagas.rows, true, s.sagaParticipants, notices)
	if err != nil {
		return 0, fmt.Errorf("delete finished rows: %w", err)
	}
	m, err := s.deleteFinished(finishedRows(s.txs, cutoff, limit), s.txs.rows, false, txParticipants, notices)
	if err != nil {
		return n, fmt.Errorf("delete finished rows: %w", err)
	}
	return n + m, nil
}

// deleteFinished deletes old from rows and adds their notices to the outbox, or does neither.
// Store.mu must be held.
func (s *Store) deleteFinished(old []*row, rows map[uuid.UUID]*row, saga bool, participants func(*row) ([]string, error), notices store.Notices) (int, error) {
	if len(old) > 0 && notices != nil {
		gone := make([]store.Finished, len(old))
		for i, r := range old {
			ps, err := participants(r)
			if err != nil {
				return 0, err
			}
			gone[i] = store.Finished{ID: r.id, Saga: saga, Participants: ps}
		}
		out, err := notices(gone)
		if err != nil {
			return 0, err
		}
		msgs, err := encodeMessages(out)
		if err != nil {
			return 0, err
		}
		s.outbox.insert(msgs, s.now(), s.cfg.OutboxLease)
	}
	for _, r := range old {
		delete(rows, r.id)
	}
	return len(old), nil
}

// finishedRows returns up to limit unlocked rows of t that finished before cutoff, oldest first.
// Store.mu must be held.
func finishedRows[T any](t *table[T], cutoff time.Time, limit int) []*row {
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
	return old[:min(limit, len(old))]
}

// sagaParticipants returns the participants of the definition of the saga in r, sorted, without
// repeats. Store.mu must be held.
func (s *Store) sagaParticipants(r *row) ([]string, error) {
	versions := s.defs[r.defName]
	if r.defVersion < 1 || r.defVersion > len(versions) {
		return nil, fmt.Errorf("saga %s: definition %q version %d: %w", r.id, r.defName, r.defVersion, store.ErrNotFound)
	}
	def, err := decodeDefinition(r.defName, r.defVersion, versions[r.defVersion-1])
	if err != nil {
		return nil, err
	}
	var ps []string
	for _, st := range def.Steps {
		ps = append(ps, st.Participant)
	}
	slices.Sort(ps)
	return slices.Compact(ps), nil
}

// txParticipants returns the participants of the transaction in r, sorted, without repeats.
func txParticipants(r *row) ([]string, error) {
	var tx twopc.Tx
	if err := json.Unmarshal(r.state, &tx); err != nil {
		return nil, fmt.Errorf("decode state of transaction %s: %w", r.id, err)
	}
	ps := make([]string, len(tx.Participants))
	for i, p := range tx.Participants {
		ps[i] = p.Name
	}
	slices.Sort(ps)
	return slices.Compact(ps), nil
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
