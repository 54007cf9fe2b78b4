package e2e_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// TestRunningSagaKeepsItsDefinitionVersion: registering identical content is a no-op, changed
// content is a new version, new sagas use the latest, and a running saga finishes on the version
// it started with.
func TestRunningSagaKeepsItsDefinitionVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	release := e.newGate()
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "pb", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return nil, release.wait(ctx)
	}})
	e.startParticipant(participantOpts{name: "pc"})

	v1 := chain("versioned", slowStep("a", "pa"), slowStep("b", "pb"))
	first, err := e.client.RegisterDefinition(e.ctx, &pb.RegisterDefinitionRequest{Definition: v1})
	require.NoError(t, err)
	require.True(t, first.GetCreated())
	require.EqualValues(t, 1, first.GetDefinition().GetVersion())
	same, err := e.client.RegisterDefinition(e.ctx, &pb.RegisterDefinitionRequest{Definition: chain("versioned", slowStep("a", "pa"), slowStep("b", "pb"))})
	require.NoError(t, err)
	require.False(t, same.GetCreated(), "identical content is a no-op")
	require.EqualValues(t, 1, same.GetDefinition().GetVersion())

	old := e.start("versioned", `{}`)
	e.waitFor(old, 30*time.Second, "b running", func(sg *pb.Saga) bool {
		return stepOf(t, sg, "b").GetStatus() == pb.StepStatus_STEP_STATUS_RUNNING
	})
	second, err := e.client.RegisterDefinition(e.ctx, &pb.RegisterDefinitionRequest{Definition: chain("versioned", slowStep("a", "pa"), slowStep("b", "pb"), slowStep("c", "pc"))})
	require.NoError(t, err)
	require.True(t, second.GetCreated())
	require.EqualValues(t, 2, second.GetDefinition().GetVersion())

	fresh := e.start("versioned", `{}`)
	pinned := uuid.NewString()
	_, err = e.client.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: pinned, Definition: "versioned", DefinitionVersion: 1, Input: []byte(`{}`)})
	require.NoError(t, err)
	release.open()

	for id, want := range map[string][]string{old: {"a", "b"}, fresh: {"a", "b", "c"}, pinned: {"a", "b"}} {
		sg := e.waitStatus(id, 30*time.Second)
		require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus())
		var names []string
		for _, st := range sg.GetSteps() {
			names = append(names, st.GetName())
		}
		require.Equal(t, want, names, "saga %s runs the steps of its version", id)
		require.Len(t, e.ledgerRows(id), len(want))
	}
	require.EqualValues(t, 1, e.get(old).GetDefinitionVersion())
	require.EqualValues(t, 2, e.get(fresh).GetDefinitionVersion())
	got, err := e.client.GetDefinition(e.ctx, &pb.GetDefinitionRequest{Name: "versioned", Version: 1})
	require.NoError(t, err)
	require.Len(t, got.GetDefinition().GetSteps(), 2)
	_, err = e.client.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: uuid.NewString(), Definition: "versioned", DefinitionVersion: 3})
	requireCode(t, err, codes.NotFound, "version 3")
}

// TestSagaDeadlineCompensates: a saga whose second step never answers passes the deadline given
// to StartSaga and compensates, naming the deadline; a timer, not a reply, drives it.
func TestSagaDeadlineCompensates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startParticipant(participantOpts{name: "pa"})
	e.startParticipant(participantOpts{name: "silent", hold: func(d *transport.Delivery) bool { return d.Type == protocol.TypeSagaAction }})
	e.register(chain("deadline", step("a", "pa"), compAttempts(attempts(timeout(step("b", "silent"), 300*time.Millisecond), 100), 5)))
	id := uuid.NewString()
	_, err := e.client.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: id, Definition: "deadline", Input: []byte(`{}`), Deadline: durationpb.New(time.Second)})
	require.NoError(t, err)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus(), "steps %s", describeSteps(sg))
	require.Contains(t, sg.GetReason(), "deadline exceeded")
	require.NotNil(t, sg.GetDeadline())
	require.Less(t, stepOf(t, sg, "b").GetAttempt(), int32(100), "the deadline, not the retry budget, ended b")
	require.Equal(t, pb.StepStatus_STEP_STATUS_COMPENSATED, stepOf(t, sg, "b").GetStatus(), "b timed out, so it may have been applied: it is compensated")
	require.Equal(t, []string{"a/action", "a/compensate"}, e.ledgerKeys(id))
}
