package participant

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sagacoord/sagacoord/protocol"
)

// Two-phase-commit commands go through the barrier too: their rows are keyed (gid = transaction
// id, step = participant name, kind = prepare|commit|abort), each holding the stored reply (a
// protocol.TxReply). The prepared table records the transactions that voted YES and await their
// decision; a row lives from the YES to the COMMIT or ABORT, written in the same local
// transactions.

// errAbortedFirst is the NO stored in place of a vote when the ABORT arrived before the PREPARE;
// the late PREPARE is answered with it.
const errAbortedFirst = "aborted before prepare"

// abortedFirst is the refusal that an ABORT plants in its PREPARE's row.
var (
	abortedFirst     = storedReply{Outcome: protocol.OutcomeVoteNo, Error: errAbortedFirst}
	abortedFirstJSON = refusalJSON(abortedFirst)
)

// twopcResult is what the barrier decided for one transaction command.
type twopcResult struct {
	reply protocol.TxReply
	verdict
	// requeue: the handler failed transiently; everything was rolled back and nothing is
	// replied. cause says why.
	requeue bool
}

// violationError is a command that the protocol rules out (a COMMIT without a YES, an ABORT after
// a COMMIT). No retry can make it right: it is dead-lettered.
type violationError struct{ msg string }

func (e *violationError) Error() string { return e.msg }

func violation(format string, args ...any) error {
	return &violationError{msg: fmt.Sprintf(format, args...)}
}

// runTwoPC applies a two-phase-commit command through the barrier in a transaction of its own. An
// error is an infrastructure failure, an interruption or a violationError: nothing was decided.
func (b *barrier) runTwoPC(ctx context.Context, cmd *protocol.TxCommand, h *TxHandlers) (twopcResult, error) {
	t, err := b.begin(ctx)
	if err != nil {
		return twopcResult{}, err
	}
	defer t.end(context.WithoutCancel(ctx))
	var k kindRules
	switch cmd.Kind {
	case protocol.KindPrepare:
		k = b.prepareRules(cmd, h.Prepare)
	case protocol.KindCommit:
		k = b.commitRules(cmd, h.Commit)
	case protocol.KindAbort:
		k = b.abortRules(cmd, h.Abort)
	default:
		return twopcResult{}, violation("transaction command kind %q is not prepare, commit or abort", cmd.Kind)
	}
	d, err := b.decide(ctx, t, k)
	if err != nil {
		return twopcResult{}, err
	}
	return twopcResult{reply: protocol.TxReply{Outcome: d.reply.Outcome, Error: d.reply.Error}, verdict: d.verdict(), requeue: d.transient}, nil
}

// prepareRules are the rules of a PREPARE: Prepare runs once with a lasting effect, unless the
// ABORT came first. nil votes YES and records the transaction as prepared; a business failure, or
// the prepare timeout, votes NO; any other failure keeps nothing and sends no vote.
func (b *barrier) prepareRules(cmd *protocol.TxCommand, h TxHandler) kindRules {
	return kindRules{
		row:      twopcRow(cmd, protocol.KindPrepare),
		attempt:  cmd.Attempt,
		lockWait: b.lockWaitFor(cmd.Timeout()),
		limit:    handlerLimit(cmd.Timeout(), b.handlerTimeout),
		late:     prepareTimedOut,
		call:     twopcCall(cmd, h, nil), // no output: the stored vote has none
		keep:     keepLasting(protocol.OutcomeVoteYes, protocol.OutcomeVoteNo, func(last *batch) { b.recordPrepared(last, cmd) }),
	}
}

// commitRules are the rules of a COMMIT: after this participant's YES, Commit runs once and the
// prepared record is forgotten. A COMMIT without a YES breaks the protocol.
func (b *barrier) commitRules(cmd *protocol.TxCommand, h TxHandler) kindRules {
	voteRow := twopcRow(cmd, protocol.KindPrepare)
	var (
		voteRaw string
		voted   bool
		payload string
	)
	return kindRules{
		row:      twopcRow(cmd, protocol.KindCommit),
		attempt:  cmd.Attempt,
		lockWait: b.lockWaitFor(0), // a decision has no timeout: Config.LockWait when positive
		first: func(bt *batch) {
			b.readIfAny(bt, &voteRaw, &voted, voteRow)
		},
		gate: func(ctx context.Context, t *localTx, _ *batch) (*storedReply, error) {
			if !voted {
				return nil, violation("COMMIT of transaction %s, which this participant never prepared: its database lost the prepare, or the coordinator broke the protocol", cmd.TxID)
			}
			vote, err := decodeStored(voteRaw, voteRow)
			if err != nil {
				return nil, err
			}
			if vote.Outcome != protocol.OutcomeVoteYes {
				return nil, violation("COMMIT of transaction %s, for which this participant voted NO (%s)", cmd.TxID, vote.Error)
			}
			p, found, err := b.forget(ctx, t, cmd)
			if err != nil {
				return nil, err
			}
			if !found {
				return nil, violation("COMMIT of transaction %s, which this participant already aborted", cmd.TxID)
			}
			payload = p
			return nil, nil
		},
		call: twopcCall(cmd, h, &payload), // no deadline: a decision must be applied in the end
		keep: decided,
	}
}

// abortRules are the rules of an ABORT: after this participant's YES, Abort runs once and the
// prepared record is forgotten; after a NO it only acks. An ABORT before any PREPARE plants a NO
// in the PREPARE's row, so that the late PREPARE is refused without running.
func (b *barrier) abortRules(cmd *protocol.TxCommand, h TxHandler) kindRules {
	voteRow := twopcRow(cmd, protocol.KindPrepare)
	var (
		planted pgconn.CommandTag
		voteRaw string
		payload string
	)
	return kindRules{
		row:      twopcRow(cmd, protocol.KindAbort),
		attempt:  cmd.Attempt,
		lockWait: b.lockWaitFor(0), // a decision has no timeout: Config.LockWait when positive
		first: func(bt *batch) {
			// Waits for a PREPARE still in flight, then either plants the NO that refuses a late
			// PREPARE or finds the vote.
			b.claim(bt, &planted, voteRow, abortedFirstJSON, cmd.Attempt)
			b.read(bt, &voteRaw, voteRow)
		},
		gate: func(ctx context.Context, t *localTx, _ *batch) (*storedReply, error) {
			ack := &storedReply{Outcome: protocol.OutcomeAck}
			if planted.RowsAffected() == 1 {
				return ack, nil // never prepared: nothing was reserved
			}
			vote, err := decodeStored(voteRaw, voteRow)
			if err != nil {
				return nil, err
			}
			switch vote.Outcome {
			case protocol.OutcomeVoteNo:
				return ack, nil // nothing was reserved
			case protocol.OutcomeVoteYes:
				p, found, err := b.forget(ctx, t, cmd)
				if err != nil {
					return nil, err
				}
				if !found {
					return nil, violation("ABORT of transaction %s, which this participant already committed", cmd.TxID)
				}
				payload = p
				return nil, nil
			}
			return nil, fmt.Errorf("barrier row %s holds outcome %q, want vote_yes or vote_no", voteRow, vote.Outcome)
		},
		call: twopcCall(cmd, h, &payload), // no deadline: a decision must be applied in the end
		keep: decided,
	}
}

// decided is the keep of COMMIT and ABORT: the decision is final, so a failure, even a business
// one, is tried again.
func decided(_ json.RawMessage, herr error, _ *batch) (storedReply, bool) {
	return storedReply{Outcome: protocol.OutcomeAck}, herr == nil
}

// forget deletes the prepared record of cmd's transaction and returns its payload; found is false
// when there is none. It costs a round trip of its own, so that a record is deleted only after a
// YES.
func (b *barrier) forget(ctx context.Context, t *localTx, cmd *protocol.TxCommand) (payload string, found bool, err error) {
	bt := &batch{}
	b.forgetPrepared(bt, &payload, &found, cmd)
	if err := t.send(ctx, bt); err != nil {
		return "", false, err
	}
	return payload, found, nil
}

func twopcRow(cmd *protocol.TxCommand, kind protocol.Kind) rowKey {
	return rowKey{gid: cmd.TxID, step: cmd.Participant, kind: kind}
}

// twopcCall runs h with a copy of cmd, so that the handler cannot change what the reply is built
// from; its payload, when it carries none, is the prepared record's (*payload, when given).
func twopcCall(cmd *protocol.TxCommand, h TxHandler, payload *string) func(context.Context, pgx.Tx) (json.RawMessage, error) {
	return func(ctx context.Context, tx pgx.Tx) (json.RawMessage, error) {
		c := *cmd
		if payload != nil && len(c.Payload) == 0 && *payload != "" {
			c.Payload = json.RawMessage(*payload)
		}
		return nil, h(ctx, tx, &c)
	}
}

// prepareTimedOut is the error of a Prepare stopped at its deadline: a business failure, which
// votes NO (the coordinator has aborted by then).
func prepareTimedOut(limit time.Duration, herr error) error {
	return Failf("prepare still running after %s, the prepare timeout: %v", limit, herr)
}
