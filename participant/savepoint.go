package participant

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// savepointTx is the handler's transaction: a savepoint of the barrier transaction, with the
// contract of the Tx that pgx's Tx.Begin returns. Commit releases the savepoint, Rollback rolls
// back to it, Begin makes a nested one, and once it is closed every method fails with
// pgx.ErrTxClosed; the handler cannot end the barrier transaction. The barrier makes its own
// because pgx's can only come from Tx.Begin, which sends the SAVEPOINT alone.
//
// One difference remains: pgx builds LargeObjects only for a Tx of its own, so those of an open
// savepointTx belong to the barrier transaction's pgx Tx, which the barrier never closes. They
// therefore do not fail with pgx.ErrTxClosed once the savepoint or the barrier transaction is
// over; like tx.Conn(), a handler must not keep them past its return.
type savepointTx struct {
	owner  *localTx
	name   string
	closed bool
}

var _ pgx.Tx = (*savepointTx)(nil)

// inner returns the transaction that the statements go through: a closed one once sp is closed or
// the barrier transaction is over.
func (sp *savepointTx) inner() pgx.Tx {
	if sp.closed || sp.owner.ended {
		return closedTx()
	}
	return sp.owner.tx
}

// closedTx returns a transaction whose methods all fail with pgx.ErrTxClosed, as pgx's do once
// their transaction has ended.
func closedTx() pgx.Tx {
	var b pgx.Batch
	b.BeginTx(pgx.TxOptions{})
	return pgx.FailedBatchResults(&b, pgx.ErrTxClosed).Tx()
}

// Begin makes a savepoint nested in sp.
func (sp *savepointTx) Begin(ctx context.Context) (pgx.Tx, error) {
	tx := sp.inner()
	nested := sp.owner.newSavepoint()
	if _, err := tx.Exec(ctx, "savepoint "+nested.name); err != nil {
		return nil, err
	}
	return nested, nil
}

// Commit releases the savepoint.
func (sp *savepointTx) Commit(ctx context.Context) error {
	_, err := sp.inner().Exec(ctx, "release savepoint "+sp.name)
	sp.closed = true
	return err
}

// Rollback rolls back to the savepoint.
func (sp *savepointTx) Rollback(ctx context.Context) error {
	_, err := sp.inner().Exec(ctx, "rollback to savepoint "+sp.name)
	sp.closed = true
	return err
}

func (sp *savepointTx) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	return sp.inner().CopyFrom(ctx, tableName, columnNames, rowSrc)
}

func (sp *savepointTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return sp.inner().SendBatch(ctx, b)
}

func (sp *savepointTx) LargeObjects() pgx.LargeObjects { return sp.inner().LargeObjects() }

func (sp *savepointTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return sp.inner().Prepare(ctx, name, sql)
}

func (sp *savepointTx) Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error) {
	return sp.inner().Exec(ctx, sql, arguments...)
}

func (sp *savepointTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return sp.inner().Query(ctx, sql, args...)
}

func (sp *savepointTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return sp.inner().QueryRow(ctx, sql, args...)
}

// Conn returns the connection of the barrier transaction.
func (sp *savepointTx) Conn() *pgx.Conn { return sp.owner.c }

// intact reports whether the handler left its savepoint and the transaction as it should: open,
// not aborted by an error, with no result left unread, on a working connection.
func (sp *savepointTx) intact() bool {
	pc := sp.owner.c.PgConn()
	return !sp.closed && !sp.owner.ended && !pc.IsClosed() && !pc.IsBusy() && pc.TxStatus() == 'T'
}

// keep keeps the handler's effect in the barrier transaction. An intact savepoint needs no
// release: COMMIT keeps it with the rest. Otherwise keep releases it now, as the handler's
// Commit would, which fails and says why.
func (sp *savepointTx) keep(ctx context.Context) error {
	if sp.intact() {
		sp.closed = true
		return nil
	}
	return sp.Commit(ctx)
}

// discard undoes the handler's effect: in next, when given one and the savepoint is intact, or
// now.
func (sp *savepointTx) discard(ctx context.Context, next *batch) error {
	if next == nil || !sp.intact() {
		return sp.Rollback(ctx)
	}
	sp.closed = true
	next.exec(nil, "roll back to savepoint after business failure", "rollback to savepoint "+sp.name)
	return nil
}
