package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipeTx is a transaction on one pooled connection whose statements travel in pipelined
// batches. BEGIN goes out with the first batch and COMMIT with the last (see commit), so a
// transaction made of two dependent steps costs two round trips instead of one per statement.
type pipeTx struct {
	conn      *pgxpool.Conn
	begun     bool
	committed bool
}

// run sends b, preceded by BEGIN if the transaction has not begun, and runs the callbacks of
// its queued statements in order. It returns the first error; after an error the transaction is
// aborted and must be rolled back.
func (p *pipeTx) run(ctx context.Context, b *pgx.Batch) error {
	if !p.begun {
		withBegin := &pgx.Batch{}
		withBegin.Queue("BEGIN")
		withBegin.QueuedQueries = append(withBegin.QueuedQueries, b.QueuedQueries...)
		b = withBegin
		p.begun = true
	}
	return p.conn.SendBatch(ctx, b).Close()
}

// commit sends b followed by COMMIT, in one round trip, and ends the transaction. PostgreSQL
// skips the rest of a pipelined batch after a failed statement, COMMIT included, so a batch
// whose statement fails commits nothing and returns that statement's error. A callback of b,
// though, runs only once the whole batch has: what decides whether the transaction may commit
// must be checked before, or in SQL. A callback error after a commit is returned unwrapped,
// so that it is never retried as a conflict.
func (p *pipeTx) commit(ctx context.Context, b *pgx.Batch) error {
	var status string
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		status = tag.String()
		return nil
	})
	err := p.run(ctx, b)
	p.committed = status == "COMMIT"
	switch {
	case p.committed && err != nil:
		return fmt.Errorf("committed, but reading the results failed: %v", err)
	case err == nil && !p.committed:
		return pgx.ErrTxCommitRollback
	}
	return err
}

// inPipeTx runs fn in a pipelined transaction and commits it, retrying on deadlock,
// serialization failure and store.ErrConflict (retrying). fn must be safe to run again.
func (s *Store) inPipeTx(ctx context.Context, fn func(*pipeTx) error) error {
	return s.retrying(func() error { return s.pipeTxOnce(ctx, fn) })
}

func (s *Store) pipeTxOnce(ctx context.Context, fn func(*pipeTx) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// pgxpool destroys, rather than reuses, a connection released inside a transaction or with
	// a query in progress, so no failure below can leak a transaction to the next user.
	defer conn.Release()
	p := &pipeTx{conn: conn}
	if err := fn(p); err != nil {
		if p.begun && !p.committed {
			// Without a cancelled context the rollback still reaches the server.
			if _, rerr := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", rerr))
			}
		}
		return err
	}
	if !p.begun || p.committed {
		return nil
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
