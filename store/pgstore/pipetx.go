package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipeTx is a transaction on one pooled connection whose statements travel in pipelined
// batches. BEGIN goes out with the first batch, so a transaction made of two dependent steps
// costs three round trips (two batches and COMMIT) instead of one per statement.
type pipeTx struct {
	conn  *pgxpool.Conn
	begun bool
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
		if p.begun {
			// Without a cancelled context the rollback still reaches the server.
			if _, rerr := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", rerr))
			}
		}
		return err
	}
	if !p.begun {
		return nil
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
