package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
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

	createTable, addAttempt, insert, reopen, selectReply, updateReply string
}

func newBarrier(db *pgxpool.Pool, schema string) *barrier {
	table := pgx.Identifier{schema, "barrier"}.Sanitize()
	return &barrier{
		db: db,
		createTable: `CREATE TABLE IF NOT EXISTS ` + table + ` (
	gid        text        NOT NULL,
	step       text        NOT NULL,
	kind       text        NOT NULL,
	reply      jsonb       NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	attempt    integer     NOT NULL DEFAULT 0,
	PRIMARY KEY (gid, step, kind)
)`,
		// Tables made before the attempt column existed get it here. Their rows get the largest
		// attempt, which no command carries, so that a redelivery cannot reopen a business failure
		// decided before the upgrade (the coordinator may have taken it as final already).
		addAttempt: `ALTER TABLE ` + table + ` ADD COLUMN IF NOT EXISTS attempt integer NOT NULL DEFAULT 2147483647;
ALTER TABLE ` + table + ` ALTER COLUMN attempt SET DEFAULT 0`,
		insert: `INSERT INTO ` + table + ` (gid, step, kind, reply, attempt) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		// A business failure is final for its attempt, but a later attempt may run again: the
		// coordinator sends one only to retry forward after the pivot, or after an attempt that
		// timed out. A refusal planted by a compensation is never reopened.
		reopen: `UPDATE ` + table + ` SET reply = '{}', attempt = $4 WHERE gid = $1 AND step = $2 AND kind = $3
	AND attempt < $4 AND reply->>'outcome' = 'failed' AND coalesce(reply->>'error', '') <> $5`,
		selectReply: `SELECT reply::text FROM ` + table + ` WHERE gid = $1 AND step = $2 AND kind = $3`,
		updateReply: `UPDATE ` + table + ` SET reply = $4 WHERE gid = $1 AND step = $2 AND kind = $3 RETURNING reply::text`,
	}
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
func (b *barrier) run(ctx context.Context, cmd *protocol.StepCommand, h Handler) (result, error) {
	tx, err := b.db.Begin(ctx)
	if err != nil {
		return result{}, fmt.Errorf("begin barrier transaction: %w", err)
	}
	// Rollback after Commit is a no-op; without a cancelled context it still reaches the server.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var res result
	if cmd.Kind == protocol.KindCompensate {
		res, err = b.compensate(ctx, tx, cmd, h)
	} else {
		res, err = b.action(ctx, tx, cmd, h)
	}
	if err != nil {
		return result{}, err
	}
	if res.committed {
		if err := tx.Commit(ctx); err != nil {
			// Indeterminate: redelivery finds the stored reply if the commit did happen.
			return result{}, fmt.Errorf("commit barrier transaction: %w", err)
		}
	}
	return res, nil
}

func (b *barrier) action(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, h Handler) (result, error) {
	inserted, err := b.claim(ctx, tx, cmd, protocol.KindAction, `{}`)
	if err != nil {
		return result{}, err
	}
	if !inserted {
		tag, err := tx.Exec(ctx, b.reopen, cmd.SagaID, cmd.Step, protocol.KindAction, cmd.Attempt, errCompensatedFirst)
		if err != nil {
			return result{}, fmt.Errorf("reopen barrier row (%s, %s, action): %w", cmd.SagaID, cmd.Step, err)
		}
		if tag.RowsAffected() == 0 {
			// A duplicate, or the compensation came first and left a refusal here.
			return b.stored(ctx, tx, cmd, protocol.KindAction)
		}
	}
	out, herr, err := b.callInSavepoint(ctx, tx, cmd, h)
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
	stored, err := b.store(ctx, tx, cmd, protocol.KindAction, reply)
	if err != nil {
		return result{}, err
	}
	return result{reply: stored, committed: true, handlerRan: true, cause: herr}, nil
}

func (b *barrier) compensate(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, h Handler) (result, error) {
	inserted, err := b.claim(ctx, tx, cmd, protocol.KindCompensate, `{}`)
	if err != nil {
		return result{}, err
	}
	if !inserted {
		return b.stored(ctx, tx, cmd, protocol.KindCompensate)
	}
	// Waits for an action still in flight on the same key, then either plants the refusal of a
	// late action or finds what the action decided.
	refusal, err := json.Marshal(protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: errCompensatedFirst})
	if err != nil {
		return result{}, err
	}
	actionAbsent, err := b.claim(ctx, tx, cmd, protocol.KindAction, string(refusal))
	if err != nil {
		return result{}, err
	}
	noop := protocol.StepReply{Outcome: protocol.OutcomeSucceeded}
	ran := false
	if !actionAbsent {
		action, err := b.read(ctx, tx, cmd, protocol.KindAction)
		if err != nil {
			return result{}, err
		}
		switch action.Outcome {
		case protocol.OutcomeFailed:
			// The action's effect was never applied (or was refused): nothing to undo. Turn a
			// business failure into the refusal, so that no later attempt reopens it.
			if action.Error != errCompensatedFirst {
				if _, err := b.store(ctx, tx, cmd, protocol.KindAction, protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: errCompensatedFirst}); err != nil {
					return result{}, err
				}
			}
		case protocol.OutcomeSucceeded:
			c := *cmd
			if len(c.Output) == 0 {
				c.Output = action.Output
			}
			out, herr, err := b.callInSavepoint(ctx, tx, &c, h)
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
	stored, err := b.store(ctx, tx, cmd, protocol.KindCompensate, noop)
	if err != nil {
		return result{}, err
	}
	return result{reply: stored, committed: true, handlerRan: ran}, nil
}

// claim inserts the barrier row for (cmd.SagaID, cmd.Step, kind) and reports whether it was new.
// A concurrent transaction holding the same key makes it wait for that one to finish.
func (b *barrier) claim(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, kind, reply string) (bool, error) {
	tag, err := tx.Exec(ctx, b.insert, cmd.SagaID, cmd.Step, kind, reply, cmd.Attempt)
	if err != nil {
		return false, fmt.Errorf("insert barrier row (%s, %s, %s): %w", cmd.SagaID, cmd.Step, kind, err)
	}
	return tag.RowsAffected() == 1, nil
}

func (b *barrier) read(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, kind string) (protocol.StepReply, error) {
	var raw string
	if err := tx.QueryRow(ctx, b.selectReply, cmd.SagaID, cmd.Step, kind).Scan(&raw); err != nil {
		return protocol.StepReply{}, fmt.Errorf("read barrier row (%s, %s, %s): %w", cmd.SagaID, cmd.Step, kind, err)
	}
	return decodeStored(raw, cmd, kind)
}

func (b *barrier) stored(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, kind string) (result, error) {
	r, err := b.read(ctx, tx, cmd, kind)
	if err != nil {
		return result{}, err
	}
	return result{reply: r, duplicate: true}, nil
}

// store writes the decided reply and returns it as the database holds it, so that the first
// reply and every re-sent copy are byte for byte the same.
func (b *barrier) store(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, kind string, r protocol.StepReply) (protocol.StepReply, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return protocol.StepReply{}, fmt.Errorf("encode reply: %w", err)
	}
	var raw string
	if err := tx.QueryRow(ctx, b.updateReply, cmd.SagaID, cmd.Step, kind, string(body)).Scan(&raw); err != nil {
		return protocol.StepReply{}, fmt.Errorf("store reply in barrier row (%s, %s, %s): %w", cmd.SagaID, cmd.Step, kind, err)
	}
	return decodeStored(raw, cmd, kind)
}

func decodeStored(raw string, cmd *protocol.StepCommand, kind string) (protocol.StepReply, error) {
	var r protocol.StepReply
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return protocol.StepReply{}, fmt.Errorf("decode barrier row (%s, %s, %s): %w", cmd.SagaID, cmd.Step, kind, err)
	}
	if r.Outcome == "" {
		return protocol.StepReply{}, fmt.Errorf("barrier row (%s, %s, %s) holds no reply", cmd.SagaID, cmd.Step, kind)
	}
	return r, nil
}

// callInSavepoint runs h inside a savepoint of tx. herr is the handler's result; a business
// failure has already been rolled back to the savepoint. err is an infrastructure failure.
func (b *barrier) callInSavepoint(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, h Handler) (out json.RawMessage, herr error, err error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("savepoint before handler: %w", err)
	}
	c := *cmd // the handler may not change what the reply is built from
	out, herr = call(ctx, h, sp, &c)
	if herr == nil {
		herr = checkOutput(out)
	}
	if IsBusiness(herr) {
		if err := sp.Rollback(ctx); err != nil {
			return nil, nil, fmt.Errorf("roll back to savepoint after business failure: %w", err)
		}
		return nil, herr, nil
	}
	if herr != nil {
		return nil, herr, nil // the caller rolls back the whole transaction
	}
	if err := sp.Commit(ctx); err != nil {
		// The handler left its transaction unusable (a swallowed SQL error, or it ended the
		// transaction itself): retry rather than record a success whose effect is gone.
		return nil, fmt.Errorf("handler returned success but its transaction cannot be kept: %w", err), nil
	}
	if len(out) == 0 {
		out = nil
	}
	return out, nil, nil
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
