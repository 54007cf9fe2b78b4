// Package pgstore implements store.Store over PostgreSQL with pgx. All of the coordinator's SQL
// lives in this package.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/internal/store"
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
	// instance names this store's writes in their notifications (see Listen).
	instance string
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Notifier = (*Store)(nil)
)

// New returns a store on pool, whose search_path must hold the migrated schema.
func New(pool *pgxpool.Pool, cfg Config) *Store {
	return &Store{pool: pool, cfg: cfg.WithDefaults(), instance: newInstance()}
}

// Pool returns the underlying pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Outbox returns the outbox view of the store.
func (s *Store) Outbox() store.Outbox { return outboxStore{s} }

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
