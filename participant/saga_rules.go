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

// errCompensatedFirst is the error stored as the action's reply when its compensation arrived
// first; the late action is refused with it.
const errCompensatedFirst = "compensated before action"

// compensatedFirst is the refusal that a compensation plants in its action's row.
var (
	compensatedFirst     = storedReply{Outcome: protocol.OutcomeFailed, Error: errCompensatedFirst}
	compensatedFirstJSON = refusalJSON(compensatedFirst)
)

// result is what the barrier decided for one saga step command.
type result struct {
	reply protocol.StepReply
	verdict
}

// runStep applies cmd through the barrier in a transaction of its own. An error is an
// infrastructure failure (database, shutdown): nothing was decided and the command must be
// redelivered.
func (b *barrier) runStep(ctx context.Context, cmd *protocol.StepCommand, h Handler) (result, error) {
	t, err := b.begin(ctx)
	if err != nil {
		return result{}, err
	}
	// Rolls back what was not committed; without a cancelled context it still reaches the server.
	defer t.end(context.WithoutCancel(ctx))
	return b.decideStep(ctx, t, cmd, h)
}

// decideStep applies cmd in t, alone or as a command of a group.
func (b *barrier) decideStep(ctx context.Context, t *localTx, cmd *protocol.StepCommand, h Handler) (result, error) {
	k := b.actionRules(cmd, h)
	if cmd.Kind == protocol.KindCompensate {
		k = b.compensationRules(cmd, h)
	}
	d, err := b.decide(ctx, t, k)
	if err != nil {
		return result{}, err
	}
	res := result{reply: protocol.StepReply(d.reply), verdict: d.verdict()}
	if d.transient {
		// No barrier row is kept, so the coordinator's retry runs the handler again.
		res.reply = retryReply(d.cause)
	}
	return res, nil
}

// actionRules are the rules of an action: its handler runs once with a lasting effect, unless a
// compensation came first. A business failure is stored, and a later attempt reopens it.
func (b *barrier) actionRules(cmd *protocol.StepCommand, h Handler) kindRules {
	return kindRules{
		row:      sagaRow(cmd, protocol.KindAction),
		attempt:  cmd.Attempt,
		reopens:  true,
		lockWait: b.lockWaitFor(cmd.Timeout()),
		limit:    handlerLimit(cmd.Timeout(), b.handlerTimeout),
		late:     stepTimedOut,
		call:     stepCall(cmd, h),
		keep:     keepLasting(protocol.OutcomeSucceeded, protocol.OutcomeFailed, nil),
	}
}

// compensationRules are the rules of a compensation: it undoes an action that succeeded, with the
// action's output; after an action that failed, or none, it is a no-op. Any failure is retried.
func (b *barrier) compensationRules(cmd *protocol.StepCommand, h Handler) kindRules {
	actionRow := sagaRow(cmd, protocol.KindAction)
	var (
		planted   pgconn.CommandTag
		actionRaw string
		found     bool
		output    json.RawMessage
	)
	return kindRules{
		row:     sagaRow(cmd, protocol.KindCompensate),
		attempt: cmd.Attempt,
		first: func(bt *batch) {
			// The refusal of a late action is planted when the action row is absent. Claiming it
			// waits for an action still in flight on the same key; the row read next is then
			// what that action decided. Locked, so that a later action attempt cannot reopen a
			// failure between this read and the refusal written over it: the attempt's reopen
			// waits, then finds the refusal. Sent on the chance that the compensation is new,
			// which it mostly is; on a duplicate they are rolled back with the rest.
			b.claim(bt, &planted, actionRow, compensatedFirstJSON, cmd.Attempt)
			// Absent only when the saga is final (see replay): then this compensation claims
			// nothing either and gate is not reached.
			b.readLocked(bt, &actionRaw, &found, actionRow)
		},
		gate: func(_ context.Context, _ *localTx, last *batch) (*storedReply, error) {
			noop := &storedReply{Outcome: protocol.OutcomeSucceeded}
			if planted.RowsAffected() == 1 {
				return noop, nil // the action never came; the refusal waits for it
			}
			if !found {
				return nil, fmt.Errorf("barrier row %s vanished: its saga became final while its compensation ran", actionRow)
			}
			action, err := decodeStored(actionRaw, actionRow)
			if err != nil {
				return nil, err
			}
			switch action.Outcome {
			case protocol.OutcomeFailed:
				// The action's effect was never applied (or was refused): nothing to undo. Turn a
				// business failure into the refusal, so that no later attempt reopens it.
				if action.Error != errCompensatedFirst {
					if _, err := b.store(last, actionRow, compensatedFirst); err != nil {
						return nil, err
					}
				}
				return noop, nil
			case protocol.OutcomeSucceeded:
				output = action.Output
				return nil, nil
			}
			return nil, fmt.Errorf("barrier row %s holds outcome %q, want succeeded or failed", actionRow, action.Outcome)
		},
		lockWait: b.lockWaitFor(cmd.Timeout()),
		limit:    handlerLimit(cmd.Timeout(), b.handlerTimeout),
		late:     stepTimedOut,
		call: func(ctx context.Context, tx pgx.Tx) (json.RawMessage, error) {
			c := *cmd
			if len(c.Output) == 0 {
				c.Output = output
			}
			return h(ctx, tx, &c)
		},
		keep: func(out json.RawMessage, herr error, _ *batch) (storedReply, bool) {
			// A compensation must eventually succeed: any failure, a business one too, is
			// retried by the coordinator.
			return storedReply{Outcome: protocol.OutcomeSucceeded, Output: out}, herr == nil
		},
	}
}

func sagaRow(cmd *protocol.StepCommand, kind protocol.Kind) rowKey {
	return rowKey{gid: cmd.SagaID, step: cmd.Step, kind: kind}
}

// stepCall runs h with a copy of cmd, so that the handler cannot change what the reply is built
// from.
func stepCall(cmd *protocol.StepCommand, h Handler) func(context.Context, pgx.Tx) (json.RawMessage, error) {
	return func(ctx context.Context, tx pgx.Tx) (json.RawMessage, error) {
		c := *cmd
		return h(ctx, tx, &c)
	}
}

// stepTimedOut is the error of a step's handler stopped at its deadline: a retry.
func stepTimedOut(limit time.Duration, herr error) error {
	return fmt.Errorf("handler still running after %s, the step's timeout: %w", limit, herr)
}

func retryReply(err error) protocol.StepReply {
	return protocol.StepReply{Outcome: protocol.OutcomeRetry, Error: truncate(err.Error())}
}
