package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/twopc"
)

const txColumns = `id, status, request_hash, state, version, wake_at, created_at, updated_at, finished_at`

var txRows = table[*store.Tx]{
	name:      "transactions",
	scan:      scanTx,
	key:       func(tx *store.Tx) (uuid.UUID, int64) { return tx.ID, tx.Version },
	updatedAt: func(tx *store.Tx) time.Time { return tx.UpdatedAt },
	update:    updateTxs,
}

func scanTx(row pgx.Row) (*store.Tx, error) {
	var (
		c  stateColumns
		tx twopc.Tx
	)
	if err := c.scan(row, "transaction", &tx, &c.id, &c.status, &c.requestHash, &c.state, &c.version, &c.wake, &c.created, &c.updated, &c.fin); err != nil {
		return nil, err
	}
	tx.ID, tx.State = c.id.String(), twopc.State(c.status)
	return &store.Tx{
		ID: c.id, Tx: &tx, RequestHash: c.requestHash, Version: c.version,
		WakeAt: c.wake.Time, CreatedAt: c.created, UpdatedAt: c.updated, FinishedAt: c.fin.Time,
	}, nil
}

// CreateTx implements store.Transactions.
func (s *Store) CreateTx(ctx context.Context, id uuid.UUID, build func(now time.Time) (store.TxChange, error)) (*store.Tx, bool, []store.OutboxRow, error) {
	var (
		created bool
		out     *store.Tx
		rows    []store.OutboxRow
	)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		created, out, rows = false, nil, nil
		var now time.Time
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
			return err
		}
		ch, err := build(now)
		if err != nil {
			return err
		}
		t := ch.Row
		state, err := json.Marshal(t.Tx)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO transactions (`+txColumns+`)
			VALUES ($1, $2, $3, $4, 1, $5, $6, $6, $7) ON CONFLICT (id) DO NOTHING`,
			id, string(t.Tx.State), t.RequestHash, state, tsOrNull(t.WakeAt), now, tsOrNull(t.FinishedAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			out, err = scanTx(tx.QueryRow(ctx, `SELECT `+txColumns+` FROM transactions WHERE id = $1`, id))
			return err
		}
		if rows, err = s.insertOutbox(ctx, tx, ch.Messages); err != nil {
			return err
		}
		t.ID, t.Version, t.CreatedAt, t.UpdatedAt = id, 1, now, now
		out, created = t, true
		return nil
	})
	if err != nil {
		return nil, false, nil, fmt.Errorf("create transaction %s: %w", id, err)
	}
	return out, created, rows, nil
}

// GetTx implements store.Transactions.
func (s *Store) GetTx(ctx context.Context, id uuid.UUID) (*store.Tx, error) {
	t, err := scanTx(s.pool.QueryRow(ctx, `SELECT `+txColumns+` FROM transactions WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("transaction %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get transaction %s: %w", id, err)
	}
	return t, nil
}

// ListTx implements store.Transactions.
func (s *Store) ListTx(ctx context.Context, f store.TxFilter) ([]*store.Tx, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+txColumns+` FROM transactions WHERE ($1 = '' OR status = $1)
		AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
		ORDER BY created_at DESC, id DESC LIMIT $4`, string(f.State), tsOrNull(f.AfterCreatedAt), f.AfterID, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("list transactions: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Tx, error) { return scanTx(r) })
	if err != nil {
		return nil, fmt.Errorf("list transactions: %w", err)
	}
	return out, nil
}

// MutateTx implements store.Transactions.
func (s *Store) MutateTx(ctx context.Context, ids []uuid.UUID, fn store.MutateFunc[*store.Tx]) ([]store.OutboxRow, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	_, rows, err := mutate(ctx, s, txRows, fn, `SELECT clock_timestamp(), `+txColumns+` FROM transactions WHERE id = ANY($1) ORDER BY id FOR UPDATE`, uuidArray(ids))
	return rows, err
}

// MutateDueTx implements store.Transactions.
func (s *Store) MutateDueTx(ctx context.Context, limit int, fn store.MutateFunc[*store.Tx]) (int, []store.OutboxRow, error) {
	if due, err := s.anyDue(ctx, "transactions"); err != nil || !due {
		return 0, nil, err
	}
	return mutate(ctx, s, txRows, fn, `SELECT clock_timestamp(), `+txColumns+` FROM transactions WHERE wake_at <= now() ORDER BY wake_at LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
}

func updateTxs(b *pgx.Batch, now time.Time, changed []*store.Tx, msgs []transport.Outgoing, deletes []int64, lease time.Duration, instance string, out *[]store.OutboxRow) error {
	rows := make([]rowUpdate, len(changed))
	for i, t := range changed {
		rows[i] = rowUpdate{t.ID, string(t.Tx.State), t.Tx, t.Version, t.WakeAt, t.FinishedAt}
	}
	return queueWrite(b, write{now: now, table: "transactions", rows: rows, msgs: msgs, deletes: deletes, lease: lease, instance: instance, out: out}, func() {
		for _, t := range changed {
			t.Version++
			t.UpdatedAt = now
		}
	})
}
