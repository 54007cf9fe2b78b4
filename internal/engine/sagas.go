package engine

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
)

// sagaTable is the sagas as the batch-apply sees them.
func (e *Engine) sagaTable() *table[*store.Saga] {
	return &table[*store.Saga]{
		kind:      "saga",
		mutate:    e.cfg.Store.Mutate,
		mutateDue: e.cfg.Store.MutateDue,
		id:        func(sg *store.Saga) uuid.UUID { return sg.ID },
		hub:       &e.sagaHub,
		settle:    e.settleSaga,
	}
}

// sagaReply is the event of a participant's reply to a saga step command.
func (e *Engine) sagaReply(id uuid.UUID, r *protocol.Reply) event[*store.Saga] {
	return event[*store.Saga]{id: id, apply: func(sg *store.Saga, now time.Time) (applied, error) {
		m, err := e.defs.of(sg)
		if err != nil {
			return applied{}, err
		}
		if n := len(m.Definition().Steps); r.StepIndex >= n {
			return applied{}, &rejection{reason: "invalid_step", why: fmt.Sprintf("step_index %d is out of range: definition %s version %d has %d steps", r.StepIndex, sg.DefinitionName, sg.DefinitionVersion, n)}
		}
		fx, changed := m.Reply(sg.State, *r, now)
		return e.sagaApplied(m, sg, fx, changed)
	}}
}

// sagaTick fires a due saga's timers. The saga is written even when nothing fired: its wake_at
// is recomputed.
func (e *Engine) sagaTick(sg *store.Saga, now time.Time) (applied, error) {
	m, err := e.defs.of(sg)
	if err != nil {
		return applied{}, err
	}
	fx, _ := m.Tick(sg.State, now)
	return e.sagaApplied(m, sg, fx, true)
}

// sagaApplied encodes the commands a machine call decided and observes its events after the
// commit.
func (e *Engine) sagaApplied(m *saga.Machine, sg *store.Saga, fx saga.Effects, changed bool) (applied, error) {
	if !changed {
		return applied{}, nil
	}
	msgs, err := e.sagaCommands(m, sg.State, fx.Commands)
	if err != nil {
		return applied{}, err
	}
	return applied{changed: true, msgs: msgs, observe: e.obs.sagaObserver(sg, m.Definition(), fx.Events)}, nil
}

// settleSaga sets the derived columns of a saga its events changed.
func (e *Engine) settleSaga(sg *store.Saga, now time.Time) {
	m, _ := e.defs.cached(sg.DefinitionName, sg.DefinitionVersion) // its events needed it
	wake := m.WakeAt(sg.State)
	// Keep an earlier wake-up that is still ahead rather than move it later: the saga, woken
	// early, finds nothing due and the timer loop writes its real wake_at then. Moving wake_at at
	// every step would change an indexed column in every update and deny PostgreSQL the HOT
	// update, with no index writes, that a step transition otherwise gets.
	if !wake.IsZero() && sg.WakeAt.After(now) && sg.WakeAt.Before(wake) {
		wake = sg.WakeAt
	}
	e.settleTimes(&sg.WakeAt, &sg.FinishedAt, wake, sg.State.Status.Terminal(), now)
}

// sagaCommands encodes the messages of step commands.
func (e *Engine) sagaCommands(m *saga.Machine, st *saga.State, cmds []saga.Command) ([]transport.Outgoing, error) {
	msgs := make([]transport.Outgoing, 0, len(cmds))
	for _, c := range cmds {
		msg, err := sagaCommand(m, st, c)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// sagaCommand builds the message of one step command: the saga input and the outputs of the
// steps it depends on for an action; the output of the action it undoes for a compensation.
func sagaCommand(m *saga.Machine, st *saga.State, c saga.Command) (transport.Outgoing, error) {
	def := m.Definition()
	sd := def.Steps[c.StepIndex]
	cmd := protocol.StepCommand{
		SagaID:      st.ID,
		Step:        sd.Name,
		StepIndex:   c.StepIndex,
		Kind:        c.Kind,
		Participant: sd.Participant,
		Action:      sd.Action,
		Attempt:     c.Attempt,
		Input:       st.Input,
		// The attempt's timer runs for the step's timeout; the participant may stop its
		// handler after as long.
		TimeoutMillis: sd.Timeout.Milliseconds(),
	}
	if c.Kind == protocol.KindCompensate {
		cmd.Action = sd.Compensation
		cmd.Output = st.Steps[c.StepIndex].Output
	} else if deps := m.Graph().Deps[c.StepIndex]; len(deps) > 0 {
		cmd.Deps = make(map[string]json.RawMessage, len(deps))
		for _, d := range deps {
			cmd.Deps[def.Steps[d].Name] = st.Steps[d].Output
		}
	}
	msg, err := cmd.Encode()
	if err != nil {
		return transport.Outgoing{}, fmt.Errorf("encode command for saga %s step %q: %w", st.ID, sd.Name, err)
	}
	if st.Trace != "" {
		// The participant's span becomes a child of this attempt's span, which the instance
		// that sees the attempt end emits with this id.
		if tp := telemetry.ChildTraceparent(st.Trace, attemptSpanID(st.ID, c.StepIndex, c.Kind, c.Attempt)); tp != "" {
			msg.Headers[protocol.HeaderTraceparent] = tp
		}
	}
	return transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: sd.Participant, Message: msg}, nil
}
