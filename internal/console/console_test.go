package console_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/auth/authtest"
	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/saga"
)

// An operator logs in with a token, finds the FAILED saga in the list, reads its steps (user
// JSON and errors escaped, never HTML), and retries it with a reason through the form a browser
// without JavaScript submits; the saga completes and its audit trail names the operator and the
// reason.
func TestOperatorRetriesAFailedSagaWithoutJavaScript(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.failedSaga()
	c := e.login(e.client(), operatorToken)

	code, body := e.get(c, "/sagas?status=FAILED")
	require.Equal(t, http.StatusOK, code)
	contains(t, body, "/sagas/"+id.String(), `data-count="FAILED">1<`, "otto")

	code, body = e.get(c, "/sagas/"+id.String())
	require.Equal(t, http.StatusOK, code)
	contains(t, body, `id="saga-status">FAILED<`, `id="retry-form"`, "reserve", "debit",
		"ledger &lt;b&gt;unavailable&lt;/b&gt;", "&lt;i&gt;x&lt;/i&gt;", "&lt;script&gt;alert(1)&lt;/script&gt;", `<svg class="timeline"`)
	require.NotContains(t, body, "<script>alert(1)")
	require.NotContains(t, body, "<b>unavailable")

	e.broken.Store(false)
	resp, _ := e.post(c, "/sagas/"+id.String()+"/retry", url.Values{"csrf": {e.csrf(body)}, "reason": {"ledger is back"}, "confirm": {"yes"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	e.waitStatus(id, saga.StatusCompleted)

	_, body = e.get(c, "/sagas/"+id.String())
	contains(t, body, `id="saga-status">COMPLETED<`, "<td>retry</td><td>otto</td>", "ledger is back")
	require.NotContains(t, body, `id="retry-form"`, "a COMPLETED saga offers no retry")
}

// Every way in without the right credential or form is refused, and none changes the saga.
func TestConsoleRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.failedSaga()
	path := "/sagas/" + id.String()

	anon := e.client()
	resp, err := anon.Get(e.base + path)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, "a page without a session goes to the login")
	require.Equal(t, "/login?next="+url.QueryEscape(path), resp.Header.Get("Location"))
	code, _ := e.get(anon, path+"/events")
	require.Equal(t, http.StatusUnauthorized, code, "events without a session")
	resp, _ = e.post(anon, path+"/retry", url.Values{"reason": {"x"}, "confirm": {"yes"}})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "a POST without a session")

	_, loginPage := e.get(anon, "/login")
	resp, body := e.post(anon, "/login", url.Values{"csrf": {e.csrf(loginPage)}, "token": {"not-a-token"}})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "a bad token")
	contains(t, body, `id="login-error"`)
	resp, _ = e.post(anon, "/login", url.Values{"csrf": {"forged"}, "token": {operatorToken}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a login without its form's CSRF token")
	code, _ = e.get(anon, path)
	require.Equal(t, http.StatusSeeOther, code, "a refused login starts no session")

	reader := e.login(e.client(), readerToken)
	code, body = e.get(reader, path)
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, body, `id="retry-form"`, "a reader sees no retry")
	resp, _ = e.post(reader, path+"/retry", url.Values{"csrf": {e.csrf(body)}, "reason": {"x"}, "confirm": {"yes"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a reader's retry")

	op := e.login(e.client(), operatorToken)
	_, body = e.get(op, path)
	token := e.csrf(body)
	form := url.Values{"reason": {"x"}, "confirm": {"yes"}}
	resp, _ = e.post(op, path+"/retry", form)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "no CSRF token")
	form.Set("csrf", e.csrf(loginPage))
	resp, _ = e.post(op, path+"/retry", form)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "another form's CSRF token")
	form.Set("csrf", token)
	form.Set("reason", strings.Repeat("x", 64<<10))
	resp, _ = e.post(op, path+"/retry", form)
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "an oversized body")
	form.Set("reason", "")
	resp, _ = e.post(op, path+"/retry", form)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "no reason")

	sg, err := e.coord.Engine().GetSaga(e.ctx, id)
	require.NoError(t, err)
	require.Equal(t, saga.StatusFailed, sg.State.Status, "a refused request changed the saga")
	require.Empty(t, sg.State.Audit)
}

// A verified client certificate listed in the credentials file is the caller, without a login;
// logging out ends a token's session.
func TestClientCertificateAndLogout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	certFile, keyFile := e.ca.Issue(t, authtest.Leaf{CommonName: "cert-operator", Client: true})
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	code, body := e.get(e.client(cert), "/sagas")
	require.Equal(t, http.StatusOK, code)
	contains(t, body, `<span class="user">cert-operator</span>`)

	c := e.login(e.client(), readerToken)
	code, body = e.get(c, "/sagas")
	require.Equal(t, http.StatusOK, code)
	resp, _ := e.post(c, "/logout", url.Values{"csrf": {e.csrf(body)}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	code, _ = e.get(c, "/sagas")
	require.Equal(t, http.StatusSeeOther, code, "the session outlived its logout")
}

// The list pages with a cursor after the last row: the pages do not overlap and together hold
// every saga, newest first.
func TestSagaListPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var started []string
	for range 5 {
		sg, _, err := e.coord.Engine().StartSaga(e.ctx, engine.StartRequest{Definition: "transfer", Input: json.RawMessage(`{}`)})
		require.NoError(t, err)
		started = append([]string{sg.ID.String()}, started...)
	}
	c := e.login(e.client(), readerToken)
	row := regexp.MustCompile(`<a href="/sagas/([0-9a-f-]{36})">`)
	next := regexp.MustCompile(`<a href="([^"]+)" id="next">`)
	var seen []string
	path := "/sagas?definition=transfer&n=2"
	for pages := 0; path != ""; pages++ {
		require.Less(t, pages, 4, "more pages than sagas")
		code, body := e.get(c, path)
		require.Equal(t, http.StatusOK, code)
		for _, m := range row.FindAllStringSubmatch(body, -1) {
			seen = append(seen, m[1])
		}
		path = ""
		if m := next.FindStringSubmatch(body); m != nil {
			path = html.UnescapeString(m[1])
		}
	}
	require.Equal(t, started, seen)
}

// The saga's event stream sends the saga at once and again when a retry changes it.
func TestSagaEventsFollowARetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.failedSaga()
	c := e.login(e.client(), readerToken)
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/sagas/"+id.String()+"/events", nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	events := bufio.NewScanner(resp.Body)
	nextStatus := func() string {
		for events.Scan() {
			if data, ok := strings.CutPrefix(events.Text(), "data: "); ok {
				var ev struct{ Status string }
				require.NoError(t, json.Unmarshal([]byte(data), &ev))
				return ev.Status
			}
		}
		t.Fatalf("the event stream ended: %v", events.Err())
		return ""
	}
	require.Equal(t, "FAILED", nextStatus())
	e.broken.Store(false)
	_, err = e.coord.Engine().RetrySaga(e.ctx, id, "test")
	require.NoError(t, err)
	for st := nextStatus(); st != "COMPLETED"; st = nextStatus() {
		require.Contains(t, []string{"RUNNING", "FAILED"}, st)
	}
}
