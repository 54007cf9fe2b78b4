package engine

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
)

func TestStartSendsTheFirstCommandAndIsIdempotent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order"))
	id := uuid.New()
	req := StartRequest{ID: id, Definition: "order", Input: json.RawMessage(`{"n":1}`)}
	sg, created, err := h.e.StartSaga(h.ctx, req)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, saga.StatusRunning, sg.State.Status)

	cmd := h.step("pa")
	require.Equal(t, id.String(), cmd.SagaID)
	require.Equal(t, "do-a", cmd.Action)
	require.Equal(t, protocol.KindAction, cmd.Kind)
	require.Equal(t, 1, cmd.Attempt)
	require.JSONEq(t, `{"n":1}`, string(cmd.Input))
	require.EqualValues(t, 1000, cmd.TimeoutMillis, "the command carries the step's timeout")

	again, created, err := h.e.StartSaga(h.ctx, req)
	require.NoError(t, err)
	require.False(t, created, "the same request with the same id returns the saga")
	require.Equal(t, id, again.ID)
	h.noCommand("pa")

	req.Input = json.RawMessage(`{"n":2}`)
	_, _, err = h.e.StartSaga(h.ctx, req)
	require.ErrorIs(t, err, ErrAlreadyExists, "another request with the same id")
}

func TestStartRefusesBadRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order"))
	for name, tc := range map[string]struct {
		req  StartRequest
		want error
	}{
		"no definition":      {StartRequest{}, ErrInvalidArgument},
		"unknown definition": {StartRequest{Definition: "nope"}, store.ErrNotFound},
		"bad JSON":           {StartRequest{Definition: "order", Input: json.RawMessage(`{`)}, ErrInvalidArgument},
		"negative deadline":  {StartRequest{Definition: "order", Deadline: -time.Second}, ErrInvalidArgument},
		"deadline past 720h": {StartRequest{Definition: "order", Deadline: saga.MaxDeadline + time.Second}, ErrInvalidArgument},
		"negative version":   {StartRequest{Definition: "order", DefinitionVersion: -1}, ErrInvalidArgument},
		"NUL in definition":  {StartRequest{Definition: "ord\x00er"}, ErrInvalidArgument},
		"deep input":         {StartRequest{Definition: "order", Input: json.RawMessage(strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000))}, ErrInvalidArgument},
		"huge input":         {StartRequest{Definition: "order", Input: json.RawMessage(`"` + strings.Repeat("x", 300<<10) + `"`)}, ErrResourceExhausted},
	} {
		_, _, err := h.e.StartSaga(h.ctx, tc.req)
		require.ErrorIs(t, err, tc.want, name)
	}
}

func TestRepliesDriveASagaToCompletion(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order", func(d *saga.Definition) {
		d.Steps[2].DependsOn = []string{"a", "b"}
		d.Steps[1].DependsOn = []string{"a"}
	}))
	id := h.start("order", `{}`)
	a := h.step("pa")
	h.answer(a, protocol.OutcomeSucceeded, `{"reserved":7}`)
	b := h.step("pb")
	require.JSONEq(t, `{"reserved":7}`, string(b.Deps["a"]), "a command carries the outputs of the steps it depends on")
	h.answer(b, protocol.OutcomeSucceeded, `{"charged":true}`)
	c := h.step("pc")
	require.Len(t, c.Deps, 2)
	h.answer(c, protocol.OutcomeSucceeded, "")
	sg := h.awaitStatus(id, saga.StatusCompleted)
	require.False(t, sg.FinishedAt.IsZero(), "a terminal saga records when it finished")
	require.True(t, sg.WakeAt.IsZero(), "a terminal saga has no timer")
	require.NoError(t, saga.CheckHistory(sg.State.History, 3))
}

func TestBusinessFailureCompensatesInReverse(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order"))
	id := h.start("order", `{}`)
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, `{"r":1}`)
	h.answer(h.step("pb"), protocol.OutcomeSucceeded, "")
	h.answer(h.step("pc"), protocol.OutcomeFailed, "out of stock")
	undoB := h.step("pb")
	require.Equal(t, protocol.KindCompensate, undoB.Kind)
	require.Equal(t, "undo-b", undoB.Action)
	h.noCommand("pa")
	h.answer(undoB, protocol.OutcomeSucceeded, "")
	undoA := h.step("pa")
	require.JSONEq(t, `{"r":1}`, string(undoA.Output), "a compensation carries the output of the action it undoes")
	h.answer(undoA, protocol.OutcomeSucceeded, "")
	sg := h.awaitStatus(id, saga.StatusCompensated)
	require.Contains(t, sg.State.Reason, "out of stock")
}

func TestRetryReplyWaitsForTheBackoff(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order", func(d *saga.Definition) {
		d.Steps[0].Retry = saga.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Minute, MaxBackoff: time.Minute, Multiplier: 1}
	}))
	id := h.start("order", `{}`)
	h.answer(h.step("pa"), protocol.OutcomeRetry, "connection reset")
	require.Eventually(t, func() bool { return h.saga(id).State.Steps[0].Waiting }, wait, time.Millisecond)
	h.noCommand("pa")
	h.clock.advance(2 * time.Minute)
	second := h.step("pa")
	require.Equal(t, 2, second.Attempt, "the retry is the next attempt")
	h.answer(second, protocol.OutcomeSucceeded, "")
	h.step("pb")
}

func TestTimeoutRetriesThenCompensates(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order", func(d *saga.Definition) {
		d.Steps[1].Retry = saga.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}
	}))
	id := h.start("order", `{}`)
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, "")
	first := h.step("pb")
	h.clock.advance(1500 * time.Millisecond) // past the 1s step timeout
	require.Eventually(t, func() bool { return h.saga(id).State.Steps[1].Waiting }, wait, time.Millisecond, "the timeout schedules a retry")
	h.clock.advance(time.Second) // past the retry's backoff
	second := h.step("pb")
	require.Equal(t, first.Attempt+1, second.Attempt)
	h.clock.advance(1500 * time.Millisecond) // the last attempt times out too
	// b may have been applied by a timed-out attempt, so it is compensated, then a.
	h.answer(h.step("pb"), protocol.OutcomeSucceeded, "")
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, "")
	sg := h.awaitStatus(id, saga.StatusCompensated)
	require.Contains(t, sg.State.Reason, "exhausted 2 attempts")
}

func TestDeadlineCompensates(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order", func(d *saga.Definition) { d.Deadline = time.Hour }))
	id := h.start("order", `{}`)
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, "")
	b := h.step("pb")
	h.clock.advance(2 * time.Hour)
	// The deadline compensates a; b's attempt in flight times out first and is compensated too.
	h.answer(h.step("pb"), protocol.OutcomeSucceeded, "")
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, "")
	sg := h.awaitStatus(id, saga.StatusCompensated)
	require.Contains(t, sg.State.Reason, "deadline exceeded")
	h.answer(b, protocol.OutcomeSucceeded, "") // a late success of b changes nothing now
	require.Equal(t, saga.StatusCompensated, h.saga(id).State.Status)
}

func TestAbortCompensatesAndPastThePivotIsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order", func(d *saga.Definition) { d.Steps[1].Pivot = true }))
	id := h.start("order", `{}`)
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, "")
	b := h.step("pb")
	_, err := h.e.AbortSaga(h.ctx, id, "customer cancelled")
	require.ErrorIs(t, err, ErrFailedPrecondition, "the pivot is in flight")
	h.answer(b, protocol.OutcomeSucceeded, "")
	h.step("pc")
	_, err = h.e.AbortSaga(h.ctx, id, "too late")
	require.ErrorIs(t, err, ErrFailedPrecondition, "past the pivot a saga only completes")
	_, err = h.e.AbortSaga(h.ctx, uuid.New(), "")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestAbortBeforeThePivot(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order"))
	id := h.start("order", `{}`)
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, "")
	b := h.step("pb")
	sg, err := h.e.AbortSaga(h.ctx, id, "customer cancelled")
	require.NoError(t, err)
	require.Equal(t, saga.StatusCompensating, sg.State.Status, "AbortSaga returns the saga as committed")
	h.answer(b, protocol.OutcomeSucceeded, "") // b's action, in flight when aborted, succeeded
	h.answer(h.step("pb"), protocol.OutcomeSucceeded, "")
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, "")
	sg = h.awaitStatus(id, saga.StatusCompensated)
	require.Equal(t, "customer cancelled", sg.State.Reason)
}

func TestRetryResumesAFailedSaga(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order", func(d *saga.Definition) {
		d.Steps[0].Pivot = true
		d.Steps[1].Retry = saga.RetryPolicy{MaxAttempts: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}
	}))
	id := h.start("order", `{}`)
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, "")
	h.answer(h.step("pb"), protocol.OutcomeRetry, "still down")
	sg := h.awaitStatus(id, saga.StatusFailed)
	require.Contains(t, sg.State.Reason, "after the pivot")
	_, err := h.e.AbortSaga(h.ctx, id, "")
	require.ErrorIs(t, err, ErrFailedPrecondition)

	sg, err = h.e.RetrySaga(h.ctx, id, "")
	require.NoError(t, err)
	require.Equal(t, saga.StatusRunning, sg.State.Status)
	again := h.step("pb")
	require.Equal(t, 2, again.Attempt)
	h.answer(again, protocol.OutcomeSucceeded, "")
	h.answer(h.step("pc"), protocol.OutcomeSucceeded, "")
	h.awaitStatus(id, saga.StatusCompleted)
	_, err = h.e.RetrySaga(h.ctx, id, "")
	require.ErrorIs(t, err, ErrFailedPrecondition, "only a FAILED saga is retried")
}

func TestDuplicateAndStaleRepliesChangeNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order"))
	id := h.start("order", `{}`)
	a := h.step("pa")
	h.answer(a, protocol.OutcomeSucceeded, "")
	h.step("pb")
	before := h.saga(id).Version
	h.answer(a, protocol.OutcomeSucceeded, "")
	h.answer(a, protocol.OutcomeFailed, "late")
	// Wait until both were taken off the reply queue, then check the saga is unchanged.
	require.Eventually(t, func() bool { ready, unacked := h.broker.Depth(protocol.QueueReplies); return ready+unacked == 0 }, wait, time.Millisecond)
	require.Equal(t, before, h.saga(id).Version)
	h.noCommand("pb")
}

func TestBadRepliesAreDeadLettered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order"))
	dead := h.deadLetters()
	id := h.start("order", `{}`)
	a := h.step("pa")

	for name, m := range map[string]protocol.Message{
		"malformed":    {MessageID: "x1", Type: protocol.TypeReply, CorrelationID: "nonsense", Body: []byte(`{}`)},
		"unknown saga": mustReply(t, &protocol.StepCommand{SagaID: uuid.NewString(), Step: "a", Kind: protocol.KindAction, Attempt: 1}),
		"invalid step": mustReply(t, &protocol.StepCommand{SagaID: id.String(), Step: "z", StepIndex: 9, Kind: protocol.KindAction, Attempt: 1}),
	} {
		h.publish(m)
		d := awaitDelivery(t, dead, name)
		require.Equal(t, m.MessageID, d.MessageID, name)
	}
	h.answer(a, protocol.OutcomeSucceeded, "")
	h.step("pb") // the good reply was not held back
}

func mustReply(t *testing.T, cmd *protocol.StepCommand) protocol.Message {
	t.Helper()
	m, err := protocol.EncodeStepReply(cmd, protocol.StepReply{Outcome: protocol.OutcomeSucceeded})
	require.NoError(t, err)
	return m
}

// A coordinator whose definition cache is cold (a restart) and whose pool has one connection
// applies replies: the definition is loaded outside the batch's transaction. The store holds
// its one connection for the whole batch, as pgx's pool would.
func TestColdCacheWithOneConnection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *harnessOpts) { o.storeCfg.MaxConns = 1 })
	h.define(three("order"))
	id := h.start("order", `{}`)
	a := h.step("pa")
	h.restart() // a new engine knows no definition yet
	h.answer(a, protocol.OutcomeSucceeded, "")
	h.step("pb")
	require.Equal(t, saga.StepSucceeded, h.saga(id).State.Steps[0].Status)
}

// A store error while applying replies requeues them; they apply once the store is back.
func TestStoreOutageRequeuesReplies(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.define(three("order"))
	h.start("order", `{}`)
	a := h.step("pa")
	h.faults.failMutate(errors.New("connection refused"))
	h.answer(a, protocol.OutcomeSucceeded, "")
	h.step("pb")
	require.Zero(t, h.faults.pending(), "the injected failure was met")
}
