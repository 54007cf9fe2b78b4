package engine

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/twopc"
)

// machine2PC is the two-phase-commit machine; it has no configuration.
var machine2PC twopc.Machine

// txTable is the transactions as the batch-apply sees them.
func (e *Engine) txTable() *table[*store.Tx] {
	return &table[*store.Tx]{
		kind:      "transaction",
		mutate:    e.cfg.Store.MutateTx,
		mutateDue: e.cfg.Store.MutateDueTx,
		id:        func(t *store.Tx) uuid.UUID { return t.ID },
		hub:       &e.txHub,
		settle:    e.settleTx,
	}
}

// txReply is the event of a participant's vote or acknowledgement.
func (e *Engine) txReply(id uuid.UUID, r *protocol.Reply) event[*store.Tx] {
	return event[*store.Tx]{id: id, apply: func(t *store.Tx, now time.Time) (applied, error) {
		fx, changed := machine2PC.Reply(t.Tx, *r, now)
		return e.txApplied(t, fx, changed, now)
	}}
}

// txQuery is the event of a prepared participant asking for the decision.
func (e *Engine) txQuery(id uuid.UUID, participant string) event[*store.Tx] {
	return event[*store.Tx]{id: id, apply: func(t *store.Tx, now time.Time) (applied, error) {
		fx, changed := machine2PC.Query(t.Tx, participant, now)
		return e.txApplied(t, fx, changed, now)
	}}
}

// txTick fires a due transaction's timers: the prepare timeout and decision re-sends.
func (e *Engine) txTick(t *store.Tx, now time.Time) (applied, error) {
	fx, _ := machine2PC.Tick(t.Tx, now)
	return e.txApplied(t, fx, true, now)
}

// txApplied encodes the commands a machine call decided, runs the decision hook of tests, and
// observes the events after the commit.
func (e *Engine) txApplied(t *store.Tx, fx twopc.Effects, changed bool, now time.Time) (applied, error) {
	if !changed {
		return applied{}, nil
	}
	if hook := e.cfg.Test.BeforeCommitDecision; hook != nil && decidedCommit(fx.Events) {
		hook(t.ID)
	}
	msgs, err := txCommands(t.Tx, fx.Commands, now)
	if err != nil {
		return applied{}, err
	}
	return applied{changed: true, msgs: msgs, observe: e.obs.txObserver(t, fx.Events)}, nil
}

func decidedCommit(evs []twopc.Event) bool {
	for _, ev := range evs {
		if s, ok := ev.(twopc.StateChanged); ok && s.From == twopc.StatePreparing && s.To == twopc.StateCommitting {
			return true
		}
	}
	return false
}

// settleTx sets the derived columns of a transaction its events changed.
func (e *Engine) settleTx(t *store.Tx, now time.Time) {
	e.settleTimes(&t.WakeAt, &t.FinishedAt, machine2PC.WakeAt(t.Tx), t.Tx.State.Terminal(), now)
}

// txCommands encodes the messages of transaction commands.
func txCommands(t *twopc.Tx, cmds []twopc.Command, now time.Time) ([]transport.Outgoing, error) {
	msgs := make([]transport.Outgoing, 0, len(cmds))
	for _, c := range cmds {
		p := t.Participants[c.Participant]
		cmd := protocol.TxCommand{TxID: t.ID, Participant: p.Name, Kind: c.Kind, Attempt: c.Attempt, Payload: p.Payload}
		if c.Kind == protocol.KindPrepare {
			// What is left of the prepare timeout: the whole of it, since PREPAREs go out when
			// the transaction begins. The participant may vote NO after it.
			if left := t.PrepareDeadline.Sub(now); left > 0 {
				cmd.TimeoutMillis = left.Milliseconds()
			}
		}
		msg, err := cmd.Encode()
		if err != nil {
			return nil, fmt.Errorf("encode %s for transaction %s: %w", c.Kind, t.ID, err)
		}
		if t.Trace != "" {
			if tp := telemetry.ChildTraceparent(t.Trace, txCommandSpanID(t.ID, p.Name, c.Kind)); tp != "" {
				msg.Headers[protocol.HeaderTraceparent] = tp
			}
		}
		msgs = append(msgs, transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: protocol.TwoPCRoutingKey(p.Name), Message: msg})
	}
	return msgs, nil
}
