package engine

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
)

// syncBuffer is a bytes.Buffer the engine's goroutines and the test can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON log lines whose msg is msg.
func (s *syncBuffer) lines(t *testing.T, msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// Registration, abort and retry record the caller of the call's context, the transaction's time
// and the reason, with the change; a refused call records nothing. The engine's log line names
// the caller.
func TestOperatorCallsRecordTheCaller(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	h := newHarness(t, func(o *harnessOpts) {
		o.cfg = func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(logs, nil)) }
	})
	as := func(name string) auth.Identity {
		return auth.Identity{Name: name, Roles: []auth.Role{auth.RoleOperator}}
	}
	def := three("order", func(d *saga.Definition) {
		d.Steps[1].Retry = saga.RetryPolicy{MaxAttempts: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}
		d.Steps[0].Pivot = true
	})
	stored, created, err := h.e.RegisterDefinition(auth.WithIdentity(h.ctx, as("ci-bot")), def)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "ci-bot", stored.RegisteredBy)
	again, _, err := h.e.RegisterDefinition(h.ctx, def)
	require.NoError(t, err)
	require.Equal(t, "ci-bot", again.RegisteredBy, "an identical registration keeps the first registrant")
	for _, s := range stored.Steps {
		h.listen(s.Participant)
	}

	id := h.start("order", `{}`)
	h.answer(h.step("pa"), protocol.OutcomeSucceeded, "")
	h.answer(h.step("pb"), protocol.OutcomeRetry, "down")
	h.awaitStatus(id, saga.StatusFailed)
	_, err = h.e.AbortSaga(auth.WithIdentity(h.ctx, as("mallory")), id, "refused: past the pivot")
	require.ErrorIs(t, err, ErrFailedPrecondition)
	require.Empty(t, h.saga(id).State.Audit, "a refused call leaves no audit entry")

	now := h.clock.Now()
	sg, err := h.e.RetrySaga(auth.WithIdentity(h.ctx, as("ops-alice")), id, "payments is back")
	require.NoError(t, err)
	for what, audit := range map[string][]saga.AuditEntry{"RetrySaga's answer": sg.State.Audit, "the stored saga": h.saga(id).State.Audit} {
		require.Len(t, audit, 1, what)
		a := audit[0]
		require.Equal(t, saga.AuditEntry{Action: saga.AuditRetry, By: "ops-alice", Reason: "payments is back"}, saga.AuditEntry{Action: a.Action, By: a.By, Reason: a.Reason}, what)
		require.True(t, a.At.Equal(now), "%s: at %s, want the transaction's time %s", what, a.At, now)
	}

	require.Len(t, logs.lines(t, "definition registered"), 2)
	require.Equal(t, "ci-bot", logs.lines(t, "definition registered")[0][logCaller])
	retried := logs.lines(t, "saga retried by an operator")
	require.Len(t, retried, 1)
	require.Equal(t, "ops-alice", retried[0][logCaller])
	require.Equal(t, "payments is back", retried[0]["reason"])
	require.Equal(t, id.String(), retried[0]["saga_id"])
}

// Without an identity in the context (a coordinator without authentication) the caller is
// "anonymous", and an abort's reason is recorded as given.
func TestAbortWithoutIdentityIsAnonymous(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stored := h.define(three("order"))
	require.Equal(t, "anonymous", stored.RegisteredBy)
	id := h.start("order", `{}`)
	h.step("pa")
	sg, err := h.e.AbortSaga(h.ctx, id, "customer cancelled")
	require.NoError(t, err)
	require.Len(t, sg.State.Audit, 1)
	a := sg.State.Audit[0]
	require.Equal(t, saga.AuditAbort, a.Action)
	require.Equal(t, "anonymous", a.By)
	require.Equal(t, "customer cancelled", a.Reason)
	require.False(t, a.At.IsZero())
}
