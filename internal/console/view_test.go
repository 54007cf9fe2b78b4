package console

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// The saga page links the trace id through the configured template, draws a bar per status a
// step was in (until its next transition, or the saga's end), and indents JSON.
func TestSagaViewTraceTimelineAndJSON(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	def := &saga.Definition{Steps: []saga.StepDefinition{{Name: "a"}, {Name: "b"}}}
	sg := &store.Saga{ID: uuid.New(), CreatedAt: t0, FinishedAt: t0.Add(10 * time.Second), State: &saga.State{
		Status: saga.StatusCompensated, Input: json.RawMessage(`{"x":[1,2]}`),
		Trace: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Steps: []saga.StepState{{Status: saga.StepCompensated}, {Status: saga.StepFailed}},
		History: []saga.Transition{
			{Step: -1, From: "", To: "RUNNING", At: t0},
			{Step: 0, From: "PENDING", To: "RUNNING", At: t0},
			{Step: 0, From: "RUNNING", To: "SUCCEEDED", At: t0.Add(2 * time.Second)},
			{Step: 1, From: "PENDING", To: "RUNNING", At: t0.Add(2 * time.Second)},
			{Step: 1, From: "RUNNING", To: "FAILED", At: t0.Add(5 * time.Second)},
			{Step: 0, From: "SUCCEEDED", To: "COMPENSATING", At: t0.Add(5 * time.Second)},
			{Step: 0, From: "COMPENSATING", To: "COMPENSATED", At: t0.Add(6 * time.Second)},
		},
	}}
	v := newSagaView(sg, def, "http://jaeger:16686/trace/{trace_id}", t0.Add(time.Hour))
	require.Equal(t, "0af7651916cd43dd8448eb211c80319c", v.TraceID)
	require.Equal(t, "http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c", v.TraceURL)
	require.Equal(t, "{\n  \"x\": [\n    1,\n    2\n  ]\n}", v.Input)
	type span struct {
		step, status string
		x, width     float64
	}
	var got []span
	for _, b := range v.Timeline {
		got = append(got, span{b.Step, b.Status, b.X, b.Width})
	}
	require.Equal(t, []span{
		{"a", "RUNNING", 0, 20}, {"a", "SUCCEEDED", 20, 30}, {"b", "RUNNING", 20, 30}, {"b", "FAILED", 50, 50},
		{"a", "COMPENSATING", 50, 10}, {"a", "COMPENSATED", 60, 40},
	}, got)
	require.Empty(t, newSagaView(sg, def, "", t0).TraceURL, "no template, no link")
}

// A login only ever redirects within the console.
func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/sagas/x?y=1": "/sagas/x?y=1", "": "/sagas", "https://evil.example/": "/sagas",
		"//evil.example/": "/sagas", "/\\evil.example": "/sagas", "sagas": "/sagas",
	} {
		require.Equal(t, want, localPath(in), in)
	}
}

// TestBlockedText: the transaction page shows how long a participant that voted YES held what it
// prepared: until its acknowledgement, or so far while it has none; nothing for other votes.
func TestBlockedText(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	yes := twopc.Participant{Name: "bank", Vote: twopc.VoteYes, VotedAt: at}
	if got := blockedText(yes, at.Add(1500*time.Millisecond)); got != "1.5s so far" {
		t.Errorf("waiting for the decision: %q, want %q", got, "1.5s so far")
	}
	yes.Acked, yes.AckedAt = true, at.Add(250*time.Millisecond)
	if got := blockedText(yes, at.Add(time.Hour)); got != "250ms" {
		t.Errorf("acknowledged: %q, want %q", got, "250ms")
	}
	for _, p := range []twopc.Participant{{Name: "a"}, {Name: "b", Vote: twopc.VoteNo, VotedAt: at}} {
		if got := blockedText(p, at.Add(time.Hour)); got != "—" {
			t.Errorf("vote %q: %q, want none", p.Vote, got)
		}
	}
}
