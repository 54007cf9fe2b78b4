package participant

import (
	"context"
	"errors"
	"fmt"

	"github.com/sagacoord/sagacoord/protocol"
)

// groupItem is one command of a group: ctx is its handler's context.
type groupItem struct {
	ctx context.Context
	cmd *protocol.StepCommand
	h   Handler
}

// groupOutcome is what a group decided for one of its commands: res, or err when nothing was
// decided for it (the command is dead-lettered or redelivered, as a failed transaction of its own
// would be).
type groupOutcome struct {
	res result
	err error
	// sp names the savepoint the command began with.
	sp string
	// stored reads the reply the command kept, once the group committed.
	stored func() (storedReply, error)
}

// errGroupBroken is a group transaction that failed for a reason of its own (a handler broke the
// transaction, PostgreSQL refused the COMMIT or a statement that ends a command): nothing was
// decided, and each command is to be run alone, where it fails (or not) by itself.
var errGroupBroken = errors.New("group transaction broken")

// runGroup applies several commands in one barrier transaction, each in a savepoint of its own,
// and commits once. Each command follows the barrier's rules exactly as alone; a command that
// decides nothing to keep (a duplicate, a "retry") or whose own statements fail is rolled back to
// its savepoint, and the others go on.
//
// The statements that end a command travel with the first statements of the next one, and the
// last command's with the COMMIT: a group of n commands costs n+1 round trips besides the
// handlers' statements (2n alone).
//
// The outcomes are valid only once the group committed. An error means nothing was decided: when
// it wraps errGroupBroken, the commands are to be run alone; otherwise (the connection was lost,
// the worker is stopping) they are to be redelivered.
func (b *barrier) runGroup(ctx context.Context, items []groupItem) ([]groupOutcome, error) {
	t, err := b.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer t.end(context.WithoutCancel(ctx))
	t.group = true
	outs := make([]groupOutcome, len(items))
	// owner is the command whose ending statements are pending; kept tells whether they keep
	// its decision (else they undo it).
	owner, kept := -1, false
	for i := 0; i <= len(items); i++ {
		calls := t.calls
		var res result
		var err error
		if i < len(items) {
			res, err = b.decideStep(items[i].ctx, t, items[i].cmd, items[i].h)
			outs[i].sp = t.cmdSP
		} else {
			last := t.takePending()
			last.commit()
			err = t.send(ctx, last)
		}
		if te := (*tailError)(nil); errors.As(err, &te) {
			// The previous command's ending statements failed, and none of this one's ran.
			if !kept || !t.local(ctx) {
				return nil, t.groupFailed(ctx, false, fmt.Errorf("end command %d of the group: %w", owner, te.err))
			}
			outs[owner] = groupOutcome{err: te.err, sp: outs[owner].sp}
			if err := t.undo(ctx, outs[owner].sp); err != nil {
				return nil, t.groupFailed(ctx, false, fmt.Errorf("undo command %d of the group: %w", owner, err))
			}
			kept = false
			i-- // begin this command again
			continue
		}
		if i == len(items) {
			if err != nil {
				return nil, t.groupFailed(ctx, false, fmt.Errorf("commit group of %d commands: %w", len(items), err))
			}
			break
		}
		owner = i
		switch {
		case err == nil && t.kept != nil:
			outs[i].res, outs[i].stored = res, t.kept
			t.kept, kept = nil, true
			continue
		case err == nil:
			// A duplicate or a "retry": nothing to keep.
			outs[i].res = res
		default:
			outs[i].err = err
		}
		if !t.local(ctx) {
			return nil, t.groupFailed(ctx, t.calls != calls, fmt.Errorf("command %d of the group (%s, %s, %s): %w", i, items[i].cmd.SagaID, items[i].cmd.Step, items[i].cmd.Kind, errors.Join(err, errors.New("transaction unusable after the command"))))
		}
		if err := t.undo(ctx, outs[i].sp); err != nil {
			return nil, t.groupFailed(ctx, false, fmt.Errorf("undo command %d of the group: %w", i, err))
		}
		kept = false
	}
	for i := range outs {
		if outs[i].stored != nil && outs[i].err == nil {
			var r storedReply
			r, outs[i].err = outs[i].stored()
			outs[i].res.reply = protocol.StepReply(r)
		}
	}
	return outs, nil
}

// local reports whether the group can go on after a command failed or decided nothing: the
// worker is not stopping and the transaction is usable.
func (t *localTx) local(ctx context.Context) bool {
	return ctx.Err() == nil && t.usable()
}

// groupFailed classifies the failure of a group. A lost connection (unless a handler lost it) or
// a shutdown leaves the commands to be redelivered; otherwise the group broke for a reason of
// its own, which running the commands alone confines to the command it belongs to.
func (t *localTx) groupFailed(ctx context.Context, handlerRan bool, err error) error {
	if ctx.Err() != nil {
		return errors.Join(err, errInterrupted)
	}
	if handlerRan || !t.c.PgConn().IsClosed() {
		return fmt.Errorf("%w: %w", errGroupBroken, err)
	}
	return err
}
