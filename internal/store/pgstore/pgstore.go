// Package pgstore implements store.Store over PostgreSQL with pgx. All of the coordinator's SQL
// lives in this package.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/twopc"
)

// Config configures a Store.
type Config struct {
	// OutboxLease is how long the instance that wrote or claimed an outbox row owns it before
	// another relay may claim it: the outbox's one lease. Default 5s.
	OutboxLease time.Duration
	// MaxTxRetries bounds retries of a transaction that hit a deadlock or serialization failure.
	// Default 5.
	MaxTxRetries int
	// DeleteDelay is how long the ids given to DeleteSoon wait for a state transaction to delete
	// them before they are deleted on their own. Default 50ms.
	DeleteDelay time.Duration
}

// WithDefaults returns c with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.OutboxLease == 0 {
		c.OutboxLease = 5 * time.Second
	}
	if c.MaxTxRetries == 0 {
		c.MaxTxRetries = 5
	}
	if c.DeleteDelay == 0 {
		c.DeleteDelay = 50 * time.Millisecond
	}
	return c
}

// Store is the PostgreSQL store. It is safe for concurrent use, also by several processes.
type Store struct {
	pool    *pgxpool.Pool
	cfg     Config
	deletes deferredDeletes
}

var _ store.Store = (*Store)(nil)

// New returns a store on pool, whose search_path must hold the migrated schema.
func New(pool *pgxpool.Pool, cfg Config) *Store {
	return &Store{pool: pool, cfg: cfg.WithDefaults()}
}

// Pool returns the underlying pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Outbox returns the outbox view of the store.
func (s *Store) Outbox() store.Outbox { return outboxStore{s} }

// --- definitions ---

// RegisterDefinition implements store.Definitions.
func (s *Store) RegisterDefinition(ctx context.Context, def saga.Definition) (saga.Definition, bool, error) {
	content := def.CanonicalJSON()
	hash := def.Hash()
	var out saga.Definition
	created := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		created = false
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('sagacoord.definition:' || $1))`, def.Name); err != nil {
			return err
		}
		var version int
		var createdAt time.Time
		// Identical to the latest version is a no-op; anything else, even an older version's
		// content, becomes the next version (re-registering A after B makes A the latest again).
		err := tx.QueryRow(ctx, `SELECT version, created_at FROM saga_definitions WHERE name = $1 AND hash = $2
			AND version = (SELECT max(version) FROM saga_definitions WHERE name = $1)`, def.Name, hash).Scan(&version, &createdAt)
		if err == nil {
			out = def
			out.Version, out.CreatedAt = version, createdAt
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO saga_definitions (name, version, hash, content)
			SELECT $1, coalesce(max(version), 0) + 1, $2, $3 FROM saga_definitions WHERE name = $1
			RETURNING version, created_at`, def.Name, hash, content).Scan(&version, &createdAt)
		if err != nil {
			return err
		}
		out = def
		out.Version, out.CreatedAt = version, createdAt
		created = true
		return nil
	})
	if err != nil {
		return saga.Definition{}, false, fmt.Errorf("register definition %q: %w", def.Name, err)
	}
	return out, created, nil
}

// GetDefinition implements store.Definitions.
func (s *Store) GetDefinition(ctx context.Context, name string, version int) (saga.Definition, error) {
	var row pgx.Row
	if version > 0 {
		row = s.pool.QueryRow(ctx, `SELECT name, version, content, created_at FROM saga_definitions WHERE name = $1 AND version = $2`, name, version)
	} else {
		row = s.pool.QueryRow(ctx, `SELECT name, version, content, created_at FROM saga_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1`, name)
	}
	def, err := scanDefinition(row)
	if errors.Is(err, pgx.ErrNoRows) {
		if version > 0 {
			return saga.Definition{}, fmt.Errorf("definition %q version %d: %w", name, version, store.ErrNotFound)
		}
		return saga.Definition{}, fmt.Errorf("definition %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return saga.Definition{}, fmt.Errorf("get definition %q: %w", name, err)
	}
	return def, nil
}

// ListDefinitions implements store.Definitions.
func (s *Store) ListDefinitions(ctx context.Context) ([]saga.Definition, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (name) name, version, content, created_at FROM saga_definitions ORDER BY name, version DESC`)
	if err != nil {
		return nil, fmt.Errorf("list definitions: %w", err)
	}
	defer rows.Close()
	var out []saga.Definition
	for rows.Next() {
		def, err := scanDefinition(rows)
		if err != nil {
			return nil, fmt.Errorf("list definitions: %w", err)
		}
		out = append(out, def)
	}
	return out, rows.Err()
}

func scanDefinition(row pgx.Row) (saga.Definition, error) {
	var (
		def     saga.Definition
		name    string
		version int
		content []byte
		created time.Time
	)
	if err := row.Scan(&name, &version, &content, &created); err != nil {
		return def, err
	}
	if err := json.Unmarshal(content, &def); err != nil {
		return def, fmt.Errorf("decode definition %q version %d: %w", name, version, err)
	}
	def.Version, def.CreatedAt = version, created
	return def, nil
}

// --- sagas ---

const sagaColumns = `id, definition_name, definition_version, status, input, request_hash, state, version, wake_at, created_at, updated_at, finished_at`

func scanSaga(row pgx.Row) (*store.Saga, error) {
	var (
		sg                 store.Saga
		status             string
		input, state       []byte
		wake, fin          pgtype.Timestamptz
		createdAt, updated time.Time
	)
	if err := row.Scan(&sg.ID, &sg.DefinitionName, &sg.DefinitionVersion, &status, &input, &sg.RequestHash, &state, &sg.Version, &wake, &createdAt, &updated, &fin); err != nil {
		return nil, err
	}
	st := &saga.State{}
	if err := json.Unmarshal(state, st); err != nil {
		return nil, fmt.Errorf("decode state of saga %s: %w", sg.ID, err)
	}
	st.ID = sg.ID.String()
	st.Status = saga.Status(status)
	st.Input = input
	sg.State = st
	sg.CreatedAt, sg.UpdatedAt = createdAt, updated
	if wake.Valid {
		sg.WakeAt = wake.Time
	}
	if fin.Valid {
		sg.FinishedAt = fin.Time
	}
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
		var (
			index   []int // position in batch of each change
			changes []store.Change
		)
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
		if len(changes) == 0 {
			return nil
		}
		write := &pgx.Batch{}
		created := map[uuid.UUID]bool{}
		if err := s.queueCreate(write, now, changes, created, &rows); err != nil {
			return err
		}
		undo := s.piggyback(write)
		if err := p.commit(ctx, write); err != nil {
			undo()
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
	return results, rows, nil
}

// queueCreate queues the statement that inserts the sagas of changes and, for those that did not
// exist, their messages into the outbox. Once it ran, created holds the ids of the new sagas and
// *out their outbox rows, in the order of changes.
func (s *Store) queueCreate(b *pgx.Batch, now time.Time, changes []store.Change, created map[uuid.UUID]bool, out *[]store.OutboxRow) error {
	n := len(changes)
	var (
		sagaIDs            = make([][16]byte, n)
		defNames, statuses = make([]string, n), make([]string, n)
		hashes, states     = make([]string, n), make([]string, n)
		defVersions        = make([]int32, n)
		inputs             = make([][]byte, n)
		wakes, fins        = make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
		msgs               []transport.Outgoing
		msgSagas           [][16]byte
	)
	for k, ch := range changes {
		sg := ch.Row
		st, err := json.Marshal(sg.State)
		if err != nil {
			return err
		}
		sagaIDs[k], defNames[k], defVersions[k] = sg.ID, sg.DefinitionName, int32(sg.DefinitionVersion)
		statuses[k], inputs[k], hashes[k], states[k] = string(sg.State.Status), sg.State.Input, sg.RequestHash, string(st)
		wakes[k], fins[k] = tsOrNull(sg.WakeAt), tsOrNull(sg.FinishedAt)
		for _, m := range ch.Messages {
			msgs = append(msgs, m)
			msgSagas = append(msgSagas, sg.ID)
		}
	}
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
		)
		SELECT id, NULL::bigint, NULL::text FROM created
		UNION ALL SELECT NULL, id, message_id FROM queued`,
		sagaIDs, defNames, defVersions, statuses, inputs, hashes, states, wakes, fins, now,
		ob.exchanges, ob.keys, ob.ids, ob.types, ob.corrs, ob.headers, ob.bodies, ob.ctypes, s.cfg.OutboxLease, msgSagas,
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
	sg, err := scanSaga(s.pool.QueryRow(ctx, `SELECT `+sagaColumns+` FROM sagas WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("saga %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get saga %s: %w", id, err)
	}
	return sg, nil
}

// ListSagas implements store.Sagas.
func (s *Store) ListSagas(ctx context.Context, f store.ListFilter) ([]*store.Saga, error) {
	q := `SELECT ` + sagaColumns + ` FROM sagas WHERE ($1 = '' OR status = $1) AND ($2 = '' OR definition_name = $2)
		AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
		ORDER BY created_at DESC, id DESC LIMIT $5`
	rows, err := s.pool.Query(ctx, q, string(f.Status), f.Definition, tsOrNull(f.AfterCreatedAt), f.AfterID, f.Limit)
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

// insertOutbox inserts msgs into the outbox in tx and returns their rows.
func (s *Store) insertOutbox(ctx context.Context, tx pgx.Tx, msgs []transport.Outgoing) ([]store.OutboxRow, error) {
	var out []store.OutboxRow
	b := &pgx.Batch{}
	if err := s.queueOutbox(b, msgs, &out); err != nil || b.Len() == 0 {
		return nil, err
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// outboxColumns are the outbox columns of a batch of messages, as arrays for unnest.
type outboxColumns struct {
	exchanges, keys, ids, types, corrs, headers, ctypes []string
	bodies                                              [][]byte
}

func outboxArrays(msgs []transport.Outgoing) (outboxColumns, error) {
	n := len(msgs)
	c := outboxColumns{
		exchanges: make([]string, n), keys: make([]string, n), ids: make([]string, n), types: make([]string, n),
		corrs: make([]string, n), headers: make([]string, n), ctypes: make([]string, n), bodies: make([][]byte, n),
	}
	for i, m := range msgs {
		h, err := json.Marshal(m.Headers)
		if err != nil {
			return outboxColumns{}, err
		}
		c.exchanges[i], c.keys[i], c.ids[i], c.types[i], c.corrs[i], c.headers[i], c.bodies[i] = m.Exchange, m.RoutingKey, m.MessageID, m.Type, m.CorrelationID, string(h), m.Body
		c.ctypes[i] = m.ContentType
	}
	return c, nil
}

// queueOutbox queues the insert of msgs into the outbox; once it ran, *out holds their rows.
func (s *Store) queueOutbox(b *pgx.Batch, msgs []transport.Outgoing, out *[]store.OutboxRow) error {
	if len(msgs) == 0 {
		return nil
	}
	n := len(msgs)
	c, err := outboxArrays(msgs)
	if err != nil {
		return err
	}
	b.Queue(`INSERT INTO outbox (exchange, routing_key, message_id, type, correlation_id, headers, body, content_type, lease_until)
		SELECT e, k, m, t, c, h::jsonb, b, ct, now() + $8::interval
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $9::text[]) WITH ORDINALITY AS u(e, k, m, t, c, h, b, ct, ord)
		ORDER BY ord
		RETURNING id`, c.exchanges, c.keys, c.ids, c.types, c.corrs, c.headers, c.bodies, s.cfg.OutboxLease, c.ctypes).Query(func(rows pgx.Rows) error {
		rowIDs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if len(rowIDs) != n {
			return fmt.Errorf("outbox insert returned %d ids for %d messages", len(rowIDs), n)
		}
		// ORDER BY ord makes the serial ids follow the input order, and RETURNING yields the
		// rows in the order they were inserted, so ids map to messages by position.
		rs := make([]store.OutboxRow, n)
		for i := range msgs {
			rs[i] = store.OutboxRow{ID: rowIDs[i], Outgoing: msgs[i]}
		}
		*out = rs
		return nil
	})
	return nil
}

// --- outbox ---

type outboxStore struct{ s *Store }

func (o outboxStore) Lease() time.Duration { return o.s.cfg.OutboxLease }

func (o outboxStore) ClaimExpired(ctx context.Context, limit int) ([]store.OutboxRow, error) {
	lease := o.s.cfg.OutboxLease
	rows, err := o.s.pool.Query(ctx, `UPDATE outbox SET lease_until = now() + $2::interval, attempts = attempts + 1
		WHERE id IN (SELECT id FROM outbox WHERE lease_until < now() ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING id, exchange, routing_key, message_id, type, correlation_id, headers, body, attempts, content_type`, limit, lease)
	if err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	defer rows.Close()
	var out []store.OutboxRow
	for rows.Next() {
		var (
			r       store.OutboxRow
			headers []byte
		)
		if err := rows.Scan(&r.ID, &r.Exchange, &r.RoutingKey, &r.MessageID, &r.Type, &r.CorrelationID, &headers, &r.Body, &r.Attempts, &r.ContentType); err != nil {
			return nil, fmt.Errorf("claim outbox rows: %w", err)
		}
		if err := json.Unmarshal(headers, &r.Headers); err != nil {
			return nil, fmt.Errorf("outbox row %d headers: %w", r.ID, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (o outboxStore) Delete(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	// Losing this delete in a crash only republishes confirmed messages, which consumers
	// deduplicate; so it need not wait for the WAL flush. The whole transaction is one round
	// trip.
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SET LOCAL synchronous_commit = off`)
	b.Queue(`DELETE FROM outbox WHERE id = ANY($1)`, ids)
	b.Queue(`COMMIT`)
	err := o.s.pool.SendBatch(ctx, b).Close()
	if err != nil {
		return fmt.Errorf("delete %d outbox rows: %w", len(ids), err)
	}
	return nil
}

func (o outboxStore) Backlog(ctx context.Context) (int, time.Duration, error) {
	var (
		n   int
		age float64
	)
	err := o.s.pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox`).Scan(&n, &age)
	if err != nil {
		return 0, 0, fmt.Errorf("outbox backlog: %w", err)
	}
	return n, time.Duration(age * float64(time.Second)), nil
}

// --- transactions ---

// inTx runs fn in a transaction, retrying on deadlock and serialization failure. fn must be
// safe to run again.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.retrying(func() error { return pgx.BeginFunc(ctx, s.pool, fn) })
}

// retrying runs one transaction attempt, then again, up to MaxTxRetries more times, while it
// fails with a deadlock, a serialization failure or store.ErrConflict.
func (s *Store) retrying(attempt func() error) error {
	var err error
	for range s.cfg.MaxTxRetries + 1 {
		if err = attempt(); err == nil || !retryable(err) {
			return err
		}
	}
	return err
}

// translate marks errors that no retry can fix with store.ErrInvalidData (SQLSTATE class 22,
// data exceptions).
func translate(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22") {
		return fmt.Errorf("%w: %w", store.ErrInvalidData, err)
	}
	return err
}

func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		}
	}
	return errors.Is(err, store.ErrConflict)
}

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
