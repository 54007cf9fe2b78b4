package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// Stats implements store.Store. Both queries read the status indexes.
func (s *Store) Stats(ctx context.Context) (store.Stats, error) {
	out := store.Stats{Sagas: map[saga.Status]store.Pending{}, Transactions: map[twopc.State]store.Pending{}}
	for _, q := range []struct {
		sql string
		put func(status string, p store.Pending)
	}{
		{`SELECT status, count(*)::int, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM sagas
			WHERE status IN ('RUNNING', 'COMPENSATING', 'FAILED') GROUP BY status`,
			func(st string, p store.Pending) { out.Sagas[saga.Status(st)] = p }},
		{`SELECT status, count(*)::int, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM transactions
			WHERE status IN ('PREPARING', 'COMMITTING', 'ABORTING') GROUP BY status`,
			func(st string, p store.Pending) { out.Transactions[twopc.State(st)] = p }},
	} {
		rows, err := s.pool.Query(ctx, q.sql)
		if err != nil {
			return store.Stats{}, fmt.Errorf("stats: %w", err)
		}
		var (
			status string
			n      int
			age    float64
		)
		_, err = pgx.ForEachRow(rows, []any{&status, &n, &age}, func() error {
			q.put(status, store.Pending{Count: n, OldestAge: time.Duration(age * float64(time.Second))})
			return nil
		})
		if err != nil {
			return store.Stats{}, fmt.Errorf("stats: %w", err)
		}
	}
	return out, nil
}

// DeleteFinished implements store.Store: it deletes up to limit sagas and up to limit
// transactions that finished before cutoff, skipping rows others hold locked, so that it never
// waits and never holds many locks for long.
func (s *Store) DeleteFinished(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	total := 0
	for _, q := range []string{
		`DELETE FROM sagas WHERE id IN (SELECT id FROM sagas WHERE finished_at < now() - $1::interval ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
		`DELETE FROM transactions WHERE id IN (SELECT id FROM transactions WHERE finished_at < now() - $1::interval ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
	} {
		tag, err := s.pool.Exec(ctx, q, olderThan, limit)
		if err != nil {
			return total, fmt.Errorf("delete finished rows: %w", err)
		}
		total += int(tag.RowsAffected())
	}
	return total, nil
}
