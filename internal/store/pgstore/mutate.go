package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/transport"
)

// Mutate implements store.Sagas.
func (s *Store) Mutate(ctx context.Context, ids []uuid.UUID, fn store.MutateFunc[*store.Saga]) ([]store.OutboxRow, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	_, rows, err := mutate(ctx, s, sagaRows, fn, `SELECT now(), `+sagaColumns+` FROM sagas WHERE id = ANY($1) ORDER BY id FOR UPDATE`, uuidArray(ids))
	return rows, err
}

// uuidArray converts ids to the form pgx encodes directly; []uuid.UUID goes through reflection
// and a text round trip per element.
func uuidArray(ids []uuid.UUID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// MutateDue implements store.Sagas.
func (s *Store) MutateDue(ctx context.Context, limit int, fn store.MutateFunc[*store.Saga]) (int, []store.OutboxRow, error) {
	return mutate(ctx, s, sagaRows, fn, `SELECT now(), `+sagaColumns+` FROM sagas WHERE wake_at <= now() ORDER BY wake_at LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
}

// table is what mutate needs to know about a table of state rows (sagas, transactions).
type table[T any] struct {
	name string
	scan func(pgx.Row) (T, error)
	// key returns a row's id and version.
	key func(T) (uuid.UUID, int64)
	// update queues the statement that writes rows at now, and marks them written once it
	// succeeded.
	update func(b *pgx.Batch, now time.Time, rows []T) error
}

var sagaRows = table[*store.Saga]{
	name:   "sagas",
	scan:   scanSaga,
	key:    func(sg *store.Saga) (uuid.UUID, int64) { return sg.ID, sg.Version },
	update: updateSagas,
}

// mutate locks rows with query, lets fn change them, and writes the changes and their messages in
// one transaction, retried on deadlock or conflict. It returns how many rows it locked and the
// outbox rows written.
//
// The transaction costs two round trips whatever the number of rows: BEGIN, the locking query
// and the time read after it travel together; then the update, the outbox insert and COMMIT.
// The rows stay locked from the first round trip to the COMMIT, so the version each changed row
// must still have is checked before the second is sent (the update checks it again).
func mutate[T any](ctx context.Context, s *Store, t table[T], fn func(time.Time, []T) ([]store.Changed[T], error), query string, arg any) (int, []store.OutboxRow, error) {
	var (
		claimed int
		out     []store.OutboxRow
	)
	err := s.inPipeTx(ctx, func(p *pipeTx) error {
		claimed, out = 0, nil
		var (
			now    time.Time
			locked []T
		)
		read := &pgx.Batch{}
		read.Queue(query, arg).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var rowNow time.Time
				v, err := t.scan(scanPrefix{rows, &rowNow})
				if err != nil {
					return err
				}
				locked = append(locked, v)
			}
			return rows.Err()
		})
		// now() is the transaction's start; the locks may have been waited for since. The time
		// the changes are made at must not be older than the rows they change: this statement
		// starts only once the locking one has finished.
		read.Queue(`SELECT statement_timestamp()`).QueryRow(func(row pgx.Row) error { return row.Scan(&now) })
		if err := p.run(ctx, read); err != nil {
			return err
		}
		claimed = len(locked)
		if len(locked) == 0 {
			return nil
		}
		changes, err := fn(now, locked)
		if err != nil || len(changes) == 0 {
			return err
		}
		lockedVersion := make(map[uuid.UUID]int64, len(locked))
		for _, v := range locked {
			id, version := t.key(v)
			lockedVersion[id] = version
		}
		changed := make([]T, len(changes))
		var msgs []transport.Outgoing
		for i, c := range changes {
			id, version := t.key(c.Row)
			if v, ok := lockedVersion[id]; !ok || v != version {
				return fmt.Errorf("%w: %s %s version %d was not locked at that version", store.ErrConflict, t.name, id, version)
			}
			delete(lockedVersion, id) // a row changed twice in one batch is a conflict too
			changed[i] = c.Row
			msgs = append(msgs, c.Messages...)
		}
		write := &pgx.Batch{}
		if err := t.update(write, now, changed); err != nil {
			return err
		}
		if err := s.queueOutbox(write, msgs, &out); err != nil {
			return err
		}
		undo := s.piggyback(write)
		if err := p.commit(ctx, write); err != nil {
			undo()
			return err
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("update %s: %w", t.name, translate(err))
	}
	return claimed, out, nil
}

// scanPrefix scans a leading now() column before the saga columns.
type scanPrefix struct {
	rows pgx.Rows
	now  *time.Time
}

func (p scanPrefix) Scan(dest ...any) error {
	return p.rows.Scan(append([]any{p.now}, dest...)...)
}

func updateSagas(b *pgx.Batch, now time.Time, changed []*store.Saga) error {
	rows := make([]rowUpdate, len(changed))
	for i, sg := range changed {
		rows[i] = rowUpdate{sg.ID, string(sg.State.Status), sg.State, sg.Version, sg.WakeAt, sg.FinishedAt}
	}
	return queueUpdate(b, now, "sagas", rows, func() {
		for _, sg := range changed {
			sg.Version++
			sg.UpdatedAt = now
		}
	})
}

// rowUpdate is the new content of one state row (a saga or a transaction).
type rowUpdate struct {
	id      uuid.UUID
	status  string
	state   any
	version int64
	wake    time.Time
	fin     time.Time
}

// queueUpdate queues one statement that writes rows, each only if its version is still the one
// read (compare-and-set); a mismatch is reported as store.ErrConflict. mutate checks the versions
// against the rows it holds locked before it sends the statement, with COMMIT in the same round
// trip, so the check here only confirms that. done runs once the statement succeeded.
func queueUpdate(b *pgx.Batch, now time.Time, tableName string, rows []rowUpdate, done func()) error {
	n := len(rows)
	ids := make([][16]byte, n)
	statuses := make([]string, n)
	states := make([]string, n)
	versions := make([]int64, n)
	wakes := make([]pgtype.Timestamptz, n)
	fins := make([]pgtype.Timestamptz, n)
	for i, r := range rows {
		b, err := json.Marshal(r.state)
		if err != nil {
			return err
		}
		ids[i], statuses[i], states[i], versions[i] = r.id, r.status, string(b), r.version
		wakes[i], fins[i] = tsOrNull(r.wake), tsOrNull(r.fin)
	}
	// tableName is one of two constants, never outside input.
	b.Queue(`UPDATE `+tableName+` t SET status = u.status, state = u.state::jsonb, version = t.version + 1,
			wake_at = u.wake_at, finished_at = u.finished_at, updated_at = $7
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
			AS u(id, status, state, version, wake_at, finished_at)
		WHERE t.id = u.id AND t.version = u.version`, ids, statuses, states, versions, wakes, fins, now).Exec(func(tag pgconn.CommandTag) error {
		if int(tag.RowsAffected()) != n {
			return fmt.Errorf("%w: %d of %d %s changed under us", store.ErrConflict, n-int(tag.RowsAffected()), n, tableName)
		}
		done()
		return nil
	})
	return nil
}
