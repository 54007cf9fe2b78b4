package saga_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
)

// BenchmarkNormalize validates a three-step definition, as RegisterDefinition does.
func BenchmarkNormalize(b *testing.B) {
	d := threeSteps()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := saga.Normalize(d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMachineThreeStepSaga runs a three-step saga from New to COMPLETED: the machine's share
// of the coordinator's work for one saga.
func BenchmarkMachineThreeStepSaga(b *testing.B) {
	d := threeSteps()
	def, err := saga.Normalize(d)
	if err != nil {
		b.Fatal(err)
	}
	m := saga.NewMachine(&def)
	input := json.RawMessage(`{"amount":10}`)
	output := json.RawMessage(`{"ok":true}`)
	b.ReportAllocs()
	for b.Loop() {
		s, fx := m.Start("saga-1", input, time.Time{}, t0)
		for range 3 {
			c := fx.Commands[0]
			fx, _ = m.Reply(s, protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: c.StepIndex, Kind: c.Kind, Attempt: c.Attempt}, Outcome: protocol.OutcomeSucceeded, Output: output}, t0)
		}
		if s.Status != saga.StatusCompleted {
			b.Fatalf("saga is %s", s.Status)
		}
	}
}

// BenchmarkStateJSON encodes and decodes the state of a completed three-step saga, which the
// engine stores with every change.
func BenchmarkStateJSON(b *testing.B) {
	def, err := saga.Normalize(threeSteps())
	if err != nil {
		b.Fatal(err)
	}
	m := saga.NewMachine(&def)
	s, fx := m.Start("saga-1", json.RawMessage(`{"amount":10}`), t0.Add(time.Hour), t0)
	for len(fx.Commands) > 0 {
		c := fx.Commands[0]
		fx, _ = m.Reply(s, protocol.Reply{CommandRef: protocol.CommandRef{StepIndex: c.StepIndex, Kind: c.Kind, Attempt: c.Attempt}, Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"id":"0123456789"}`)}, t0)
	}
	data, err := json.Marshal(s)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		data, err := json.Marshal(s)
		if err != nil {
			b.Fatal(err)
		}
		var back saga.State
		if err := json.Unmarshal(data, &back); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(data)), "bytes/state")
}
