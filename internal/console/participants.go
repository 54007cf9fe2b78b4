package console

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// recentWindow is how far back the participants' figures of failures, timeouts and started
// steps look; recentSagas bounds the sagas read for them, per status and for the window.
const (
	recentWindow = 5 * time.Minute
	recentSagas  = 1000
)

// queueView is one of a participant's queues as the management API reports it.
type queueView struct {
	Name                     string
	Found                    bool
	Ready, Unacked, Consumer int
	PublishRate, DeliverRate float64
}

// participantRow is one participant: its two queues and what the coordinator's state says of
// its steps.
type participantRow struct {
	Name                      string
	Steps, TwoPC              queueView
	InFlight, Waiting         int
	Started, Failed, TimedOut int
	InDoubt                   int
}

// inFlightStep is a step whose command is out, for the participant's page.
type inFlightStep struct {
	Saga, Step, Kind, Status string
	Attempt                  int
	Since, TimesOut          time.Time
}

// participantsView is what /participants and /participants/{name} show.
type participantsView struct {
	Rows []participantRow
	// Broker says where the queue figures come from; BrokerError why there are none.
	Broker, BrokerError string
	Window              time.Duration
	// Truncated is set when more sagas matched than the figures read (recentSagas).
	Truncated bool
	// Steps and Txs: one participant's steps in flight and transactions in doubt.
	Steps []inFlightStep
	Txs   []txRow
}

// participantsList serves /participants.
func (c *Console) participantsList(w http.ResponseWriter, r *http.Request, who caller) {
	v, err := c.participants(r.Context(), "")
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, http.StatusOK, "participants", c.pageFor(who, "Participants", v))
}

// participantPage serves /participants/{name}: one participant's figures, its steps in flight
// and its transactions in doubt.
func (c *Console) participantPage(w http.ResponseWriter, r *http.Request, who caller) {
	name := r.PathValue("name")
	v, err := c.participants(r.Context(), name)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if len(v.Rows) == 0 {
		http.Error(w, "no definition, transaction in doubt or queue names participant "+name, http.StatusNotFound)
		return
	}
	c.render(w, http.StatusOK, "participant", c.pageFor(who, "Participant "+name, v))
}

// participants gathers the figures of every participant, or of only one when only is set.
func (c *Console) participants(ctx context.Context, only string) (participantsView, error) {
	v := participantsView{Window: recentWindow}
	rows := map[string]*participantRow{}
	row := func(name string) *participantRow {
		if only != "" && name != only {
			return nil
		}
		if rows[name] == nil {
			rows[name] = &participantRow{Name: name}
		}
		return rows[name]
	}
	if err := c.definitionParticipants(ctx, row); err != nil {
		return v, err
	}
	if err := c.sagaFigures(ctx, row, &v, only); err != nil {
		return v, err
	}
	if err := c.txFigures(ctx, row, &v, only); err != nil {
		return v, err
	}
	queues := c.brokerQueues(ctx, &v)
	for name := range queues {
		if p, ok := strings.CutPrefix(name, protocol.QueuePrefix); ok {
			row(strings.TrimSuffix(p, ":twopc"))
		}
	}
	for _, p := range rows {
		p.Steps, p.TwoPC = queueOf(queues, protocol.ParticipantQueue(p.Name)), queueOf(queues, protocol.TwoPCQueue(p.Name))
		v.Rows = append(v.Rows, *p)
	}
	slices.SortFunc(v.Rows, func(a, b participantRow) int { return strings.Compare(a.Name, b.Name) })
	return v, nil
}

func queueOf(queues map[string]queueStats, name string) queueView {
	q, ok := queues[name]
	return queueView{Name: name, Found: ok, Ready: q.Ready, Unacked: q.Unacked, Consumer: q.Consumers,
		PublishRate: q.PublishRate, DeliverRate: q.DeliverRate}
}

// brokerQueues reads the queues from the management API; when it is not configured or fails,
// v says so and the page shows the coordinator's figures alone.
func (c *Console) brokerQueues(ctx context.Context, v *participantsView) map[string]queueStats {
	if c.rabbitErr != nil {
		v.BrokerError = c.rabbitErr.Error() + ": the queues' figures are not shown."
		return nil
	}
	if c.rabbit == nil {
		v.BrokerError = "RabbitMQ's management API is not configured (--console-rabbitmq-api): the queues' figures are not shown."
		return nil
	}
	v.Broker = c.rabbit.String()
	queues, err := c.rabbit.participantQueues(ctx)
	if err != nil {
		v.BrokerError = err.Error() + ": the queues' figures are not shown."
		return nil
	}
	return queues
}

// definitionParticipants names the participants of every definition's latest version.
func (c *Console) definitionParticipants(ctx context.Context, row func(string) *participantRow) error {
	defs, err := c.cfg.Engine.Store().ListDefinitions(ctx, store.DefinitionFilter{})
	if err != nil {
		return err
	}
	for _, d := range defs {
		for _, s := range d.Steps {
			row(s.Participant)
		}
	}
	return nil
}

// sagaFigures counts, per participant, the steps of the unfinished sagas whose command is out
// (in flight) or that wait to retry, and, in the sagas that changed in the last recentWindow,
// the steps that started, failed, or whose last error is a timeout (docs/console.md).
func (c *Console) sagaFigures(ctx context.Context, row func(string) *participantRow, v *participantsView, only string) error {
	now := time.Now()
	seen := map[uuid.UUID]bool{}
	var sagas []*store.Saga
	for _, f := range []store.ListFilter{
		{Status: saga.StatusRunning}, {Status: saga.StatusCompensating}, {Status: saga.StatusFailed}, {CreatedFrom: now.Add(-recentWindow)},
	} {
		f.Limit = recentSagas + 1
		list, err := c.cfg.Engine.Store().ListSagas(ctx, f)
		if err != nil {
			return err
		}
		if len(list) > recentSagas {
			v.Truncated, list = true, list[:recentSagas]
		}
		for _, sg := range list {
			if !seen[sg.ID] {
				seen[sg.ID] = true
				sagas = append(sagas, sg)
			}
		}
	}
	defs := map[string]*saga.Definition{}
	for _, sg := range sagas {
		key := sg.DefinitionName + "\x00" + strconv.Itoa(sg.DefinitionVersion)
		if defs[key] == nil {
			d, err := c.cfg.Engine.Definition(ctx, sg.DefinitionName, sg.DefinitionVersion)
			if err != nil {
				return err
			}
			defs[key] = d
		}
		countSteps(sg, defs[key], now, row, v, only)
	}
	return nil
}

// countSteps adds one saga's steps to their participants' figures.
func countSteps(sg *store.Saga, def *saga.Definition, now time.Time, row func(string) *participantRow, v *participantsView, only string) {
	st := sg.State
	since := now.Add(-recentWindow)
	participant := func(i int) *participantRow {
		if i < 0 || i >= len(def.Steps) {
			return nil
		}
		return row(def.Steps[i].Participant)
	}
	for i, s := range st.Steps {
		p := participant(i)
		if p == nil {
			continue
		}
		out := (s.Status == saga.StepRunning || s.Status == saga.StepCompensating) && !s.Waiting && !sg.State.Status.Terminal()
		switch {
		case out:
			p.InFlight++
			if only != "" {
				kind, attempt := "action", s.Attempt
				if s.Status == saga.StepCompensating {
					kind, attempt = "compensation", s.CompAttempt
				}
				v.Steps = append(v.Steps, inFlightStep{Saga: sg.ID.String(), Step: def.Steps[i].Name, Kind: kind, Status: string(s.Status),
					Attempt: attempt, Since: s.StartedAt, TimesOut: s.TimerAt})
			}
		case s.Waiting && !s.TimerAt.IsZero():
			p.Waiting++
		}
		if !sg.UpdatedAt.Before(since) && strings.Contains(s.LastError, "timed out after") {
			p.TimedOut++
		}
	}
	for _, t := range st.History {
		if t.At.Before(since) {
			continue
		}
		if t.Step < 0 && t.To == string(saga.StatusFailed) {
			countParked(st, participant)
			continue
		}
		p := participant(t.Step)
		if p == nil {
			continue
		}
		switch t.To {
		case string(saga.StepRunning), string(saga.StepCompensating):
			p.Started++
		case string(saga.StepFailed):
			p.Failed++
		}
	}
}

// countParked counts the steps that made their saga FAILED: those that wait for an operator.
func countParked(st *saga.State, participant func(int) *participantRow) {
	for i, s := range st.Steps {
		if s.Waiting && s.TimerAt.IsZero() {
			if p := participant(i); p != nil {
				p.Failed++
			}
		}
	}
}

// txFigures counts, per participant, the transactions in doubt that wait for its vote or its
// acknowledgement.
func (c *Console) txFigures(ctx context.Context, row func(string) *participantRow, v *participantsView, only string) error {
	for _, state := range []twopc.State{twopc.StatePreparing, twopc.StateCommitting, twopc.StateAborting} {
		txs, err := c.cfg.Engine.Store().ListTx(ctx, store.TxFilter{State: state, Limit: maxPageSize + 1})
		if err != nil {
			return err
		}
		if len(txs) > maxPageSize {
			v.Truncated, txs = true, txs[:maxPageSize]
		}
		for _, tx := range txs {
			for _, p := range tx.Tx.Participants {
				waiting := (state == twopc.StatePreparing && p.Vote == "") || (state != twopc.StatePreparing && !p.Acked)
				if r := row(p.Name); r != nil && waiting {
					r.InDoubt++
					if only != "" {
						v.Txs = append(v.Txs, newTxRow(tx))
					}
				}
			}
		}
	}
	return nil
}
