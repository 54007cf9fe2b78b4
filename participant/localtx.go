package participant

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// localTx is the local transaction in which the barrier decides commands: one transaction on a
// connection of its own, sent in pipelined batches. The statements that do not wait on each
// other's results go together, as a batch (batch.go) that costs one round trip: BEGIN goes with
// the claim and the handler's savepoint, COMMIT with the reply. pgx's Tx cannot do that, as its
// Begin, Commit and savepoints each cost a round trip of their own.
type localTx struct {
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
	// lockWait, when positive, is the lock_timeout of the statements that take the current
	// command's barrier row (barrier.lockWaitFor). unbound: the handler runs with the session's
	// own, as the bound is shorter than the handler's limit. bounded: a bound was set in this
	// transaction, and a rollback may have kept it.
	lockWait         time.Duration
	unbound, bounded bool

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
	kept func() (storedReply, error)
}

func (b *barrier) begin(ctx context.Context) (*localTx, error) {
	conn, err := b.db.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin barrier transaction: %w", err)
	}
	return &localTx{conn: conn, c: conn.Conn()}, nil
}

// end rolls back what the batches did not commit and returns the connection to the pool. It runs
// on every way out of a barrier transaction, a handler's panic or a cancelled context included, so
// ctx must not be cancelled.
func (t *localTx) end(ctx context.Context) {
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
func (t *localTx) beginBatch() *batch {
	bt := t.takePending()
	if !t.begun {
		bt.b.BeginTx(pgx.TxOptions{})
		bt.stmts = append(bt.stmts, stmt{what: "begin barrier transaction", sql: bt.b.QueuedQueries[0].SQL, read: execResult(nil)})
		t.begun = true
	}
	if t.group {
		t.cmdSP = "cmd_" + strconv.Itoa(t.savepoints)
		t.savepoints++
		bt.exec(nil, "savepoint before command", "savepoint "+t.cmdSP)
	}
	t.boundLockWait(bt)
	return bt
}

// boundLockWait queues the lock_timeout of the statements that take a command's barrier row, or
// the session's own when the command has no bound and an earlier command of the group set one.
func (t *localTx) boundLockWait(bt *batch) {
	switch {
	case t.lockWait > 0:
		ms := max(1, t.lockWait.Milliseconds()) // 0 would mean no bound
		bt.exec(nil, "bound the wait for the barrier row", "select set_config('lock_timeout', $1, true)", strconv.FormatInt(ms, 10))
		t.bounded = true
	case t.bounded:
		bt.exec(nil, "unbound the wait for the barrier row", "set local lock_timeout to default")
	}
}

// takePending returns a batch that starts with the pending statements of the previous command,
// if any; they are its tail.
func (t *localTx) takePending() *batch {
	bt := t.pending
	t.pending = nil
	if bt == nil {
		return &batch{}
	}
	bt.tail = len(bt.stmts)
	return bt
}

// finish ends a command that decided, whose last statements (storing the reply) are in last. A
// command alone commits them and reads the reply at once. In a group they wait, with the release
// of the command's savepoint, for the next command's first batch or the group's COMMIT, and
// kept reads the reply once they have been sent.
func (t *localTx) finish(ctx context.Context, last *batch, stored func() (storedReply, error), d decision) (decision, error) {
	if t.group {
		last.exec(nil, "release savepoint of command", "release savepoint "+t.cmdSP)
		t.pending, t.kept = last, stored
		return d, nil
	}
	last.commit()
	if err := t.send(ctx, last); err != nil {
		return decision{}, err
	}
	r, err := stored()
	if err != nil {
		return decision{}, err
	}
	d.reply = r
	return d, nil
}

// undo rolls back everything the command of the group that began with savepoint sp did: in the
// next batch, or at once when the transaction is aborted, as pgx prepares a batch's new
// statements before it runs any, and an aborted transaction prepares nothing but a rollback.
func (t *localTx) undo(ctx context.Context, sp string) error {
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
func (t *localTx) usable() bool {
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
func (t *localTx) send(ctx context.Context, bt *batch) error {
	br := t.c.SendBatch(ctx, &bt.b)
	i, err := bt.read(br)
	if cerr := br.Close(); err == nil && cerr != nil {
		i, err = len(bt.stmts)-1, cerr
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
func (t *localTx) savepoint(bt *batch) *savepointTx {
	sp := t.newSavepoint()
	bt.exec(nil, "savepoint before handler", "savepoint "+sp.name)
	if t.unbound {
		// Inside the savepoint: a rollback to it bounds the barrier's own statements again.
		bt.exec(nil, "unbound the handler's lock waits", "set local lock_timeout to default")
	}
	return sp
}

func (t *localTx) newSavepoint() *savepointTx {
	t.savepoints++
	return &savepointTx{owner: t, name: "sp_" + strconv.Itoa(t.savepoints)}
}
