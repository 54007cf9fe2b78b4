package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/protocol"
)

// barrier is the participant barrier: one row per (gid, step, kind), written in the same local
// transaction as the handler's effect, holding the reply that was decided. Saga steps and
// two-phase-commit commands share the table and this engine (decide); what differs between
// command kinds is in their kindRules (saga_rules.go, twopc_rules.go).
type barrier struct {
	db *pgxpool.Pool
	// handlerTimeout is Config.HandlerTimeout, lockWait Config.LockWait.
	handlerTimeout, lockWait time.Duration
	sql                      barrierSQL
	// hung reports handlers that outlive their deadline (nil: none).
	hung *hungWatch
}

func newBarrier(db *pgxpool.Pool, schema string, handlerTimeout, lockWait time.Duration) *barrier {
	return &barrier{db: db, handlerTimeout: handlerTimeout, lockWait: lockWait, sql: newBarrierSQL(schema)}
}

// rowKey names a barrier row: (saga id, step, kind) for a saga step, (transaction id,
// participant, kind) for a two-phase-commit command.
type rowKey struct {
	gid, step string
	kind      protocol.Kind
}

func (k rowKey) String() string { return fmt.Sprintf("(%s, %s, %s)", k.gid, k.step, k.kind) }

// storedReply is a reply as a barrier row holds it: a protocol.StepReply, or a protocol.TxReply,
// which has no output.
type storedReply struct {
	Outcome protocol.Outcome `json:"outcome"`
	Output  json.RawMessage  `json:"output,omitempty"`
	Error   string           `json:"error,omitempty"`
}

// kindRules are what one command kind adds to the engine. decide claims the command's row
// (replaying the stored reply when it was decided before), asks gate whether the handler runs,
// runs it in a savepoint, lets keep turn its result into the reply, and stores that reply.
type kindRules struct {
	row     rowKey
	attempt int
	// first, when set, queues statements that go with the claim in its batch: reads of the
	// rows that gate looks at, and the refusal that an early compensation or ABORT plants.
	first func(bt *batch)
	// reopens: a business failure stored in row by an earlier attempt runs again.
	reopens bool
	// gate, when set, decides once row is claimed: a reply to store without running the
	// handler, nil to run it, or an error. Statements it queues in last go with the reply.
	gate func(ctx context.Context, t *localTx, last *batch) (noop *storedReply, err error)
	// lockWait bounds the wait for the row while another transaction holds it (0: no bound;
	// barrier.lockWaitFor).
	lockWait time.Duration
	// limit bounds the handler's run (0: no limit); late, needed with a limit, is the error of
	// a handler stopped by it.
	limit time.Duration
	late  func(limit time.Duration, herr error) error
	// call runs the handler in tx.
	call func(ctx context.Context, tx pgx.Tx) (json.RawMessage, error)
	// keep turns the handler's result into the reply to store, queuing in last what goes with
	// it; ok is false for a failure that keeps nothing.
	keep func(out json.RawMessage, herr error, last *batch) (r storedReply, ok bool)
}

// decision is what the barrier decided for one command.
type decision struct {
	reply storedReply
	// committed: this delivery decided the command and stored the reply (not a duplicate, not
	// transient).
	committed bool
	// duplicate: the reply was read from the barrier; no handler ran.
	duplicate bool
	// handlerRan: the handler was called.
	handlerRan bool
	// transient: the handler failed for a passing reason; nothing is kept, and reply is empty.
	transient bool
	// cause is the handler error behind a failure, for the log.
	cause error
	// final: the command's saga or transaction is final (a final notice said so); it has no
	// effect and gets no reply, as the coordinator needs none.
	final bool
}

// outcomeFinal is what the read statement gives for a final gid; it is never a reply.
const outcomeFinal protocol.Outcome = "final"

// errInterrupted is returned when the worker's context ended while a command was in flight: the
// transaction was rolled back and no reply must be sent.
var errInterrupted = errors.New("interrupted by shutdown")

// decide applies the command of k in t. An error is an infrastructure failure, a shutdown or a
// violationError: nothing was decided.
//
// The common paths cost two round trips besides the handler's statements: BEGIN, the claim and
// the handler's savepoint go in one batch, the reply and COMMIT in another.
func (b *barrier) decide(ctx context.Context, t *localTx, k kindRules) (decision, error) {
	var claimed pgconn.CommandTag
	// A handler stopped at its limit cannot wait longer than that for a lock anyway: only a
	// shorter bound is taken off before it runs.
	t.lockWait, t.unbound = k.lockWait, k.lockWait > 0 && (k.limit == 0 || k.lockWait < k.limit)
	first := t.beginBatch()
	b.claim(first, &claimed, k.row, `{}`, k.attempt)
	if k.first != nil {
		k.first(first)
	}
	// Made before knowing whether the handler runs, which it mostly does.
	sp := t.savepoint(first)
	if err := t.send(ctx, first); err != nil {
		return b.lockedOut(k, err)
	}
	if claimed.RowsAffected() == 0 {
		d, reopened, err := b.replay(ctx, t, k)
		if err != nil || reopened == nil {
			return d, err
		}
		sp = reopened
	}
	last := &batch{}
	var noop *storedReply
	if k.gate != nil {
		var err error
		if noop, err = k.gate(ctx, t, last); err != nil {
			return decision{}, err
		}
	}
	d := decision{committed: true}
	if noop != nil {
		d.reply = *noop
	} else {
		out, herr, err := callInSavepoint(ctx, sp, k, last, b.hung)
		if err != nil {
			return decision{}, err
		}
		r, ok := k.keep(out, herr, last)
		if !ok {
			if ctx.Err() != nil {
				return decision{}, errInterrupted
			}
			// No barrier row is kept, so that the command runs again.
			return decision{transient: true, handlerRan: true, cause: herr}, nil
		}
		d.reply, d.handlerRan, d.cause = r, true, herr
	}
	stored, err := b.store(last, k.row, d.reply)
	if err != nil {
		return decision{}, err
	}
	return t.finish(ctx, last, stored, d)
}

// replay answers a command whose row was decided before with the stored reply: a duplicate, or
// a command refused by an early compensation or ABORT. A command of a final gid claims no row and
// is answered here too, with no reply. When k reopens the row instead, it returns
// the savepoint the handler runs in, made after the reopening so that the reopening survives a
// business failure.
func (b *barrier) replay(ctx context.Context, t *localTx, k kindRules) (decision, *savepointTx, error) {
	var reopened pgconn.CommandTag
	var raw string
	var sp *savepointTx
	again := &batch{}
	if k.reopens {
		t.boundLockWait(again) // the reopening waits for a transaction that holds the row
		b.reopen(again, &reopened, k.row, k.attempt)
	}
	b.read(again, &raw, k.row)
	if k.reopens {
		sp = t.savepoint(again)
	}
	if err := t.send(ctx, again); err != nil {
		d, err := b.lockedOut(k, err)
		return d, nil, err
	}
	if reopened.RowsAffected() == 1 {
		return decision{}, sp, nil
	}
	r, err := decodeStored(raw, k.row)
	if err != nil {
		return decision{}, nil, err
	}
	if r.Outcome == outcomeFinal {
		return decision{final: true}, nil, nil
	}
	return decision{reply: r, duplicate: true}, nil, nil
}

// lockWaitFor is how long a command whose timeout is timeout (0: none) waits for its barrier row
// (Config.LockWait): its timeout by default, at most Config.LockWait when that is positive, and
// no bound (0) when it is negative.
func (b *barrier) lockWaitFor(timeout time.Duration) time.Duration {
	switch {
	case b.lockWait < 0:
		return 0
	case b.lockWait == 0 || (timeout > 0 && timeout < b.lockWait):
		return timeout
	}
	return b.lockWait
}

// lockedOut turns err, the failure of the statements that take the command's row, into a
// transient decision when the row stayed held past Config.LockWait (SQLSTATE 55P03,
// lock_not_available): nothing is kept, and the command is tried again later instead of waiting
// behind the transaction that holds the row. Any other error is returned as it is.
func (b *barrier) lockedOut(k kindRules, err error) (decision, error) {
	var pgErr *pgconn.PgError
	var tail *tailError
	if errors.As(err, &tail) || !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
		return decision{}, err
	}
	return decision{transient: true, cause: fmt.Errorf(
		"barrier row %s was held by another transaction for longer than %s (Config.LockWait): a handler of this step is still running, or hung; trying again later: %w",
		k.row, k.lockWait, err)}, nil
}

// verdict is what the barrier decided for one command besides its reply, alike for a saga step
// and a transaction command.
type verdict struct {
	// committed: this delivery committed a new barrier decision (not a duplicate, not a retry).
	committed bool
	// duplicate: the reply was read from the barrier; no handler ran.
	duplicate bool
	// handlerRan: the handler was called.
	handlerRan bool
	// cause is the handler error behind a failed, retried or requeued command, for the log.
	cause error
	// final: the saga or transaction is final; nothing was decided and no reply is due
	// (decision.final).
	final bool
}

// verdict returns what d decided besides its reply.
func (d decision) verdict() verdict {
	return verdict{committed: d.committed, duplicate: d.duplicate, handlerRan: d.handlerRan, cause: d.cause, final: d.final}
}

// keepLasting is the keep of a handler that runs once with a lasting effect, an action or a
// PREPARE: success stores ok with the output, after queuing onOK's statements (when given) in the
// last batch; a business failure stores failed with its error; any other failure keeps nothing.
func keepLasting(ok, failed protocol.Outcome, onOK func(last *batch)) func(json.RawMessage, error, *batch) (storedReply, bool) {
	return func(out json.RawMessage, herr error, last *batch) (storedReply, bool) {
		switch {
		case herr == nil:
			if onOK != nil {
				onOK(last)
			}
			return storedReply{Outcome: ok, Output: out}, true
		case IsBusiness(herr):
			return storedReply{Outcome: failed, Error: truncate(herr.Error())}, true
		}
		return storedReply{}, false
	}
}
