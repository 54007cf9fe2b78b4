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
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
)

const sagaColumns = `id, definition_name, definition_version, status, input, request_hash, state, version, wake_at, created_at, updated_at, finished_at`

func scanSaga(row pgx.Row) (*store.Saga, error) {
	var (
		c     stateColumns
		sg    store.Saga
		st    saga.State
		input []byte
	)
	err := c.scan(row, "saga", &st, &c.id, &sg.DefinitionName, &sg.DefinitionVersion, &c.status, &input, &c.requestHash, &c.state, &c.version, &c.wake, &c.created, &c.updated, &c.fin)
	if err != nil {
		return nil, err
	}
	st.ID, st.Status, st.Input = c.id.String(), saga.Status(c.status), input
	sg.ID, sg.State, sg.RequestHash, sg.Version = c.id, &st, c.requestHash, c.version
	sg.WakeAt, sg.CreatedAt, sg.UpdatedAt, sg.FinishedAt = c.wake.Time, c.created, c.updated, c.fin.Time
	return &sg, nil
}

func tsOrNull(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

// CreateSagas implements store.Sagas: one transaction and one INSERT for the whole batch (group
// commit of concurrent StartSaga calls), in two round trips: BEGIN with the clock read, then
// one statement that inserts the sagas and the messages of those that are new, with COMMIT.
// Existing sagas (an idempotent StartSaga) are read after the commit.
func (s *Store) CreateSagas(ctx context.Context, batch []store.NewSaga) ([]store.Created, []store.OutboxRow, error) {
	var (
		results  []store.Created
		rows     []store.OutboxRow
		existing []uuid.UUID
		first    map[uuid.UUID]int // id -> index of its first request
	)
	err := s.inPipeTx(ctx, func(p *pipeTx) error {
		results, rows, existing = make([]store.Created, len(batch)), nil, nil
		first = make(map[uuid.UUID]int, len(batch))
		var now time.Time
		clock := &pgx.Batch{}
		clock.Queue(`SELECT now()`).QueryRow(func(row pgx.Row) error { return row.Scan(&now) })
		if err := p.run(ctx, clock); err != nil {
			return err
		}
		index, changes := buildNew(batch, now, results, first)
		if len(changes) == 0 {
			return nil
		}
		write := &pgx.Batch{}
		created := map[uuid.UUID]bool{}
		deletes := s.deletes.take(maxPiggyback)
		if err := s.queueCreate(write, now, changes, deletes, created, &rows); err != nil {
			s.deletes.add(s, deletes)
			return err
		}
		if err := p.commit(ctx, write); err != nil {
			s.deletes.add(s, deletes)
			return err
		}
		for k, ch := range changes {
			i := index[k]
			if !created[ch.Row.ID] {
				existing = append(existing, ch.Row.ID)
				continue
			}
			sg := ch.Row
			sg.Version, sg.CreatedAt, sg.UpdatedAt = 1, now, now
			results[i] = store.Created{Saga: sg, Created: true}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create %d sagas: %w", len(batch), err)
	}
	s.fillExisting(ctx, batch, existing, first, results)
	return results, rows, nil
}

// buildNew builds the sagas of batch at now. It returns the changes to write and, for each, its
// position in batch; a request whose Build fails, or whose id an earlier request of the batch
// has, gets its result now. first records the position of each id's request.
func buildNew(batch []store.NewSaga, now time.Time, results []store.Created, first map[uuid.UUID]int) (index []int, changes []store.Change) {
	for i, ns := range batch {
		if j, dup := first[ns.ID]; dup {
			results[i] = store.Created{Err: errSameBatch(j)}
			continue
		}
		ch, err := ns.Build(now)
		if err != nil {
			// Only a request that builds claims its id: a later one may still succeed.
			results[i] = store.Created{Err: err}
			continue
		}
		first[ns.ID] = i
		ch.Row.ID = ns.ID
		index = append(index, i)
		changes = append(changes, ch)
	}
	return index, changes
}

// fillExisting gives the requests of sagas that existed already, and those that repeated an id
// of their batch, their results once the batch committed.
func (s *Store) fillExisting(ctx context.Context, batch []store.NewSaga, existing []uuid.UUID, first map[uuid.UUID]int, results []store.Created) {
	if len(existing) > 0 {
		// The new sagas are committed by now: a failed read fails only the requests of the
		// sagas that existed, and the new ones' rows still go to the relay.
		if err := s.readExisting(ctx, existing, first, results); err != nil {
			for _, id := range existing {
				results[first[id]] = store.Created{Err: fmt.Errorf("read existing saga %s: %w", id, err)}
			}
		}
	}
	for i, ns := range batch {
		if _, dup := results[i].Err.(errSameBatch); dup {
			if r := results[first[ns.ID]]; r.Saga != nil || r.Err != nil {
				results[i] = store.Created{Saga: r.Saga, Err: r.Err}
			}
		}
	}
}

// queueCreate queues the statement that inserts the sagas of changes and, for those that did not
// exist, their messages into the outbox. Once it ran, created holds the ids of the new sagas and
// *out their outbox rows, in the order of changes.
func (s *Store) queueCreate(b *pgx.Batch, now time.Time, changes []store.Change, deletes []int64, created map[uuid.UUID]bool, out *[]store.OutboxRow) error {
	c, err := createArrays(changes)
	if err != nil {
		return err
	}
	sagaIDs, defNames, defVersions, statuses, inputs, hashes, states, wakes, fins, msgs, msgSagas :=
		c.ids, c.defNames, c.defVersions, c.statuses, c.inputs, c.hashes, c.states, c.wakes, c.fins, c.msgs, c.msgSagas
	ob, err := outboxArrays(msgs)
	if err != nil {
		return err
	}
	// The outbox rows of a saga that already existed are not written: its messages were, when
	// it was created. Outbox ids map back to messages by message_id, unique in a batch.
	b.Queue(`WITH created AS (
			INSERT INTO sagas (`+sagaColumns+`)
			SELECT id, dn, dv, st, inp, rh, state::jsonb, 1, wake, $10, $10, fin
			FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::bytea[], $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[])
				AS u(id, dn, dv, st, inp, rh, state, wake, fin)
			ON CONFLICT (id) DO NOTHING RETURNING id
		), queued AS (
			INSERT INTO outbox (exchange, routing_key, message_id, type, correlation_id, headers, body, content_type, lease_until)
			SELECT e, k, m, t, c, h::jsonb, b, ct, now() + $19::interval
			FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::bytea[], $18::text[], $20::uuid[])
				WITH ORDINALITY AS o(e, k, m, t, c, h, b, ct, saga, ord)
			WHERE o.saga IN (SELECT id FROM created)
			ORDER BY ord
			RETURNING id, message_id
		), deleted AS (
			DELETE FROM outbox WHERE id = ANY($21::bigint[])
		)
		SELECT id, NULL::bigint, NULL::text FROM created
		UNION ALL SELECT NULL, id, message_id FROM queued`,
		sagaIDs, defNames, defVersions, statuses, inputs, hashes, states, wakes, fins, now,
		ob.exchanges, ob.keys, ob.ids, ob.types, ob.corrs, ob.headers, ob.bodies, ob.ctypes, s.cfg.OutboxLease, msgSagas, deletes,
	).Query(func(rs pgx.Rows) error {
		outboxIDs := map[string]int64{}
		for rs.Next() {
			var (
				sagaID    pgtype.UUID
				outboxID  pgtype.Int8
				messageID pgtype.Text
			)
			if err := rs.Scan(&sagaID, &outboxID, &messageID); err != nil {
				return err
			}
			if sagaID.Valid {
				created[sagaID.Bytes] = true
			} else {
				outboxIDs[messageID.String] = outboxID.Int64
			}
		}
		if err := rs.Err(); err != nil {
			return err
		}
		for i, m := range msgs {
			if !created[msgSagas[i]] {
				continue
			}
			id, ok := outboxIDs[m.MessageID]
			if !ok {
				return fmt.Errorf("outbox insert returned no id for message %s", m.MessageID)
			}
			*out = append(*out, store.OutboxRow{ID: id, Outgoing: m})
		}
		return nil
	})
	return nil
}

// createColumns are the columns of new sagas, as arrays for unnest, and their messages with the
// saga of each.
type createColumns struct {
	ids                [][16]byte
	defNames, statuses []string
	hashes, states     []string
	defVersions        []int32
	inputs             [][]byte
	wakes, fins        []pgtype.Timestamptz
	msgs               []transport.Outgoing
	msgSagas           [][16]byte
}

func createArrays(changes []store.Change) (createColumns, error) {
	n := len(changes)
	c := createColumns{
		ids: make([][16]byte, n), defNames: make([]string, n), statuses: make([]string, n),
		hashes: make([]string, n), states: make([]string, n), defVersions: make([]int32, n),
		inputs: make([][]byte, n), wakes: make([]pgtype.Timestamptz, n), fins: make([]pgtype.Timestamptz, n),
	}
	for k, ch := range changes {
		sg := ch.Row
		st, err := json.Marshal(sg.State)
		if err != nil {
			return createColumns{}, err
		}
		c.ids[k], c.defNames[k], c.defVersions[k] = sg.ID, sg.DefinitionName, int32(sg.DefinitionVersion)
		c.statuses[k], c.inputs[k], c.hashes[k], c.states[k] = string(sg.State.Status), sg.State.Input, sg.RequestHash, string(st)
		c.wakes[k], c.fins[k] = tsOrNull(sg.WakeAt), tsOrNull(sg.FinishedAt)
		for _, m := range ch.Messages {
			c.msgs = append(c.msgs, m)
			c.msgSagas = append(c.msgSagas, sg.ID)
		}
	}
	return c, nil
}

// readExisting fills the results of the sagas of ids, which existed before their StartSaga, with
// the sagas as they are now.
func (s *Store) readExisting(ctx context.Context, ids []uuid.UUID, first map[uuid.UUID]int, results []store.Created) error {
	found, err := s.pool.Query(ctx, `SELECT `+sagaColumns+` FROM sagas WHERE id = ANY($1)`, uuidArray(ids))
	if err != nil {
		return err
	}
	olds, err := pgx.CollectRows(found, func(r pgx.CollectableRow) (*store.Saga, error) { return scanSaga(r) })
	if err != nil {
		return err
	}
	for _, old := range olds {
		results[first[old.ID]] = store.Created{Saga: old}
	}
	return nil
}

// errSameBatch marks a request whose id an earlier request of the same batch also used; it is
// replaced by that request's saga once the batch is written.
type errSameBatch int

func (e errSameBatch) Error() string { return "the same saga id twice in one batch" }

// GetSaga implements store.Sagas.
func (s *Store) GetSaga(ctx context.Context, id uuid.UUID) (*store.Saga, error) {
	return get(ctx, s, sagaRows, id)
}

// ListSagas implements store.Sagas.
func (s *Store) ListSagas(ctx context.Context, f store.ListFilter) ([]*store.Saga, error) {
	// The same indexes, (status | definition_name, created_at DESC, id DESC), serve both
	// directions: oldest first reads them backwards.
	after, order := "<", "DESC"
	if f.OldestFirst {
		after, order = ">", "ASC"
	}
	q := `SELECT ` + sagaColumns + ` FROM sagas WHERE ($1 = '' OR status = $1) AND ($2 = '' OR definition_name = $2)
		AND ($6 <= 0 OR definition_version = $6)
		AND ($7::timestamptz IS NULL OR created_at >= $7) AND ($8::timestamptz IS NULL OR created_at < $8)
		AND ($3::timestamptz IS NULL OR (created_at, id) ` + after + ` ($3, $4))
		ORDER BY created_at ` + order + `, id ` + order + ` LIMIT $5`
	rows, err := s.pool.Query(ctx, q, string(f.Status), f.Definition, tsOrNull(f.AfterCreatedAt), f.AfterID, f.Limit,
		f.DefinitionVersion, tsOrNull(f.CreatedFrom), tsOrNull(f.CreatedBefore))
	if err != nil {
		return nil, fmt.Errorf("list sagas: %w", err)
	}
	defer rows.Close()
	var out []*store.Saga
	for rows.Next() {
		sg, err := scanSaga(rows)
		if err != nil {
			return nil, fmt.Errorf("list sagas: %w", err)
		}
		out = append(out, sg)
	}
	return out, rows.Err()
}

// CountUnfinished implements store.Sagas, on the status index: finished sagas are not read.
func (s *Store) CountUnfinished(ctx context.Context, definition string) (map[int]map[saga.Status]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT definition_version, status, count(*)::int FROM sagas
		WHERE status IN ('RUNNING', 'COMPENSATING', 'FAILED') AND definition_name = $1 GROUP BY 1, 2`, definition)
	if err != nil {
		return nil, fmt.Errorf("count sagas: %w", err)
	}
	out := map[int]map[saga.Status]int{}
	var (
		version, n int
		status     string
	)
	_, err = pgx.ForEachRow(rows, []any{&version, &status, &n}, func() error {
		if out[version] == nil {
			out[version] = map[saga.Status]int{}
		}
		out[version][saga.Status(status)] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count sagas: %w", err)
	}
	return out, nil
}
