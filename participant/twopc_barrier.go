package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/protocol"
)

// errAbortedFirst is the NO stored in place of a vote when the ABORT arrived before the PREPARE;
// the late PREPARE is answered with it.
const errAbortedFirst = "aborted before prepare"

// txBarrier is the barrier of two-phase-commit commands. Its rows live in the saga barrier's
// table, keyed (gid = transaction id, step = participant name, kind = prepare|commit|abort), each
// holding the stored reply (a protocol.TxReply). The prepared table records the transactions
// that voted YES and await their decision; a row lives from the YES to the COMMIT or ABORT, in
// the same local transactions.
type txBarrier struct {
	db *pgxpool.Pool
	// handlerTimeout is Config.HandlerTimeout: it bounds Prepare like a step's handler.
	handlerTimeout time.Duration
	sql            barrierSQL
}

func newTxBarrier(db *pgxpool.Pool, schema string, handlerTimeout time.Duration) *txBarrier {
	return &txBarrier{db: db, handlerTimeout: handlerTimeout, sql: newBarrierSQL(schema)}
}

// txResult is what the barrier decided for one transaction command.
type txResult struct {
	reply protocol.TxReply
	// committed: this delivery committed a new barrier decision.
	committed bool
	// duplicate: the reply was read from the barrier; no handler ran.
	duplicate bool
	// handlerRan: a handler was called.
	handlerRan bool
	// requeue: the handler failed transiently; everything was rolled back and nothing is
	// replied. cause says why.
	requeue bool
	cause   error
}

// violationError is a command that the protocol rules out (a COMMIT without a YES, an ABORT after
// a COMMIT). No retry can make it right: it is dead-lettered.
type violationError struct{ msg string }

func (e *violationError) Error() string { return e.msg }

func violation(format string, args ...any) error {
	return &violationError{msg: fmt.Sprintf(format, args...)}
}

// run applies cmd through the barrier. An error is an infrastructure failure, an interruption or
// a violationError: nothing was decided.
func (b *txBarrier) run(ctx context.Context, cmd *protocol.TxCommand, h *TxHandlers) (txResult, error) {
	tx, err := b.db.Begin(ctx)
	if err != nil {
		return txResult{}, fmt.Errorf("begin barrier transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var res txResult
	switch cmd.Kind {
	case protocol.KindPrepare:
		res, err = b.prepare(ctx, tx, cmd, h.Prepare)
	case protocol.KindCommit:
		res, err = b.commit(ctx, tx, cmd, h.Commit)
	case protocol.KindAbort:
		res, err = b.abort(ctx, tx, cmd, h.Abort)
	default:
		err = violation("transaction command kind %q is not prepare, commit or abort", cmd.Kind)
	}
	if err != nil {
		return txResult{}, err
	}
	if res.committed {
		if err := tx.Commit(ctx); err != nil {
			// Indeterminate: a redelivery finds the stored reply if the commit did happen.
			return txResult{}, fmt.Errorf("commit barrier transaction: %w", err)
		}
	}
	return res, nil
}

func (b *txBarrier) prepare(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand, h TxHandler) (txResult, error) {
	inserted, err := b.claim(ctx, tx, cmd, protocol.KindPrepare, `{}`)
	if err != nil {
		return txResult{}, err
	}
	if !inserted {
		// A duplicate, or the ABORT came first and stored a NO here.
		return b.stored(ctx, tx, cmd, protocol.KindPrepare)
	}
	herr, err := callTxInSavepoint(ctx, tx, cmd, h, handlerLimit(cmd.Timeout(), b.handlerTimeout))
	if err != nil {
		return txResult{}, err
	}
	var reply protocol.TxReply
	switch {
	case herr == nil:
		var payload *string
		if len(cmd.Payload) > 0 {
			s := string(cmd.Payload)
			payload = &s
		}
		if _, err := tx.Exec(ctx, b.sql.recordPrepared, cmd.TxID, cmd.Participant, payload); err != nil {
			return txResult{}, fmt.Errorf("record prepared transaction %s: %w", cmd.TxID, err)
		}
		reply = protocol.TxReply{Outcome: protocol.OutcomeVoteYes}
	case IsBusiness(herr):
		reply = protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: truncate(herr.Error())}
	default:
		if ctx.Err() != nil {
			return txResult{}, errInterrupted
		}
		return txResult{requeue: true, handlerRan: true, cause: herr}, nil
	}
	stored, err := b.store(ctx, tx, cmd, protocol.KindPrepare, reply)
	if err != nil {
		return txResult{}, err
	}
	return txResult{reply: stored, committed: true, handlerRan: true, cause: herr}, nil
}

func (b *txBarrier) commit(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand, h TxHandler) (txResult, error) {
	inserted, err := b.claim(ctx, tx, cmd, protocol.KindCommit, `{}`)
	if err != nil {
		return txResult{}, err
	}
	if !inserted {
		return b.stored(ctx, tx, cmd, protocol.KindCommit)
	}
	vote, found, err := b.read(ctx, tx, cmd, protocol.KindPrepare)
	if err != nil {
		return txResult{}, err
	}
	switch {
	case !found:
		return txResult{}, violation("COMMIT of transaction %s, which this participant never prepared: its database lost the prepare, or the coordinator broke the protocol", cmd.TxID)
	case vote.Outcome != protocol.OutcomeVoteYes:
		return txResult{}, violation("COMMIT of transaction %s, for which this participant voted NO (%s)", cmd.TxID, vote.Error)
	}
	payload, found, err := b.forget(ctx, tx, cmd)
	if err != nil {
		return txResult{}, err
	}
	if !found {
		return txResult{}, violation("COMMIT of transaction %s, which this participant already aborted", cmd.TxID)
	}
	return b.decide(ctx, tx, cmd, h, payload)
}

func (b *txBarrier) abort(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand, h TxHandler) (txResult, error) {
	inserted, err := b.claim(ctx, tx, cmd, protocol.KindAbort, `{}`)
	if err != nil {
		return txResult{}, err
	}
	if !inserted {
		return b.stored(ctx, tx, cmd, protocol.KindAbort)
	}
	// Waits for a PREPARE still in flight, then either stores the NO that refuses a late PREPARE
	// or finds the vote.
	refusal, err := json.Marshal(protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: errAbortedFirst})
	if err != nil {
		return txResult{}, err
	}
	neverPrepared, err := b.claim(ctx, tx, cmd, protocol.KindPrepare, string(refusal))
	if err != nil {
		return txResult{}, err
	}
	ack := protocol.TxReply{Outcome: protocol.OutcomeAck}
	if !neverPrepared {
		vote, _, err := b.read(ctx, tx, cmd, protocol.KindPrepare)
		if err != nil {
			return txResult{}, err
		}
		switch vote.Outcome {
		case protocol.OutcomeVoteNo:
			// Nothing was reserved.
		case protocol.OutcomeVoteYes:
			payload, found, err := b.forget(ctx, tx, cmd)
			if err != nil {
				return txResult{}, err
			}
			if !found {
				return txResult{}, violation("ABORT of transaction %s, which this participant already committed", cmd.TxID)
			}
			return b.decide(ctx, tx, cmd, h, payload)
		default:
			return txResult{}, fmt.Errorf("barrier row (%s, %s, prepare) holds outcome %q, want vote_yes or vote_no", cmd.TxID, cmd.Participant, vote.Outcome)
		}
	}
	stored, err := b.store(ctx, tx, cmd, protocol.KindAbort, ack)
	if err != nil {
		return txResult{}, err
	}
	return txResult{reply: stored, committed: true}, nil
}

// decide runs the COMMIT or ABORT handler of a prepared transaction and stores the ack. payload
// is the prepared record's, used when the command carries none.
func (b *txBarrier) decide(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand, h TxHandler, payload string) (txResult, error) {
	c := *cmd
	if len(c.Payload) == 0 && payload != "" {
		c.Payload = json.RawMessage(payload)
	}
	herr, err := callTxInSavepoint(ctx, tx, &c, h, 0) // a decision's handler must succeed in the end
	if err != nil {
		return txResult{}, err
	}
	if herr != nil {
		if ctx.Err() != nil {
			return txResult{}, errInterrupted
		}
		// The decision is final: a failure, even a business one, is tried again.
		return txResult{requeue: true, handlerRan: true, cause: herr}, nil
	}
	stored, err := b.store(ctx, tx, cmd, cmd.Kind, protocol.TxReply{Outcome: protocol.OutcomeAck})
	if err != nil {
		return txResult{}, err
	}
	return txResult{reply: stored, committed: true, handlerRan: true}, nil
}

// forget deletes the prepared record and returns its payload; found is false when there is none.
func (b *txBarrier) forget(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) (payload string, found bool, err error) {
	err = tx.QueryRow(ctx, b.sql.forgetPrepared, cmd.TxID, cmd.Participant).Scan(&payload)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("delete prepared record of transaction %s: %w", cmd.TxID, err)
	}
	return payload, true, nil
}

// claim inserts the barrier row (cmd.TxID, cmd.Participant, kind) and reports whether it was new.
// A concurrent transaction holding the same key makes it wait for that one to finish.
func (b *txBarrier) claim(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand, kind protocol.Kind, reply string) (bool, error) {
	tag, err := tx.Exec(ctx, b.sql.claim, cmd.TxID, cmd.Participant, kind, reply, cmd.Attempt)
	if err != nil {
		return false, fmt.Errorf("insert barrier row (%s, %s, %s): %w", cmd.TxID, cmd.Participant, kind, err)
	}
	return tag.RowsAffected() == 1, nil
}

func (b *txBarrier) read(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand, kind protocol.Kind) (protocol.TxReply, bool, error) {
	var raw string
	err := tx.QueryRow(ctx, b.sql.read, cmd.TxID, cmd.Participant, kind).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return protocol.TxReply{}, false, nil
	}
	if err != nil {
		return protocol.TxReply{}, false, fmt.Errorf("read barrier row (%s, %s, %s): %w", cmd.TxID, cmd.Participant, kind, err)
	}
	r, err := decodeStoredTx(raw, cmd, kind)
	return r, err == nil, err
}

func (b *txBarrier) stored(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand, kind protocol.Kind) (txResult, error) {
	r, found, err := b.read(ctx, tx, cmd, kind)
	if err != nil {
		return txResult{}, err
	}
	if !found {
		return txResult{}, fmt.Errorf("barrier row (%s, %s, %s) vanished", cmd.TxID, cmd.Participant, kind)
	}
	return txResult{reply: r, duplicate: true}, nil
}

// store writes the decided reply and returns it as the database holds it, so that every copy of
// the reply is the same.
func (b *txBarrier) store(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand, kind protocol.Kind, r protocol.TxReply) (protocol.TxReply, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return protocol.TxReply{}, fmt.Errorf("encode reply: %w", err)
	}
	var raw string
	if err := tx.QueryRow(ctx, b.sql.store, cmd.TxID, cmd.Participant, kind, string(body)).Scan(&raw); err != nil {
		return protocol.TxReply{}, fmt.Errorf("store reply in barrier row (%s, %s, %s): %w", cmd.TxID, cmd.Participant, kind, err)
	}
	return decodeStoredTx(raw, cmd, kind)
}

func decodeStoredTx(raw string, cmd *protocol.TxCommand, kind protocol.Kind) (protocol.TxReply, error) {
	var r protocol.TxReply
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return protocol.TxReply{}, fmt.Errorf("decode barrier row (%s, %s, %s): %w", cmd.TxID, cmd.Participant, kind, err)
	}
	if r.Outcome == "" {
		return protocol.TxReply{}, fmt.Errorf("barrier row (%s, %s, %s) holds no reply", cmd.TxID, cmd.Participant, kind)
	}
	return r, nil
}

// callTxInSavepoint runs h inside a savepoint of tx. herr is the handler's result; a business
// failure has already been rolled back to the savepoint. err is an infrastructure failure. A
// positive limit ends the handler's context after that long; a handler that fails because of it
// is a business failure (for a PREPARE: vote NO, the coordinator has aborted by then).
func callTxInSavepoint(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand, h TxHandler, limit time.Duration) (herr error, err error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("savepoint before handler: %w", err)
	}
	c := *cmd // the handler may not change what the reply is built from
	hctx, cancel := handlerContext(ctx, limit)
	defer cancel()
	herr = callTx(hctx, h, sp, &c)
	if stoppedByDeadline(ctx, hctx, herr) {
		herr = Failf("prepare still running after %s, the prepare timeout: %v", limit, herr)
	}
	if IsBusiness(herr) {
		if err := sp.Rollback(ctx); err != nil {
			return nil, fmt.Errorf("roll back to savepoint after business failure: %w", err)
		}
		return herr, nil
	}
	if herr != nil {
		return herr, nil // the caller rolls back the whole transaction
	}
	if err := sp.Commit(ctx); err != nil {
		// The handler left its transaction unusable: retry rather than keep a vote or an ack
		// whose effect is gone.
		return fmt.Errorf("handler returned success but its transaction cannot be kept: %w", err), nil
	}
	return nil, nil
}

func callTx(ctx context.Context, h TxHandler, tx pgx.Tx, cmd *protocol.TxCommand) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{value: v, stack: debug.Stack()}
		}
	}()
	return h(ctx, tx, cmd)
}
