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
// waits and never holds many locks for long. Each kind goes in a transaction of its own, with the
// outbox rows of its notices.
func (s *Store) DeleteFinished(ctx context.Context, olderThan time.Duration, limit int, notices store.Notices) (int, error) {
	total := 0
	for _, k := range []struct {
		saga bool
		sql  string
	}{
		{true, `WITH gone AS (
			DELETE FROM sagas WHERE id IN (SELECT id FROM sagas WHERE finished_at < now() - $1::interval ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING id, definition_name, definition_version)
			SELECT g.id, ARRAY(SELECT DISTINCT s->>'participant' FROM jsonb_array_elements(d.content->'steps') s ORDER BY 1)
			FROM gone g JOIN saga_definitions d ON d.name = g.definition_name AND d.version = g.definition_version`},
		{false, `DELETE FROM transactions WHERE id IN (SELECT id FROM transactions WHERE finished_at < now() - $1::interval ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING id, ARRAY(SELECT DISTINCT p->>'name' FROM jsonb_array_elements(state->'participants') p ORDER BY 1)`},
	} {
		var n int
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, k.sql, olderThan, limit)
			if err != nil {
				return err
			}
			gone, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Finished, error) {
				f := store.Finished{Saga: k.saga}
				err := row.Scan(&f.ID, &f.Participants)
				return f, err
			})
			if err != nil || len(gone) == 0 || notices == nil {
				n = len(gone)
				return err
			}
			msgs, err := notices(gone)
			if err != nil {
				return err
			}
			n = len(gone)
			_, err = s.insertOutbox(ctx, tx, msgs)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("delete finished rows: %w", err)
		}
		total += n
	}
	return total, nil
}
