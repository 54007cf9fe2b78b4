package memstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// CreateSagas implements store.Sagas. Every request is built at one database time; the new
// sagas and their messages are written at once, and a refused value fails the whole batch, as
// pgstore's one statement does. A saga whose id exists is returned as stored, without writing.
func (s *Store) CreateSagas(ctx context.Context, batch []store.NewSaga) ([]store.Created, []store.OutboxRow, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("create %d sagas: %w", len(batch), err)
	}
	defer release()
	now := s.now()
	results := make([]store.Created, len(batch))
	built, first, err := buildSagas(now, batch, results)
	if err != nil {
		return nil, nil, fmt.Errorf("create %d sagas: %w", len(batch), err)
	}
	rows, err := s.insertSagas(ctx, now, built, results)
	if err != nil {
		return nil, nil, fmt.Errorf("create %d sagas: %w", len(batch), err)
	}
	for i, ns := range batch {
		if _, dup := results[i].Err.(errSameBatch); dup {
			r := results[first[ns.ID]]
			results[i] = store.Created{Saga: r.Saga, Err: r.Err}
		}
	}
	return results, rows, nil
}

// errSameBatch marks a request whose id an earlier request of the same batch built; it is
// replaced by that request's result once the batch is written.
type errSameBatch int

func (e errSameBatch) Error() string { return "the same saga id twice in one batch" }

// builtSaga is a request whose Build succeeded, encoded for writing.
type builtSaga struct {
	index  int // in the batch
	change store.Change
	row    row
	msgs   []message
}

// buildSagas runs each request's Build at now and encodes what it returns. A request whose id an
// earlier request of the batch built is marked errSameBatch without being built; a Build error
// is its request's alone and claims no id. first maps each built id to its request. A value
// PostgreSQL would refuse fails the batch.
func buildSagas(now time.Time, batch []store.NewSaga, results []store.Created) ([]builtSaga, map[uuid.UUID]int, error) {
	var built []builtSaga
	first := make(map[uuid.UUID]int, len(batch))
	for i, ns := range batch {
		if j, dup := first[ns.ID]; dup {
			results[i] = store.Created{Err: errSameBatch(j)}
			continue
		}
		ch, err := ns.Build(now)
		if err == nil && ch.Row == nil {
			err = errors.New("build returned no saga")
		}
		if err != nil {
			results[i] = store.Created{Err: err}
			continue
		}
		first[ns.ID] = i
		ch.Row.ID = ns.ID
		r, err := sagaCodec.encode(ch.Row)
		if err == nil {
			err = sagaCodec.checkInsert(&r)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("saga %s: %w", ns.ID, err)
		}
		msgs, err := encodeMessages(ch.Messages)
		if err != nil {
			return nil, nil, fmt.Errorf("saga %s: %w", ns.ID, err)
		}
		built = append(built, builtSaga{index: i, change: ch, row: r, msgs: msgs})
	}
	return built, first, nil
}

// insertSagas writes the built sagas that do not exist, with their messages, and fills their
// results; those that exist get the stored saga. A saga of a definition version that is not
// registered fails the batch, as the foreign key does.
func (s *Store) insertSagas(ctx context.Context, now time.Time, built []builtSaga, results []store.Created) ([]store.OutboxRow, error) {
	if err := commitable(ctx); err != nil || len(built) == 0 {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range built {
		if _, exists := s.sagas.rows[b.row.id]; !exists && !s.hasDefinition(b.row.defName, b.row.defVersion) {
			return nil, fmt.Errorf("saga %s: insert on table \"sagas\" violates foreign key constraint: definition %q version %d does not exist",
				b.row.id, b.row.defName, b.row.defVersion)
		}
	}
	var out []store.OutboxRow
	for _, b := range built {
		if old, exists := s.sagas.rows[b.row.id]; exists {
			sg, err := sagaCodec.decode(old)
			if err != nil {
				err = fmt.Errorf("read existing saga %s: %w", b.row.id, err)
			}
			results[b.index] = store.Created{Saga: sg, Err: err}
			continue
		}
		s.sagas.insert(b.row, now)
		out = append(out, s.outbox.insert(b.msgs, now, s.cfg.OutboxLease)...)
		sagaCodec.stamp(b.change.Row, b.row.id, 1, now, now)
		results[b.index] = store.Created{Saga: b.change.Row, Created: true}
	}
	return out, nil
}

// GetSaga implements store.Sagas.
func (s *Store) GetSaga(ctx context.Context, id uuid.UUID) (*store.Saga, error) {
	return s.sagas.get(ctx, s, id)
}

// ListSagas implements store.Sagas.
func (s *Store) ListSagas(ctx context.Context, f store.ListFilter) ([]*store.Saga, error) {
	err := errors.Join(checkText("status", string(f.Status)), checkText("definition", f.Definition))
	if err != nil {
		return nil, fmt.Errorf("list sagas: %w", err)
	}
	out, err := page(ctx, s, s.sagas, func(r *row) bool {
		return (f.Status == "" || r.status == string(f.Status)) && (f.Definition == "" || r.defName == f.Definition) &&
			(f.DefinitionVersion <= 0 || r.defVersion == f.DefinitionVersion) &&
			(f.CreatedFrom.IsZero() || !r.createdAt.Before(dbTime(f.CreatedFrom))) &&
			(f.CreatedBefore.IsZero() || r.createdAt.Before(dbTime(f.CreatedBefore)))
	}, f.AfterCreatedAt, f.AfterID, f.Limit, f.OldestFirst)
	if err != nil {
		return nil, fmt.Errorf("list sagas: %w", err)
	}
	return out, nil
}

// Mutate implements store.Sagas.
func (s *Store) Mutate(ctx context.Context, ids []uuid.UUID, fn store.MutateFunc[*store.Saga]) ([]store.OutboxRow, error) {
	return mutateIDs(ctx, s, s.sagas, ids, fn)
}

// MutateDue implements store.Sagas.
func (s *Store) MutateDue(ctx context.Context, limit int, fn store.MutateFunc[*store.Saga]) (int, []store.OutboxRow, error) {
	return mutate(ctx, s, s.sagas, due(s, s.sagas, limit), fn)
}

// CountUnfinished implements store.Sagas.
func (s *Store) CountUnfinished(ctx context.Context, definition string) (map[int]map[saga.Status]int, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]map[saga.Status]int{}
	for _, r := range s.sagas.rows {
		st := saga.Status(r.status)
		if r.defName != definition || (st != saga.StatusRunning && st != saga.StatusCompensating && st != saga.StatusFailed) {
			continue
		}
		if out[r.defVersion] == nil {
			out[r.defVersion] = map[saga.Status]int{}
		}
		out[r.defVersion][st]++
	}
	return out, nil
}
