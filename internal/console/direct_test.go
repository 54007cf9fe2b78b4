package console_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/auth/authtest"
	"github.com/sagacoord/sagacoord/internal/console"
	"github.com/sagacoord/sagacoord/internal/server"
)

// serveConsole serves a console of e's engine with cfg on an httptest server (plain HTTP) and
// points e's helpers at it.
func (e *env) serveConsole(cfg console.Config) {
	cfg.Engine = e.coord.Engine()
	srv := httptest.NewServer(console.New(cfg))
	e.t.Cleanup(srv.Close)
	e.base = srv.URL
}

// Without a credentials file the console treats every caller as the API does: anonymous, with
// every role. A browser needs no login, gets a session for its CSRF token, and its retry is
// recorded as anonymous's.
func TestWithoutCredentialsEveryCallerIsAnonymous(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.failedSaga()
	e.serveConsole(console.Config{})
	c := e.client()
	code, body := e.get(c, "/sagas/"+id.String())
	require.Equal(t, http.StatusOK, code)
	contains(t, body, `<span class="user">anonymous</span>`, `id="retry-form"`)
	require.NotContains(t, body, `action="/logout"`, "nothing to log out of")
	e.broken.Store(false)
	resp, _ := e.post(c, "/sagas/"+id.String()+"/retry", url.Values{"csrf": {e.csrf(body)}, "reason": {"no auth here"}, "confirm": {"yes"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	sg, err := e.coord.Engine().GetSaga(e.ctx, id)
	require.NoError(t, err)
	require.Len(t, sg.State.Audit, 1)
	require.Equal(t, "anonymous", sg.State.Audit[0].By)
	require.Equal(t, "no auth here", sg.State.Audit[0].Reason)
	resp, _ = e.post(e.client(), "/sagas/"+id.String()+"/abort", url.Values{"reason": {"x"}, "confirm": {"yes"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "anonymous still needs its session's CSRF token")
}

// The console spends the API's per-caller budget: beyond the burst a caller gets 429 with a
// Retry-After, and another caller does not.
func TestRequestsShareTheAPIRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	creds, err := auth.LoadCredentialsFile(authtest.WriteFile(t, "credentials.yaml", authtest.CredentialsYAML([]authtest.Token{
		{Name: "rita", Secret: readerToken, Roles: []string{"reader"}}, {Name: "otto", Secret: operatorToken, Roles: []string{"operator"}},
	}, nil)), nil)
	require.NoError(t, err)
	e.serveConsole(console.Config{Credentials: creds, Limiter: server.NewLimiter(server.Limits{Rate: 0.001, Burst: 5})})
	rita := e.login(e.client(), readerToken) // the login spends the host's budget, not rita's
	for range 5 {
		code, _ := e.get(rita, "/sagas")
		require.Equal(t, http.StatusOK, code)
	}
	resp, err := rita.Get(e.base + "/sagas")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	otto := e.login(e.client(), operatorToken)
	code, _ := e.get(otto, "/sagas")
	require.Equal(t, http.StatusOK, code, "another caller's budget is its own")
}

// A session ends at its expiry: the next page goes to the login again.
func TestSessionsExpire(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	creds, err := auth.LoadCredentialsFile(authtest.WriteFile(t, "credentials.yaml", authtest.CredentialsYAML([]authtest.Token{
		{Name: "rita", Secret: readerToken, Roles: []string{"reader"}},
	}, nil)), nil)
	require.NoError(t, err)
	e.serveConsole(console.Config{Credentials: creds, SessionTTL: 300 * time.Millisecond})
	c := e.login(e.client(), readerToken)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := e.get(c, "/sagas")
		if code == http.StatusSeeOther {
			break
		}
		require.Equal(t, http.StatusOK, code)
		require.True(t, time.Now().Before(deadline), "the session did not expire in 10s")
		time.Sleep(50 * time.Millisecond)
	}
}
