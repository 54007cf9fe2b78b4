package participant

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/protocol"
)

// barrierTx is one barrier transaction on a connection of its own. The barrier sends the
// statements that do not wait on each other's results together, as a batch that costs one round
// trip: BEGIN goes with the claim and the handler's savepoint, COMMIT with the reply. pgx's Tx
// cannot do that, as its Begin, Commit and savepoints each cost a round trip of their own.
type barrierTx struct {
	conn *pgxpool.Conn
	// c is conn's connection, which stays reachable after conn is released (pgx's Tx.Conn does
	// not fail either).
	c *pgx.Conn
	// tx is the transaction that the first batch began (pgx.Batch.BeginTx). The handler's
	// statements go through it, but the barrier ends the transaction in its own batches and in
	// end, never through tx.
	tx pgx.Tx
	// savepoints counts the savepoints made, which names the next one.
	savepoints int
	// ended: the transaction is over, and the handler's Tx must fail with pgx.ErrTxClosed.
	ended bool
	// calls counts the handler calls, so that a group can tell whether a handler broke it.
	calls int

	// The rest serves a transaction that decides a group of commands (see barrier.runGroup).
	group bool
	// begun: BEGIN has been queued.
	begun bool
	// cmdSP names the savepoint that the current command of a group began with.
	cmdSP string
	// pending holds the statements that end the previous command of a group (its reply, or the
	// rollback to its savepoint); they travel with the next batch.
	pending *batch
	// kept, set when a command of a group kept a decision, gives its reply once the statements
	// that store it have been sent.
	kept func() (protocol.StepReply, error)
}

func (b *barrier) begin(ctx context.Context) (*barrierTx, error) {
	conn, err := b.db.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin barrier transaction: %w", err)
	}
	return &barrierTx{conn: conn, c: conn.Conn()}, nil
}

// end rolls back what the batches did not commit and returns the connection to the pool. It runs
// on every way out of barrier.run, a handler's panic or a cancelled context included, so ctx must
// not be cancelled.
func (t *barrierTx) end(ctx context.Context) {
	t.ended = true
	pc := t.c.PgConn()
	if !pc.IsClosed() && pc.TxStatus() != 'I' {
		// If the rollback fails (a handler left rows open, the connection broke), the
		// connection is still in a transaction, and pgxpool closes it on Release instead of
		// reusing it.
		_, _ = t.c.Exec(ctx, "rollback")
	}
	t.conn.Release()
}

// beginBatch returns the batch that begins a command: it begins the transaction, unless an
// earlier command of the group did. In a group it starts with the statements that end the
// previous command, and makes the command's savepoint.
func (t *barrierTx) beginBatch() *batch {
	bt := t.takePending()
	if !t.begun {
		bt.b.BeginTx(pgx.TxOptions{})
		bt.steps = append(bt.steps, step{what: "begin barrier transaction", sql: bt.b.QueuedQueries[0].SQL, read: execResult(nil)})
		t.begun = true
	}
	if t.group {
		t.cmdSP = "cmd_" + strconv.Itoa(t.savepoints)
		t.savepoints++
		bt.exec(nil, "savepoint before command", "savepoint "+t.cmdSP)
	}
	return bt
}

// takePending returns a batch that starts with the pending statements of the previous command,
// if any; they are its tail.
func (t *barrierTx) takePending() *batch {
	bt := t.pending
	t.pending = nil
	if bt == nil {
		return &batch{}
	}
	bt.tail = len(bt.steps)
	return bt
}

// finish ends a command that decided, whose last statements (storing the reply) are in last. A
// command alone commits them and reads the reply at once. In a group they wait, with the release
// of the command's savepoint, for the next command's first batch or the group's COMMIT, and
// kept reads the reply once they have been sent.
func (t *barrierTx) finish(ctx context.Context, last *batch, stored func() (protocol.StepReply, error), res result) (result, error) {
	if t.group {
		last.exec(nil, "release savepoint of command", "release savepoint "+t.cmdSP)
		t.pending, t.kept = last, stored
		return res, nil
	}
	last.commit()
	if err := t.send(ctx, last); err != nil {
		return result{}, err
	}
	r, err := stored()
	if err != nil {
		return result{}, err
	}
	res.reply = r
	return res, nil
}

// undo rolls back everything the command of the group that began with savepoint sp did: in the
// next batch, or at once when the transaction is aborted, as pgx prepares a batch's new
// statements before it runs any, and an aborted transaction prepares nothing but a rollback.
func (t *barrierTx) undo(ctx context.Context, sp string) error {
	bt := t.takePending()
	bt.exec(nil, "roll back to savepoint of command", "rollback to savepoint "+sp)
	if t.c.PgConn().TxStatus() == 'E' {
		if err := t.send(ctx, bt); err != nil {
			return err
		}
		bt = &batch{}
	}
	bt.exec(nil, "release savepoint of command", "release savepoint "+sp)
	t.pending = bt
	return nil
}

// usable reports whether the transaction can go on after a command: the connection works, has no
// result left unread, and is in the transaction (aborted or not: a rollback to a savepoint mends
// an aborted one).
func (t *barrierTx) usable() bool {
	pc := t.c.PgConn()
	if pc.IsClosed() || pc.IsBusy() {
		return false
	}
	s := pc.TxStatus()
	return s == 'T' || s == 'E'
}

// send sends bt and reads its results. An error names the statement that failed, or, when the
// connection broke, every statement still unanswered: PostgreSQL may have run any of them, the
// COMMIT included.
func (t *barrierTx) send(ctx context.Context, bt *batch) error {
	br := t.c.SendBatch(ctx, &bt.b)
	i, err := bt.read(br)
	if cerr := br.Close(); err == nil && cerr != nil {
		i, err = len(bt.steps)-1, cerr
	}
	if tx := br.Tx(); tx != nil {
		t.tx = tx
	}
	if err != nil {
		i = bt.blame(i, err)
		err = bt.failed(i, err, t.c.PgConn().IsClosed())
		if i < bt.tail {
			return &tailError{err: err}
		}
		return err
	}
	return nil
}

// tailError is the error of a statement that ends the previous command of a group, sent with the
// next command's first batch: it belongs to the previous command, and none of the next
// command's statements ran.
type tailError struct{ err error }

func (e *tailError) Error() string { return e.err.Error() }
func (e *tailError) Unwrap() error { return e.err }

// savepoint queues the savepoint that the handler runs in.
func (t *barrierTx) savepoint(bt *batch) *savepointTx {
	sp := t.newSavepoint()
	bt.exec(nil, "savepoint before handler", "savepoint "+sp.name)
	return sp
}

func (t *barrierTx) newSavepoint() *savepointTx {
	t.savepoints++
	return &savepointTx{owner: t, name: "sp_" + strconv.Itoa(t.savepoints)}
}

// batch is statements sent to PostgreSQL together, with one Sync: it runs them in order and,
// after an error, skips the rest; the transaction is then aborted, and end rolls it back.
type batch struct {
	b     pgx.Batch
	steps []step
	// tail counts the leading steps that end the previous command of a group.
	tail int
}

// step is one statement of a batch.
type step struct {
	// what names the statement in its error.
	what string
	sql  string
	read func(pgx.BatchResults) error
}

// exec queues a statement whose command tag, if tag is not nil, is stored in tag.
func (bt *batch) exec(tag *pgconn.CommandTag, what, sql string, args ...any) {
	bt.b.Queue(sql, args...)
	bt.steps = append(bt.steps, step{what: what, sql: sql, read: execResult(tag)})
}

// queryRow queues a statement that returns one text value, stored in dst.
func (bt *batch) queryRow(dst *string, what, sql string, args ...any) {
	bt.b.Queue(sql, args...)
	bt.steps = append(bt.steps, step{what: what, sql: sql, read: func(br pgx.BatchResults) error {
		return br.QueryRow().Scan(dst)
	}})
}

// commit queues the COMMIT that ends the batch and the transaction.
func (bt *batch) commit() {
	bt.b.Queue("commit")
	bt.steps = append(bt.steps, step{what: "commit barrier transaction", sql: "commit", read: func(br pgx.BatchResults) error {
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
	for i, s := range bt.steps {
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
		for j, s := range bt.steps {
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
		whats := make([]string, 0, len(bt.steps)-i)
		for _, s := range bt.steps[i:] {
			whats = append(whats, s.what)
		}
		return fmt.Errorf("%s: no answer: %w", strings.Join(whats, ", "), err)
	}
	return fmt.Errorf("%s: %w", bt.steps[i].what, err)
}

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
	owner  *barrierTx
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
