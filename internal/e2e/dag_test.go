package e2e_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// rendezvous lets a handler pass only once every named party is inside its handler too, so
// passing proves that they ran at the same time.
type rendezvous struct {
	mu      sync.Mutex
	want    int
	arrived map[string]bool
	all     chan struct{}
	met     map[string]bool
}

func newRendezvous(n int) *rendezvous {
	return &rendezvous{want: n, arrived: map[string]bool{}, met: map[string]bool{}, all: make(chan struct{})}
}

// arrive waits, up to timeout, until every party arrived; it reports whether they did.
func (r *rendezvous) arrive(ctx context.Context, name string, timeout time.Duration) bool {
	r.mu.Lock()
	if !r.arrived[name] {
		r.arrived[name] = true
		if len(r.arrived) == r.want {
			close(r.all)
		}
	}
	r.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.all:
		r.mu.Lock()
		r.met[name] = true
		r.mu.Unlock()
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (r *rendezvous) metBy() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k := range r.met {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestParallelStepsRunConcurrentlyAndCompensateInReverseDependencyOrder: in a -> {b, c} -> d, b and
// c are inside their handlers at the same time (each waits for the other), d receives both
// outputs, and when d fails, b and c are compensated (with their action's output) before a, and d,
// never applied, is not compensated.
func TestParallelStepsRunConcurrentlyAndCompensateInReverseDependencyOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	meet := newRendezvous(2)
	var (
		mu       sync.Mutex
		dDeps    map[string]json.RawMessage
		compOuts = map[string]string{}
	)
	for _, name := range []string{"pa", "pb", "pc", "pd"} {
		e.startParticipant(participantOpts{name: name, behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
			out := json.RawMessage(`{"by":"` + name + `"}`)
			if cmd.Kind == protocol.KindCompensate {
				mu.Lock()
				compOuts[cmd.Step] = string(cmd.Output)
				mu.Unlock()
				return out, nil
			}
			switch cmd.Step {
			case "b", "c":
				if !meet.arrive(ctx, cmd.Step, 15*time.Second) {
					return nil, participant.Failf("step %s ran alone: its sibling never entered its handler", cmd.Step)
				}
			case "d":
				mu.Lock()
				dDeps = cmd.Deps
				mu.Unlock()
				return nil, participant.Failf("d refuses")
			}
			return out, nil
		}})
	}
	e.register(dag("diamond",
		step("a", "pa"),
		after(step("b", "pb"), "a"),
		after(step("c", "pc"), "a"),
		after(step("d", "pd"), "b", "c"),
	))
	id := e.start("diamond", `{}`)
	sg := e.waitStatus(id, 30*time.Second)

	require.Equal(t, []string{"b", "c"}, meet.metBy(), "b and c must be inside their handlers at the same time")
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "reason %q", sg.GetReason())
	require.Contains(t, sg.GetReason(), "d refuses")

	mu.Lock()
	require.Len(t, dDeps, 2, "d depends on b and c and gets both outputs")
	require.JSONEq(t, `{"by":"pb"}`, string(dDeps["b"]))
	require.JSONEq(t, `{"by":"pc"}`, string(dDeps["c"]))
	require.JSONEq(t, `{"by":"pa"}`, compOuts["a"], "a compensation carries the output of the action it undoes")
	require.JSONEq(t, `{"by":"pb"}`, compOuts["b"])
	require.JSONEq(t, `{"by":"pc"}`, compOuts["c"])
	require.NotContains(t, compOuts, "d")
	mu.Unlock()

	keys := e.ledgerKeys(id)
	require.Len(t, keys, 6, "ledger: %v", keys)
	require.Equal(t, "a/action", keys[0], "ledger: %v", keys)
	require.ElementsMatch(t, []string{"b/action", "c/action"}, keys[1:3], "ledger: %v", keys)
	require.ElementsMatch(t, []string{"b/compensate", "c/compensate"}, keys[3:5], "b and c are undone before a; ledger: %v", keys)
	require.Equal(t, "a/compensate", keys[5], "ledger: %v", keys)
	require.NotContains(t, keys, "d/action")
	require.NotContains(t, keys, "d/compensate")

	want := map[string]pb.StepStatus{
		"a": pb.StepStatus_STEP_STATUS_COMPENSATED, "b": pb.StepStatus_STEP_STATUS_COMPENSATED,
		"c": pb.StepStatus_STEP_STATUS_COMPENSATED, "d": pb.StepStatus_STEP_STATUS_FAILED,
	}
	for name, st := range want {
		require.Equal(t, st, stepOf(t, sg, name).GetStatus(), "step %s", name)
	}
	require.Empty(t, e.duplicates())
	for p, sum := range e.ledgerSums(id) {
		require.Zero(t, sum, "participant %s nets to zero (G3)", p)
	}
}
