package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/transport"
)

// Mutate implements store.Sagas.
func (s *Store) Mutate(ctx context.Context, ids []uuid.UUID, fn store.MutateFunc[*store.Saga]) ([]store.OutboxRow, error) {
	return mutateIDs(ctx, s, sagaRows, ids, fn)
}

// mutateIDs is Mutate and MutateTx: it locks the rows of ids in id order and lets fn change them.
func mutateIDs[T any](ctx context.Context, s *Store, t table[T], ids []uuid.UUID, fn store.MutateFunc[T]) ([]store.OutboxRow, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	_, rows, err := mutate(ctx, s, t, fn, `SELECT clock_timestamp(), `+t.columns+` FROM `+t.name+` WHERE id = ANY($1) ORDER BY id FOR UPDATE`, uuidArray(ids))
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
	return mutateDue(ctx, s, sagaRows, limit, fn)
}

// mutateDue is MutateDue and MutateDueTx: it locks at most limit rows whose timer is due, earliest
// first and skipping rows others hold, and lets fn change them.
func mutateDue[T any](ctx context.Context, s *Store, t table[T], limit int, fn store.MutateFunc[T]) (int, []store.OutboxRow, error) {
	if due, err := s.anyDue(ctx, t.name); err != nil || !due {
		return 0, nil, err
	}
	return mutate(ctx, s, t, fn, `SELECT clock_timestamp(), `+t.columns+` FROM `+t.name+` WHERE wake_at <= now() ORDER BY wake_at LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
}

var sagaRows = table[*store.Saga]{
	name: "sagas", noun: "saga", columns: sagaColumns,
	scan: scanSaga,
	head: func(sg *store.Saga) (uuid.UUID, *int64, *time.Time) { return sg.ID, &sg.Version, &sg.UpdatedAt },
	row: func(sg *store.Saga) rowUpdate {
		return rowUpdate{sg.ID, string(sg.State.Status), sg.State, sg.Version, sg.WakeAt, sg.FinishedAt}
	},
}

// update queues the statement that writes changed at now with their messages (see queueWrite),
// and marks the rows written once it succeeded.
func (t table[T]) update(b *pgx.Batch, now time.Time, changed []T, msgs []transport.Outgoing, deletes []int64, lease time.Duration, instance string, out *[]store.OutboxRow) error {
	rows := make([]rowUpdate, len(changed))
	for i, v := range changed {
		rows[i] = t.row(v)
	}
	return queueWrite(b, write{now: now, table: t.name, rows: rows, msgs: msgs, deletes: deletes, lease: lease, instance: instance, out: out}, func() {
		for _, v := range changed {
			_, version, at := t.head(v)
			*version++
			*at = now
		}
	})
}

// anyDue reports whether a row of the table (a constant, never outside input) has a timer due:
// one statement, outside any transaction, so that the timer loop's polls cost little when, as
// most of the time, nothing is due.
func (s *Store) anyDue(ctx context.Context, table string) (bool, error) {
	var due bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+table+` WHERE wake_at <= now())`).Scan(&due); err != nil {
		return false, fmt.Errorf("look for due %s: %w", table, err)
	}
	return due, nil
}

// latest returns the latest of times.
func latest(times ...time.Time) time.Time {
	var out time.Time
	for _, t := range times {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// mutate locks rows with query, lets fn change them, and writes the changes and their messages in
// one transaction, retried on deadlock or conflict. It returns how many rows it locked and the
// outbox rows written.
//
// The transaction costs two round trips whatever the number of rows: BEGIN and the locking query
// travel together; then one statement that writes the rows and the outbox, with COMMIT.
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
		// The time the changes are made at is the database's clock as the rows are read, but
		// never older than the rows they change: a row locked by a transaction that committed
		// while this one waited carries that transaction's time.
		read := &pgx.Batch{}
		read.Queue(query, arg).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var rowNow time.Time
				v, err := t.scan(scanPrefix{rows, &rowNow})
				if err != nil {
					return err
				}
				locked = append(locked, v)
				now = latest(now, rowNow, t.updatedAt(v))
			}
			return rows.Err()
		})
		if err := p.run(ctx, read); err != nil {
			return err
		}
		claimed = len(locked)
		if len(locked) == 0 {
			return nil
		}
		// The versions as locked, read before fn may change the rows.
		lockedVersion := make(map[uuid.UUID]int64, len(locked))
		for _, v := range locked {
			id, version := t.key(v)
			lockedVersion[id] = version
		}
		changes, err := fn(now, locked)
		if err != nil || len(changes) == 0 {
			return err
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
		// One statement writes the rows, inserts their messages and deletes confirmed outbox
		// rows on the relay's behalf; it travels with COMMIT.
		deletes := s.deletes.take(maxPiggyback)
		write := &pgx.Batch{}
		err = t.update(write, now, changed, msgs, deletes, s.cfg.OutboxLease, s.instance, &out)
		if err == nil {
			err = p.commit(ctx, write)
		}
		if err != nil {
			s.deletes.add(s, deletes) // for a later transaction
		}
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("update %s: %w", t.name, translate(err))
	}
	return claimed, out, nil
}

// scanPrefix scans a leading clock column before the row's columns.
type scanPrefix struct {
	rows pgx.Rows
	now  *time.Time
}

func (p scanPrefix) Scan(dest ...any) error {
	return p.rows.Scan(append([]any{p.now}, dest...)...)
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

// write is what one state transaction writes: rows of one table, the messages their changes
// caused, and confirmed outbox rows to delete.
type write struct {
	now     time.Time
	table   string // "sagas" or "transactions", never outside input
	rows    []rowUpdate
	msgs    []transport.Outgoing
	deletes []int64
	lease   time.Duration
	// instance names the writer in the notification of the change (see Listen).
	instance string
	// out receives the outbox rows of msgs once the statement ran.
	out *[]store.OutboxRow
}

// queueWrite queues one statement that writes w: each row only if its version is still the one
// read (compare-and-set; a mismatch is store.ErrConflict), the messages into the outbox, the
// deletes, and the notification that tells other instances which rows changed (see Listen). mutate checks the versions against the rows it holds locked before it sends the
// statement, with COMMIT in the same round trip, so the check here only confirms that. done runs
// once the statement succeeded.
func queueWrite(b *pgx.Batch, w write, done func()) error {
	u, err := updateArrays(w.rows)
	if err != nil {
		return err
	}
	o, err := outboxArrays(w.msgs)
	if err != nil {
		return err
	}
	b.Queue(`WITH u AS (
			UPDATE `+w.table+` t SET status = u.status, state = u.state::jsonb, version = t.version + 1,
				wake_at = u.wake_at, finished_at = u.finished_at, updated_at = $7
			FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
				AS u(id, status, state, version, wake_at, finished_at)
			WHERE t.id = u.id AND t.version = u.version
			RETURNING 1
		), o AS (
			INSERT INTO outbox (exchange, routing_key, message_id, type, correlation_id, headers, body, content_type, lease_until)
			SELECT e, k, m, ty, c, h::jsonb, bd, ct, now() + $16::interval
			FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bytea[], $15::text[])
				WITH ORDINALITY AS m(e, k, m, ty, c, h, bd, ct, ord)
			ORDER BY ord
			RETURNING id
		), d AS (
			DELETE FROM outbox WHERE id = ANY($17::bigint[])
		), n AS MATERIALIZED (
			SELECT pg_notify($18, $19 || string_agg(id::text, ',')) FROM unnest($1::uuid[]) WITH ORDINALITY AS x(id, ord)
			GROUP BY (ord - 1) / `+notifyChunk+`
		)
		SELECT (SELECT count(*) FROM u), coalesce((SELECT array_agg(id ORDER BY id) FROM o), '{}'), (SELECT count(*) FROM n)`,
		u.ids, u.statuses, u.states, u.versions, u.wakes, u.fins, w.now,
		o.exchanges, o.keys, o.ids, o.types, o.corrs, o.headers, o.bodies, o.ctypes, w.lease, w.deletes,
		channelPrefix+w.table, w.instance+"|",
	).QueryRow(func(row pgx.Row) error {
		var (
			updated, notified int
			ids               []int64
		)
		if err := row.Scan(&updated, &ids, &notified); err != nil {
			return err
		}
		if updated != len(w.rows) {
			return fmt.Errorf("%w: %d of %d %s changed under us", store.ErrConflict, len(w.rows)-updated, len(w.rows), w.table)
		}
		rows, err := outboxRows(w.msgs, ids)
		if err != nil {
			return err
		}
		*w.out = rows
		done()
		return nil
	})
	return nil
}

// updateColumns are the columns of changed state rows, as arrays for unnest.
type updateColumns struct {
	ids         [][16]byte
	statuses    []string
	states      []string
	versions    []int64
	wakes, fins []pgtype.Timestamptz
}

func updateArrays(rows []rowUpdate) (updateColumns, error) {
	n := len(rows)
	c := updateColumns{ids: make([][16]byte, n), statuses: make([]string, n), states: make([]string, n), versions: make([]int64, n),
		wakes: make([]pgtype.Timestamptz, n), fins: make([]pgtype.Timestamptz, n)}
	for i, r := range rows {
		b, err := json.Marshal(r.state)
		if err != nil {
			return updateColumns{}, err
		}
		c.ids[i], c.statuses[i], c.states[i], c.versions[i] = r.id, r.status, string(b), r.version
		c.wakes[i], c.fins[i] = tsOrNull(r.wake), tsOrNull(r.fin)
	}
	return c, nil
}
