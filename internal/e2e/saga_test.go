package e2e_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

func TestThreeStepSagaCompletes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, p := range []string{"orders", "payments", "shipping"} {
		e.startParticipant(participantOpts{name: p})
	}
	e.register(chain("order", step("create", "orders"), step("charge", "payments"), step("ship", "shipping")))
	id := e.start("order", `{"order":42}`)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(), "reason: %s", sg.GetReason())
	rows := e.ledgerRows(id)
	require.Len(t, rows, 3)
	for i, want := range []string{"create", "charge", "ship"} {
		require.Equal(t, want, rows[i].Step)
		require.EqualValues(t, protocol.KindAction, rows[i].Kind)
	}
	for _, st := range sg.GetSteps() {
		require.Equal(t, pb.StepStatus_STEP_STATUS_SUCCEEDED, st.GetStatus())
		require.EqualValues(t, 1, st.GetAttempt())
		require.JSONEq(t, `{"by":"`+st.GetParticipant()+`"}`, string(st.GetOutput()))
	}
}

func TestBusinessFailureCompensatesInReverse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startParticipant(participantOpts{name: "a"})
	e.startParticipant(participantOpts{name: "b"})
	e.startParticipant(participantOpts{name: "c", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			return nil, participant.Failf("out of stock")
		}
		return json.RawMessage(`{}`), nil
	}})
	e.register(chain("fails-at-3", step("one", "a"), step("two", "b"), step("three", "c")))
	id := e.start("fails-at-3", `{}`)
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPENSATED, sg.GetStatus())
	require.Contains(t, sg.GetReason(), "out of stock")
	rows := e.ledgerRows(id)
	var got []string
	for _, r := range rows {
		got = append(got, r.Step+"/"+r.Kind)
	}
	require.Equal(t, []string{"one/action", "two/action", "two/compensate", "one/compensate"}, got)
	require.Equal(t, pb.StepStatus_STEP_STATUS_FAILED, sg.GetSteps()[2].GetStatus())
}
