package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// /attention lists the FAILED sagas oldest first and the transactions in doubt; /transactions
// and /transactions/{id} show a transaction's participants, votes and state; the list's version
// and time filters select what they say.
func TestAttentionTransactionsAndFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first, second := e.failedSaga(), e.failedSaga()
	// bank has no two-phase-commit handlers: its PREPARE is dead-lettered, no vote comes, and the
	// transaction stays PREPARING (in doubt) until its ten-minute prepare timeout.
	tx, _, err := e.coord.Engine().BeginTransaction(e.ctx, engine.BeginRequest{PrepareTimeout: 10 * time.Minute,
		Participants: []twopc.Participant{{Name: "bank", Payload: json.RawMessage(`{"note":"<b>x</b>"}`)}}})
	require.NoError(t, err)
	c := e.login(e.client(), readerToken)

	code, body := e.get(c, "/attention")
	require.Equal(t, http.StatusOK, code)
	i, j := strings.Index(body, first.String()), strings.Index(body, second.String())
	require.True(t, i > 0 && j > i, "the FAILED sagas are not both listed, oldest first:\n%s", body)
	contains(t, body, "/transactions/"+tx.ID.String(), ">PREPARING<")

	code, body = e.get(c, "/transactions?state=PREPARING")
	require.Equal(t, http.StatusOK, code)
	contains(t, body, "/transactions/"+tx.ID.String())
	code, body = e.get(c, "/transactions/"+tx.ID.String())
	require.Equal(t, http.StatusOK, code)
	contains(t, body, `id="tx-state">PREPARING<`, `<td>bank</td><td data-field="vote">none yet</td>`, "&lt;b&gt;x&lt;/b&gt;")
	code, _ = e.get(c, "/transactions?state=BOGUS")
	require.Equal(t, http.StatusBadRequest, code)

	for _, tt := range []struct {
		query string
		code  int
		has   bool
	}{
		{"definition=transfer&version=1", http.StatusOK, true},
		{"definition=transfer&version=2", http.StatusOK, false},
		{"from=" + time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04"), http.StatusOK, false},
		{"from=" + time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04"), http.StatusOK, true},
		{"before=" + time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04"), http.StatusOK, false},
		{"version=1", http.StatusBadRequest, false},
		{"from=yesterday", http.StatusBadRequest, false},
	} {
		code, body := e.get(c, "/sagas?"+tt.query)
		require.Equal(t, tt.code, code, tt.query)
		require.Equal(t, tt.has, strings.Contains(body, first.String()), "%s lists the saga", tt.query)
	}
}

// /definitions lists each definition's latest version; /definitions/{name} shows every version
// with its steps as a graph and how many unfinished sagas run on it.
func TestDefinitionsShowVersionsGraphAndSagas(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.failedSaga()
	_, _, err := e.coord.Engine().RegisterDefinition(e.ctx, saga.Definition{Name: "transfer", Steps: []saga.StepDefinition{
		{Name: "reserve", Participant: "bank", Action: "reserve"},
		{Name: "notify", Participant: "bank", Action: "notify"},
		{Name: "debit", Participant: "bank", Action: "debit", DependsOn: []string{"reserve", "notify"}},
	}})
	require.NoError(t, err)
	c := e.login(e.client(), readerToken)

	code, body := e.get(c, "/definitions")
	require.Equal(t, http.StatusOK, code)
	contains(t, body, `<a href="/definitions/transfer">transfer</a></td><td>2</td><td>3</td>`)

	code, body = e.get(c, "/definitions/transfer")
	require.Equal(t, http.StatusOK, code)
	contains(t, body, `id="version-2"`, `id="version-1"`, `data-failed="1">1 failed<`, `data-failed="2">0 failed<`)
	v2 := body[strings.Index(body, `id="version-2"`):strings.Index(body, `id="version-1"`)]
	require.Equal(t, 3, strings.Count(v2, `<g class="node`), "version 2 draws its three steps")
	require.Equal(t, 2, strings.Count(v2, `<line class="edge"`), "debit depends on two steps")
	v1 := body[strings.Index(body, `id="version-1"`):]
	require.Equal(t, 1, strings.Count(v1, `<line class="edge"`), "version 1 is a chain of two")
	require.Contains(t, v1, `<g class="node pivot">`)
	// Version 2 says what it changes from version 1; version 1 has nothing to compare with.
	contains(t, v2, `Changes from version 1`, `<li>step reserve: pivot true → false</li>`,
		`<li>step notify added (participant bank, action notify)</li>`,
		`<li>step debit: depends on reserve → reserve, notify; attempts 1 → 3; compensation attempts 1 → 3</li>`)
	require.NotContains(t, v1, `Changes from version`)

	code, _ = e.get(c, "/definitions/nosuch")
	require.Equal(t, http.StatusNotFound, code)
}

// A transaction's event stream sends it at once and again when its prepare deadline passes and
// the coordinator decides ABORT.
func TestTransactionEventsFollowTheDecision(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tx, _, err := e.coord.Engine().BeginTransaction(e.ctx, engine.BeginRequest{PrepareTimeout: time.Second,
		Participants: []twopc.Participant{{Name: "bank", Payload: json.RawMessage(`{}`)}}})
	require.NoError(t, err)
	c := e.login(e.client(), readerToken)
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/transactions/"+tx.ID.String()+"/events", nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	events := bufio.NewScanner(resp.Body)
	var states []string
	for events.Scan() {
		data, ok := strings.CutPrefix(events.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			State, Decision string
			Participants    []struct{ Vote string }
		}
		require.NoError(t, json.Unmarshal([]byte(data), &ev))
		require.Len(t, ev.Participants, 1)
		states = append(states, ev.State)
		if ev.Decision == "ABORT" {
			break
		}
	}
	require.NotEmpty(t, states, "the event stream ended: %v", events.Err())
	require.Equal(t, "PREPARING", states[0], "the first event is the transaction as it was")
	require.Greater(t, len(states), 1, "no event after the decision: %v (%v)", states, events.Err())
}
