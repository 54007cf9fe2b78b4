package e2e_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/protocol"
)

// commandLog keeps the first command each step received, so a test can publish copies.
type commandLog struct {
	mu   sync.Mutex
	cmds map[string]protocol.StepCommand // step/kind -> command
}

func (l *commandLog) keep(cmd *protocol.StepCommand) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cmds == nil {
		l.cmds = map[string]protocol.StepCommand{}
	}
	if _, ok := l.cmds[cmd.Step+"/"+string(cmd.Kind)]; !ok {
		l.cmds[cmd.Step+"/"+string(cmd.Kind)] = *cmd
	}
}

func (l *commandLog) get(t *testing.T, step string, kind protocol.Kind) *protocol.StepCommand {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.cmds[step+"/"+string(kind)]
	require.True(t, ok, "no %s command of step %s was seen", kind, step)
	return &c
}

func encodeCommand(t *testing.T, cmd *protocol.StepCommand) protocol.Message {
	t.Helper()
	m, err := cmd.Encode()
	require.NoError(t, err)
	return m
}

func encodeReply(t *testing.T, cmd *protocol.StepCommand, r protocol.StepReply) protocol.Message {
	t.Helper()
	m, err := protocol.EncodeStepReply(cmd, r)
	require.NoError(t, err)
	return m
}

// TestDuplicateCommandsAndRepliesChangeNothing (fault 5): copies of commands and replies, while the
// saga runs and after it completed, are consumed and change nothing: every effect is in the ledger
// once, the saga's version and steps stay as they were, and a command duplicated while its
// original is still in its handler waits for it and gets the stored reply.
func TestDuplicateCommandsAndRepliesChangeNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var seen commandLog
	var calls counter
	releaseB := e.newGate()
	behave := func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		seen.keep(cmd)
		calls.inc(cmd.Step + "/" + string(cmd.Kind))
		if cmd.Step == "b" {
			if err := releaseB.wait(ctx); err != nil {
				return nil, err
			}
		}
		return json.RawMessage(`{"step":"` + cmd.Step + `"}`), nil
	}
	pa := e.startParticipant(participantOpts{name: "pa", behave: behave})
	pbp := e.startParticipant(participantOpts{name: "pb", behave: behave})
	pc := e.startParticipant(participantOpts{name: "pc", behave: behave})
	// Long timeouts: b is held while the test waits for the broker's statistics, and no timeout
	// may change the saga meanwhile.
	e.register(chain("dups", slowStep("a", "pa"), slowStep("b", "pb"), slowStep("c", "pc")))
	id := e.start("dups", `{"n":1}`)
	e.waitFor(id, 30*time.Second, "b in its handler", func(sg *pb.Saga) bool {
		return stepOf(t, sg, "b").GetStatus() == pb.StepStatus_STEP_STATUS_RUNNING
	})
	// The handler of b has been entered once the command log has it.
	eventually(t, 10*time.Second, func() (bool, string) {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		_, ok := seen.cmds["b/action"]
		return ok, "b's handler not entered"
	})

	before := e.get(id)
	version := e.sagaVersion(id)
	a := seen.get(t, "a", protocol.KindAction)
	b := seen.get(t, "b", protocol.KindAction)
	aID := protocol.CommandRef{SagaID: id, StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID()
	bID := protocol.CommandRef{SagaID: id, StepIndex: 1, Kind: protocol.KindAction, Attempt: 1}.ID()

	// While the saga runs: a copy of a's command, two replies to a's command (a copy and a forged
	// one with another outcome), and a copy of b's command while b's original is in its handler.
	e.publish(
		toParticipant("pa", encodeCommand(t, a)),
		toCoordinator(encodeReply(t, a, protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"step":"a"}`)})),
		toCoordinator(encodeReply(t, a, protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "forged"})),
		toParticipant("pb", encodeCommand(t, b)),
	)
	pa.tap.awaitSettled(t, aID, "ack", 2, 10*time.Second)
	// a's reply, the two forged copies and the reply re-sent for a's duplicate command.
	e.awaitQueueAcked(protocol.QueueReplies, 4, 20*time.Second)
	require.Equal(t, version, e.sagaVersion(id), "duplicates while running changed the saga")
	require.True(t, proto.Equal(before, e.get(id)), "duplicates while running changed the saga")
	require.Equal(t, []string{"a/action"}, e.ledgerKeys(id))

	releaseB.open()
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(), "reason %q", sg.GetReason())
	pbp.tap.awaitSettled(t, bID, "ack", 2, 10*time.Second)
	calls.mu.Lock()
	require.Equal(t, map[string]int{"a/action": 1, "b/action": 1, "c/action": 1}, calls.n, "every handler ran once")
	calls.mu.Unlock()

	// After completion: a copy of c's command and a copy of its reply.
	c := seen.get(t, "c", protocol.KindAction)
	cID := protocol.CommandRef{SagaID: id, StepIndex: 2, Kind: protocol.KindAction, Attempt: 1}.ID()
	final := e.get(id)
	version = e.sagaVersion(id)
	e.publish(
		toParticipant("pc", encodeCommand(t, c)),
		toCoordinator(encodeReply(t, c, protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: json.RawMessage(`{"step":"c"}`)})),
	)
	pc.tap.awaitSettled(t, cID, "ack", 2, 10*time.Second)
	// + b's reply, the reply re-sent for b's duplicate, c's reply, and the two copies for c.
	e.awaitQueueAcked(protocol.QueueReplies, 9, 20*time.Second)
	require.Equal(t, version, e.sagaVersion(id), "duplicates after completion changed the saga")
	require.True(t, proto.Equal(final, e.get(id)), "duplicates after completion changed the saga")

	require.Equal(t, []string{"a/action", "b/action", "c/action"}, e.ledgerKeys(id), "each effect once")
	require.Empty(t, e.duplicates())
	for _, st := range final.GetSteps() {
		require.EqualValues(t, 1, st.GetAttempt(), "step %s", st.GetName())
		require.Equal(t, pb.StepStatus_STEP_STATUS_SUCCEEDED, st.GetStatus(), "step %s", st.GetName())
	}
	calls.mu.Lock()
	require.Equal(t, map[string]int{"a/action": 1, "b/action": 1, "c/action": 1}, calls.n, "no handler ran for a duplicate")
	calls.mu.Unlock()
}
