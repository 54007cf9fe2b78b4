package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sagacoord/sagacoord/internal/store"
)

// table is what mutate and get need to know about a table of state rows (sagas, transactions).
type table[T any] struct {
	// name is the table's, noun one row's in errors; columns are those scan reads, in its order.
	name, noun, columns string
	scan                func(pgx.Row) (T, error)
	// head points at a row's id, version and updated_at, which a write changes.
	head func(T) (id uuid.UUID, version *int64, updatedAt *time.Time)
	// row returns the new content of a changed row.
	row func(T) rowUpdate
}

// key returns v's id and version.
func (t table[T]) key(v T) (uuid.UUID, int64) {
	id, version, _ := t.head(v)
	return id, *version
}

// updatedAt returns when v was last written.
func (t table[T]) updatedAt(v T) time.Time {
	_, _, at := t.head(v)
	return *at
}

// stateColumns are the columns that sagas and transactions share, as scanned.
type stateColumns struct {
	id                  uuid.UUID
	status, requestHash string
	state               []byte // jsonb
	version             int64
	wake, fin           pgtype.Timestamptz
	created, updated    time.Time
}

// scan is scanSaga's and scanTx's: it scans row into dest, the table's columns in its order with
// pointers into c among them, and decodes c's state into st; noun names the row in errors.
func (c *stateColumns) scan(row pgx.Row, noun string, st any, dest ...any) error {
	if err := row.Scan(dest...); err != nil {
		return err
	}
	if err := json.Unmarshal(c.state, st); err != nil {
		return fmt.Errorf("decode state of %s %s: %w", noun, c.id, err)
	}
	return nil
}

// querier runs a query that returns one row: the pool, or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// read returns the row of id as q sees it, or pgx.ErrNoRows.
func (t table[T]) read(ctx context.Context, q querier, id uuid.UUID) (T, error) {
	return t.scan(q.QueryRow(ctx, `SELECT `+t.columns+` FROM `+t.name+` WHERE id = $1`, id))
}

// get is GetSaga and GetTx: the row of id, or store.ErrNotFound.
func get[T any](ctx context.Context, s *Store, t table[T], id uuid.UUID) (T, error) {
	v, err := t.read(ctx, s.pool, id)
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, pgx.ErrNoRows):
		err = fmt.Errorf("%s %s: %w", t.noun, id, store.ErrNotFound)
	default:
		err = fmt.Errorf("get %s %s: %w", t.noun, id, err)
	}
	var zero T
	return zero, err
}
