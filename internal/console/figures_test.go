package console

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// The participants' figures from one saga's row: a step whose command is out is in flight, one
// in backoff waits, transitions into RUNNING or COMPENSATING in the window are started steps
// (older ones are not), a transition into FAILED is a failure, a FAILED saga's parked step is
// one too, and a last error that is a timeout counts while the saga changed in the window.
func TestParticipantFiguresFromASaga(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	old, recent := now.Add(-time.Hour), now.Add(-time.Minute)
	def := &saga.Definition{Steps: []saga.StepDefinition{
		{Name: "a", Participant: "p"}, {Name: "b", Participant: "q"}, {Name: "c", Participant: "q"}, {Name: "d", Participant: "r"},
	}}
	sg := &store.Saga{ID: uuid.New(), UpdatedAt: recent, State: &saga.State{Status: saga.StatusFailed,
		Steps: []saga.StepState{
			{Status: saga.StepRunning, Attempt: 2, StartedAt: old, TimerAt: now.Add(time.Second)},
			{Status: saga.StepRunning, Waiting: true, TimerAt: now.Add(time.Second), LastError: "attempt 1 timed out after 30s"},
			{Status: saga.StepFailed, LastError: "no funds"},
			{Status: saga.StepRunning, Waiting: true, LastError: "attempt 3 timed out after 1s"},
		},
		History: []saga.Transition{
			{Step: -1, To: "RUNNING", At: old},
			{Step: 0, From: "PENDING", To: "RUNNING", At: old},
			{Step: 1, From: "PENDING", To: "RUNNING", At: recent},
			{Step: 2, From: "PENDING", To: "RUNNING", At: recent},
			{Step: 2, From: "RUNNING", To: "FAILED", At: recent},
			{Step: 3, From: "PENDING", To: "RUNNING", At: recent},
			{Step: -1, From: "RUNNING", To: "FAILED", At: recent},
		},
	}}
	rows := map[string]*participantRow{}
	row := func(name string) *participantRow {
		if rows[name] == nil {
			rows[name] = &participantRow{Name: name}
		}
		return rows[name]
	}
	var v participantsView
	countSteps(sg, def, now, row, &v, "")
	require.Equal(t, participantRow{Name: "p", InFlight: 1}, *rows["p"])
	require.Equal(t, participantRow{Name: "q", Waiting: 1, Started: 2, Failed: 1, TimedOut: 1}, *rows["q"])
	require.Equal(t, participantRow{Name: "r", Started: 1, Failed: 1, TimedOut: 1}, *rows["r"])
	require.Empty(t, v.Steps, "the list page lists no steps")

	sg.UpdatedAt = old
	rows = map[string]*participantRow{}
	countSteps(sg, def, now, row, &v, "p")
	require.Zero(t, rows["q"].TimedOut, "a saga that did not change in the window")
	require.Len(t, v.Steps, 1)
	require.Equal(t, inFlightStep{Saga: sg.ID.String(), Step: "a", Kind: "action", Status: "RUNNING", Attempt: 2, Since: old, TimesOut: now.Add(time.Second)}, v.Steps[0])
}
