package participant

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// batch is statements sent to PostgreSQL together, with one Sync: it runs them in order and,
// after an error, skips the rest; the transaction is then aborted, and end rolls it back.
type batch struct {
	b     pgx.Batch
	stmts []stmt
	// tail counts the leading statements that end the previous command of a group.
	tail int
}

// stmt is one statement of a batch.
type stmt struct {
	// what names the statement in its error.
	what string
	sql  string
	read func(pgx.BatchResults) error
}

// exec queues a statement whose command tag, if tag is not nil, is stored in tag.
func (bt *batch) exec(tag *pgconn.CommandTag, what, sql string, args ...any) {
	bt.b.Queue(sql, args...)
	bt.stmts = append(bt.stmts, stmt{what: what, sql: sql, read: execResult(tag)})
}

// queryRow queues a statement that returns one text value, stored in dst.
func (bt *batch) queryRow(dst *string, what, sql string, args ...any) {
	bt.b.Queue(sql, args...)
	bt.stmts = append(bt.stmts, stmt{what: what, sql: sql, read: func(br pgx.BatchResults) error {
		return br.QueryRow().Scan(dst)
	}})
}

// queryOptional is queryRow for a statement that may return no row; found tells whether it did.
func (bt *batch) queryOptional(dst *string, found *bool, what, sql string, args ...any) {
	bt.b.Queue(sql, args...)
	bt.stmts = append(bt.stmts, stmt{what: what, sql: sql, read: func(br pgx.BatchResults) error {
		err := br.QueryRow().Scan(dst)
		*found = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	}})
}

// commit queues the COMMIT that ends the batch and the transaction.
func (bt *batch) commit() {
	bt.b.Queue("commit")
	bt.stmts = append(bt.stmts, stmt{what: "commit barrier transaction", sql: "commit", read: func(br pgx.BatchResults) error {
		tag, err := br.Exec()
		if err == nil && tag.String() == "ROLLBACK" {
			err = pgx.ErrTxCommitRollback
		}
		return err
	}})
}

func execResult(tag *pgconn.CommandTag) func(pgx.BatchResults) error {
	return func(br pgx.BatchResults) error {
		t, err := br.Exec()
		if tag != nil {
			*tag = t
		}
		return err
	}
}

// read reads the results of bt in order, up to the first error, and returns the index of the
// statement that failed.
func (bt *batch) read(br pgx.BatchResults) (int, error) {
	for i, s := range bt.stmts {
		if err := s.read(br); err != nil {
			return i, err
		}
	}
	return 0, nil
}

// blame returns the statement that err, read at statement i, belongs to. pgx reports a statement
// that could not be prepared (before any ran) as the error of every statement of the batch, the
// first included; that statement is blamed instead.
func (bt *batch) blame(i int, err error) int {
	var pe pgx.ErrPreprocessingBatch
	if errors.As(err, &pe) {
		for j, s := range bt.stmts {
			if s.sql == pe.SQL() {
				return j
			}
		}
	}
	return i
}

// failed names the statement i in err.
func (bt *batch) failed(i int, err error, broken bool) error {
	if broken && !errors.As(err, new(*pgconn.PgError)) {
		whats := make([]string, 0, len(bt.stmts)-i)
		for _, s := range bt.stmts[i:] {
			whats = append(whats, s.what)
		}
		return fmt.Errorf("%s: no answer: %w", strings.Join(whats, ", "), err)
	}
	return fmt.Errorf("%s: %w", bt.stmts[i].what, err)
}
