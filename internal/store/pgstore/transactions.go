package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/twopc"
)

const txColumns = `id, status, request_hash, state, version, wake_at, created_at, updated_at, finished_at`

var txRows = table[*store.Tx]{
	name: "transactions", noun: "transaction", columns: txColumns,
	scan: scanTx,
	head: func(t *store.Tx) (uuid.UUID, *int64, *time.Time) { return t.ID, &t.Version, &t.UpdatedAt },
	row: func(t *store.Tx) rowUpdate {
		return rowUpdate{t.ID, string(t.Tx.State), t.Tx, t.Version, t.WakeAt, t.FinishedAt}
	},
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
			out, err = txRows.read(ctx, tx, id)
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
	return get(ctx, s, txRows, id)
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
	return mutateIDs(ctx, s, txRows, ids, fn)
}

// MutateDueTx implements store.Transactions.
func (s *Store) MutateDueTx(ctx context.Context, limit int, fn store.MutateFunc[*store.Tx]) (int, []store.OutboxRow, error) {
	return mutateDue(ctx, s, txRows, limit, fn)
}
