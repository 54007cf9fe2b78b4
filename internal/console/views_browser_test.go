package console_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// loginAs logs the browser in with token from the login page it is on, and waits for wantPath.
func (b *browser) loginAs(token, wantPath string) {
	b.t.Helper()
	b.await("the login page", `document.readyState === "complete" && document.getElementById("token") !== null`, "true")
	b.eval(fmt.Sprintf(`document.getElementById("token").value = %q; document.getElementById("login").click(); true`, token))
	b.await("the page after login", `location.pathname === `+jsString(wantPath)+` && document.readyState === "complete"`, "true")
}

// In a real browser against a real coordinator: without a session every page is the login page
// and shows no data; a reader sees the sagas the test started, a compensated saga's timeline
// with the compensations in reverse order of the actions, and no Abort or Retry; an operator's
// POST with a forged CSRF token gets 403. Every view is readable at a laptop's and a phone's
// width (the page never overflows sideways), and is saved as a screenshot.
func TestViewsInChromium(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	failed := e.failedSaga()
	compensated := e.compensatedSaga()
	_, _, err := e.coord.Engine().BeginTransaction(e.ctx, engine.BeginRequest{PrepareTimeout: 10 * time.Minute,
		Participants: []twopc.Participant{{Name: "bank", Payload: json.RawMessage(`{}`)}}})
	require.NoError(t, err)
	dir := screenshotDir(t)
	b := startBrowser(t, e.ctx)

	for _, path := range []string{"/sagas", "/sagas/" + failed.String(), "/participants", "/attention"} {
		b.open(e.base, path, "/login")
		// The login form keeps the asked path in a hidden field; the page shows no saga.
		require.Equal(t, "false", b.eval(`document.body.innerText.includes(`+jsString(failed.String())+`) || document.querySelector("table, a[href^='/sagas/']") !== null`),
			"%s without a session shows data", path)
	}
	b.open(e.base, "/sagas", "/login")
	b.shoot(dir, "login")
	b.loginAs(readerToken, "/sagas")

	b.open(e.base, "/sagas", "/sagas")
	for _, id := range []string{failed.String(), compensated.String()} {
		require.Equal(t, "true", b.eval(`document.querySelector('#sagas a[href="/sagas/`+id+`"]') !== null`), "the list lacks saga %s", id)
	}
	b.shoot(dir, "list")

	b.open(e.base, "/sagas/"+failed.String(), "/sagas/"+failed.String())
	b.await("the saga's status", `document.getElementById("saga-status").textContent`, `"FAILED"`)
	require.Equal(t, "0", b.eval(`document.querySelectorAll("#retry-form, #abort-form, #actions").length`), "a reader sees the operators' forms")
	require.Equal(t, "[]", b.eval(`[...document.querySelectorAll("button, input[type=submit]")].map(x => x.textContent.trim() || x.value).filter(x => /retry|abort/i.test(x))`))

	b.open(e.base, "/sagas/"+compensated.String(), "/sagas/"+compensated.String())
	b.await("the saga's status", `document.getElementById("saga-status").textContent`, `"COMPENSATED"`)
	bars := func(status string) string {
		return b.eval(`[...document.querySelectorAll('svg.timeline rect[data-status="` + status + `"]')].map(r => r.dataset.step)`)
	}
	require.Equal(t, `["hold","charge","debit"]`, bars("RUNNING"), "the actions in the timeline")
	require.Equal(t, `["charge","hold"]`, bars("COMPENSATING"), "the compensations, in reverse order of the actions")
	require.Equal(t, "true", b.eval(`(() => { const x = [...document.querySelectorAll('svg.timeline rect[data-status="COMPENSATING"]')].map(r => +r.getAttribute("x")); return x[0] <= x[1]; })()`),
		"charge's compensation is drawn after hold's")
	b.shoot(dir, "saga")

	for _, v := range []struct{ path, name string }{
		{"/attention", "attention"}, {"/definitions", "definitions"}, {"/definitions/booking", "definition"},
		{"/transactions", "transactions"}, {"/participants", "participants"}, {"/participants/bank", "participant"},
	} {
		b.open(e.base, v.path, v.path)
		b.shoot(dir, v.name)
	}

	b.call("Network.clearBrowserCookies", map[string]any{}, nil)
	b.open(e.base, "/sagas", "/login")
	b.loginAs(operatorToken, "/sagas")
	b.open(e.base, "/sagas/"+failed.String(), "/sagas/"+failed.String())
	require.Equal(t, "true", b.eval(`document.getElementById("retry-form") !== null`), "an operator sees Retry")
	b.eval(`fetch("/sagas/` + failed.String() + `/retry", {method: "POST", credentials: "same-origin", redirect: "manual",
		body: new URLSearchParams({csrf: "forged", reason: "x", confirm: "yes"})}).then(r => { window.forgedStatus = r.status; }); true`)
	b.await("the forged POST", `window.forgedStatus`, "403")
	sg, err := e.coord.Engine().GetSaga(e.ctx, failed)
	require.NoError(t, err)
	require.Equal(t, saga.StatusFailed, sg.State.Status, "a forged POST changed the saga")
	require.Empty(t, sg.State.Audit)
	require.False(t, strings.Contains(b.eval(`document.body.innerText`), "guest"))
}
