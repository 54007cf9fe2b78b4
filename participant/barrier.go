package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/protocol"
)

// maxErrorBytes bounds the error text stored in the barrier and sent in a reply, so a handler that
// returns a huge error cannot make the reply exceed protocol.MaxBodyBytes.
const maxErrorBytes = 4 << 10

// maxOutputBytes bounds a handler's output: the coordinator refuses larger ones.
const maxOutputBytes = protocol.MaxOutputBytes

// errCompensatedFirst is the error stored as the action's reply when its compensation arrived
// first; the late action is refused with it.
const errCompensatedFirst = "compensated before action"

// barrier is the participant barrier: one row per (gid, step, kind), written in the same local
// transaction as the handler's effect, holding the reply that was decided.
type barrier struct {
	db *pgxpool.Pool
	// handlerTimeout is Config.HandlerTimeout.
	handlerTimeout time.Duration
	sql            barrierSQL
}

func newBarrier(db *pgxpool.Pool, schema string, handlerTimeout time.Duration) *barrier {
	return &barrier{db: db, handlerTimeout: handlerTimeout, sql: newBarrierSQL(schema)}
}

// result is what the barrier decided for one delivery.
type result struct {
	reply protocol.StepReply
	// committed: this delivery committed a new barrier decision (not a duplicate, not a retry).
	committed bool
	// duplicate: the reply was read from the barrier; no handler ran.
	duplicate bool
	// handlerRan: the handler was called.
	handlerRan bool
	// cause is the handler error behind a failed or retry reply, for the log.
	cause error
}

// errInterrupted is returned when the worker's context ended while a command was in flight: the
// transaction was rolled back and no reply must be sent.
var errInterrupted = errors.New("interrupted by shutdown")

// run applies cmd through the barrier. An error is an infrastructure failure (database, shutdown):
// nothing was decided and the command must be redelivered.
//
// The common paths cost two round trips besides the handler's statements: BEGIN, the claim and
// the handler's savepoint go in one batch, the reply and COMMIT in another.
func (b *barrier) run(ctx context.Context, cmd *protocol.StepCommand, h Handler) (result, error) {
	t, err := b.begin(ctx)
	if err != nil {
		return result{}, err
	}
	// Rolls back what was not committed; without a cancelled context it still reaches the server.
	defer t.end(context.WithoutCancel(ctx))
	return b.step(ctx, t, cmd, h)
}

// step applies cmd in t.
func (b *barrier) step(ctx context.Context, t *localTx, cmd *protocol.StepCommand, h Handler) (result, error) {
	if cmd.Kind == protocol.KindCompensate {
		return b.compensate(ctx, t, cmd, h)
	}
	return b.action(ctx, t, cmd, h)
}

func (b *barrier) action(ctx context.Context, t *localTx, cmd *protocol.StepCommand, h Handler) (result, error) {
	var claimed pgconn.CommandTag
	first := t.beginBatch()
	first.exec(&claimed, rowError("insert barrier row", cmd, protocol.KindAction), b.sql.claim, cmd.SagaID, cmd.Step, protocol.KindAction, `{}`, cmd.Attempt)
	// Made before knowing whether the handler runs, which it mostly does.
	sp := t.savepoint(first)
	if err := t.send(ctx, first); err != nil {
		return result{}, err
	}
	if claimed.RowsAffected() == 0 {
		var reopened pgconn.CommandTag
		var raw string
		again := &batch{}
		again.exec(&reopened, rowError("reopen barrier row", cmd, protocol.KindAction), b.sql.reopen, cmd.SagaID, cmd.Step, protocol.KindAction, cmd.Attempt, errCompensatedFirst)
		again.queryRow(&raw, rowError("read barrier row", cmd, protocol.KindAction), b.sql.read, cmd.SagaID, cmd.Step, protocol.KindAction)
		// The reopening must survive a business failure: the handler runs in a savepoint made
		// after it.
		sp = t.savepoint(again)
		if err := t.send(ctx, again); err != nil {
			return result{}, err
		}
		if reopened.RowsAffected() == 0 {
			// A duplicate, or the compensation came first and left a refusal here.
			r, err := decodeStored(raw, cmd, protocol.KindAction)
			if err != nil {
				return result{}, err
			}
			return result{reply: r, duplicate: true}, nil
		}
	}
	last := &batch{}
	out, herr, err := b.callInSavepoint(ctx, sp, cmd, h, last)
	if err != nil {
		return result{}, err
	}
	var reply protocol.StepReply
	switch {
	case herr == nil:
		reply = protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: out}
	case IsBusiness(herr):
		reply = protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: truncate(herr.Error())}
	default:
		if ctx.Err() != nil {
			return result{}, errInterrupted
		}
		// No barrier row is kept, so the coordinator's retry runs the handler again.
		return result{reply: retryReply(herr), handlerRan: true, cause: herr}, nil
	}
	stored, err := b.store(last, cmd, protocol.KindAction, reply)
	if err != nil {
		return result{}, err
	}
	return t.finish(ctx, last, stored, result{committed: true, handlerRan: true, cause: herr})
}

func (b *barrier) compensate(ctx context.Context, t *localTx, cmd *protocol.StepCommand, h Handler) (result, error) {
	// The refusal of a late action is planted when the action row is absent. Claiming it waits
	// for an action still in flight on the same key; the row read next is then what that action
	// decided.
	refusal, err := json.Marshal(protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: errCompensatedFirst})
	if err != nil {
		return result{}, err
	}
	var claimed, actionClaimed pgconn.CommandTag
	var actionRaw string
	first := t.beginBatch()
	first.exec(&claimed, rowError("insert barrier row", cmd, protocol.KindCompensate), b.sql.claim, cmd.SagaID, cmd.Step, protocol.KindCompensate, `{}`, cmd.Attempt)
	// Sent on the chance that the compensation is new, which it mostly is; on a duplicate they
	// are rolled back with the rest.
	first.exec(&actionClaimed, rowError("insert barrier row", cmd, protocol.KindAction), b.sql.claim, cmd.SagaID, cmd.Step, protocol.KindAction, string(refusal), cmd.Attempt)
	// Locked, so that a later action attempt cannot reopen a failure between this read and the
	// refusal written over it: the attempt's reopen waits, then finds the refusal.
	first.queryRow(&actionRaw, rowError("read barrier row", cmd, protocol.KindAction), b.sql.readLocked, cmd.SagaID, cmd.Step, protocol.KindAction)
	sp := t.savepoint(first)
	if err := t.send(ctx, first); err != nil {
		return result{}, err
	}
	if claimed.RowsAffected() == 0 {
		var raw string
		again := &batch{}
		again.queryRow(&raw, rowError("read barrier row", cmd, protocol.KindCompensate), b.sql.read, cmd.SagaID, cmd.Step, protocol.KindCompensate)
		if err := t.send(ctx, again); err != nil {
			return result{}, err
		}
		r, err := decodeStored(raw, cmd, protocol.KindCompensate)
		if err != nil {
			return result{}, err
		}
		return result{reply: r, duplicate: true}, nil
	}
	last := &batch{}
	noop := protocol.StepReply{Outcome: protocol.OutcomeSucceeded}
	ran := false
	if actionClaimed.RowsAffected() == 0 {
		action, err := decodeStored(actionRaw, cmd, protocol.KindAction)
		if err != nil {
			return result{}, err
		}
		switch action.Outcome {
		case protocol.OutcomeFailed:
			// The action's effect was never applied (or was refused): nothing to undo. Turn a
			// business failure into the refusal, so that no later attempt reopens it.
			if action.Error != errCompensatedFirst {
				if _, err := b.store(last, cmd, protocol.KindAction, protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: errCompensatedFirst}); err != nil {
					return result{}, err
				}
			}
		case protocol.OutcomeSucceeded:
			c := *cmd
			if len(c.Output) == 0 {
				c.Output = action.Output
			}
			// A compensation's business failure is not stored, so no batch follows: it is
			// rolled back to the savepoint at once, and then with everything else.
			out, herr, err := b.callInSavepoint(ctx, sp, &c, h, nil)
			if err != nil {
				return result{}, err
			}
			ran = true
			if herr != nil {
				if ctx.Err() != nil {
					return result{}, errInterrupted
				}
				// A compensation must eventually succeed: any failure is retried by the
				// coordinator, and the compensate row is rolled back with everything else.
				return result{reply: retryReply(herr), handlerRan: true, cause: herr}, nil
			}
			noop = protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: out}
		default:
			return result{}, fmt.Errorf("barrier row (%s, %s, action) holds outcome %q, want succeeded or failed", cmd.SagaID, cmd.Step, action.Outcome)
		}
	}
	stored, err := b.store(last, cmd, protocol.KindCompensate, noop)
	if err != nil {
		return result{}, err
	}
	return t.finish(ctx, last, stored, result{committed: true, handlerRan: ran})
}

// rowError names the barrier row that a statement works on, for its error.
func rowError(what string, cmd *protocol.StepCommand, kind protocol.Kind) string {
	return fmt.Sprintf("%s (%s, %s, %s)", what, cmd.SagaID, cmd.Step, kind)
}

// store queues the write of the decided reply in bt. Once bt has been sent, the returned function
// gives the reply as the database holds it, so that the first reply and every re-sent copy are
// byte for byte the same.
//
// The COMMIT that follows in the batch does not wait for the row count: the row cannot be missing,
// as this transaction inserted or found it and barrier rows are never deleted (a handler that
// deletes them breaks the barrier whatever it does).
func (b *barrier) store(bt *batch, cmd *protocol.StepCommand, kind protocol.Kind, r protocol.StepReply) (func() (protocol.StepReply, error), error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}
	var raw string
	bt.queryRow(&raw, rowError("store reply in barrier row", cmd, kind), b.sql.store, cmd.SagaID, cmd.Step, kind, string(body))
	return func() (protocol.StepReply, error) { return decodeStored(raw, cmd, kind) }, nil
}

func decodeStored(raw string, cmd *protocol.StepCommand, kind protocol.Kind) (protocol.StepReply, error) {
	var r protocol.StepReply
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return protocol.StepReply{}, fmt.Errorf("decode barrier row (%s, %s, %s): %w", cmd.SagaID, cmd.Step, kind, err)
	}
	if r.Outcome == "" {
		return protocol.StepReply{}, fmt.Errorf("barrier row (%s, %s, %s) holds no reply", cmd.SagaID, cmd.Step, kind)
	}
	return r, nil
}

// callInSavepoint runs h in the savepoint sp. herr is the handler's result; a business failure's
// effect is rolled back to the savepoint, in next when the caller sends one, else at once. err is
// an infrastructure failure.
func (b *barrier) callInSavepoint(ctx context.Context, sp *savepointTx, cmd *protocol.StepCommand, h Handler, next *batch) (out json.RawMessage, herr error, err error) {
	c := *cmd // the handler may not change what the reply is built from
	sp.owner.calls++
	limit := handlerLimit(cmd.Timeout(), b.handlerTimeout)
	hctx, cancel := handlerContext(ctx, limit)
	defer cancel()
	out, herr = call(hctx, h, sp, &c)
	if stoppedByDeadline(ctx, hctx, herr) {
		herr = fmt.Errorf("handler still running after %s, the step's timeout: %w", limit, herr)
	}
	if herr == nil {
		herr = checkOutput(out)
	}
	if IsBusiness(herr) {
		if err := sp.discard(ctx, next); err != nil {
			return nil, nil, fmt.Errorf("roll back to savepoint after business failure: %w", err)
		}
		return nil, herr, nil
	}
	if herr != nil {
		return nil, herr, nil // the caller rolls back the whole transaction
	}
	if err := sp.keep(ctx); err != nil {
		// The handler left its transaction unusable (a swallowed SQL error, or it ended the
		// transaction itself): retry rather than record a success whose effect is gone.
		return nil, fmt.Errorf("handler returned success but its transaction cannot be kept: %w", err), nil
	}
	if len(out) == 0 {
		out = nil
	}
	return out, nil, nil
}

// handlerLimit is how long a handler may run given the command's timeout and
// Config.HandlerTimeout: the shorter of the two, none when HandlerTimeout is negative; 0 for no
// limit.
func handlerLimit(command, configured time.Duration) time.Duration {
	switch {
	case configured < 0:
		return 0
	case configured > 0 && (command == 0 || configured < command):
		return configured
	}
	return command
}

// handlerContext returns the context a handler runs with: ctx, ended after limit when limit is
// positive.
func handlerContext(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	if limit <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, limit)
}

// stoppedByDeadline reports whether herr, what a handler running with hctx returned, is a
// failure that its own deadline caused: not a business failure, and not the worker stopping.
func stoppedByDeadline(ctx, hctx context.Context, herr error) bool {
	return herr != nil && !IsBusiness(herr) && ctx.Err() == nil && errors.Is(hctx.Err(), context.DeadlineExceeded)
}

func call(ctx context.Context, h Handler, tx pgx.Tx, cmd *protocol.StepCommand) (out json.RawMessage, err error) {
	defer func() {
		if v := recover(); v != nil {
			out, err = nil, &panicError{value: v, stack: debug.Stack()}
		}
	}()
	return h(ctx, tx, cmd)
}

func checkOutput(out json.RawMessage) error {
	if len(out) == 0 {
		return nil
	}
	if len(out) > maxOutputBytes {
		return Failf("handler output of %d bytes exceeds the limit of %d", len(out), maxOutputBytes)
	}
	if !json.Valid(out) {
		return Failf("handler output is not valid JSON")
	}
	return nil
}

func retryReply(err error) protocol.StepReply {
	return protocol.StepReply{Outcome: protocol.OutcomeRetry, Error: truncate(err.Error())}
}

// truncate makes an error text fit for a reply: at most maxErrorBytes, and without NUL bytes,
// which jsonb cannot store.
func truncate(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	if len(s) <= maxErrorBytes {
		return s
	}
	s = s[:maxErrorBytes]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
