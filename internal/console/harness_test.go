package console_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/auth/authtest"
	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// The tokens of the test's credentials file.
const (
	readerToken   = "reader-secret-token"
	operatorToken = "operator-secret-token"
)

// env is a coordinator serving the console over TLS with a credentials file, on the test's own
// schema and vhost, and a participant "bank" whose step "debit" fails while broken is set.
type env struct {
	t      *testing.T
	ctx    context.Context
	coord  *coordinator.Coordinator
	base   string // https://127.0.0.1:PORT
	ca     *authtest.CA
	broken atomic.Bool
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, ca: authtest.NewCA(t, "console test CA")}
	e.broken.Store(true)
	dbURL, amqpURL := testenv.Schema(t), testenv.VHost(t)
	cert, key := e.ca.Issue(t, authtest.Leaf{CommonName: "coordinator"})
	creds := authtest.WriteFile(t, "credentials.yaml", authtest.CredentialsYAML([]authtest.Token{
		{Name: "rita", Secret: readerToken, Roles: []string{"reader"}},
		{Name: "otto", Secret: operatorToken, Roles: []string{"operator"}},
	}, []authtest.Cert{{CommonName: "cert-operator", Roles: []string{"operator"}}}))
	c, err := coordinator.Start(ctx, coordinator.Config{
		DatabaseURL: dbURL, AMQPURL: amqpURL, ListenAddr: "127.0.0.1:0", ConsoleAddr: "127.0.0.1:0", Migrate: true,
		DBMaxConns: 4, Name: testenv.Name("coord-"), TLSCertFile: cert, TLSKeyFile: key, TLSClientCAFile: e.ca.CertFile,
		CredentialsFile: creds, ConsoleTraceURL: "http://jaeger.example:16686/trace/{trace_id}", ConsoleRabbitAPI: rabbitAPI(),
		Logger: testLogger(t),
	})
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	e.coord, e.base = c, "https://"+c.ConsoleAddr()
	e.startParticipant(dbURL, amqpURL)
	_, _, err = c.Engine().RegisterDefinition(ctx, saga.Definition{Name: "transfer", Steps: []saga.StepDefinition{
		{Name: "reserve", Participant: "bank", Action: "reserve", Pivot: true},
		{Name: "debit", Participant: "bank", Action: "debit", DependsOn: []string{"reserve"},
			Retry: saga.RetryPolicy{MaxAttempts: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}},
	}})
	require.NoError(t, err)
	return e
}

// rabbitAPI is the test broker's management API, with its credentials.
func rabbitAPI() string {
	if u := os.Getenv("SAGACOORD_TEST_RABBIT_API"); u != "" {
		return u
	}
	return "http://guest:guest@127.0.0.1:15672"
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("SAGACOORD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// startParticipant runs the participant "bank": debit fails while e.broken is set.
func (e *env) startParticipant(dbURL, amqpURL string) {
	t := e.t
	tr, err := amqptransport.New(e.ctx, amqptransport.Config{URL: amqpURL, ConnectionName: testenv.Name("bank-")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	pool, err := coordinator.OpenPool(e.ctx, dbURL, 4)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	w, err := participant.New(participant.Config{Name: "bank", Transport: tr, DB: pool, Schema: testenv.Name("p_"), RetryBackoff: 50 * time.Millisecond, Logger: testLogger(t)})
	require.NoError(t, err)
	w.HandleDefault(func(ctx context.Context, _ pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction && cmd.Step == "debit" && e.broken.Load() {
			return nil, errors.New("ledger <b>unavailable</b>")
		}
		return json.RawMessage(`{"step":"` + cmd.Step + `","note":"<script>alert(1)</script>"}`), nil
	})
	require.NoError(t, w.Migrate(e.ctx))
	require.NoError(t, w.Start(e.ctx))
	t.Cleanup(w.Stop)
}

// failedSaga starts a transfer whose debit fails, and waits until the saga is FAILED.
func (e *env) failedSaga() uuid.UUID {
	sg, _, err := e.coord.Engine().StartSaga(e.ctx, engine.StartRequest{Definition: "transfer", Input: json.RawMessage(`{"amount":10,"memo":"<i>x</i>"}`)})
	require.NoError(e.t, err)
	e.waitStatus(sg.ID, saga.StatusFailed)
	return sg.ID
}

// waitStatus polls the saga until it has status, with a deadline.
func (e *env) waitStatus(id uuid.UUID, status saga.Status) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sg, err := e.coord.Engine().GetSaga(e.ctx, id)
		require.NoError(e.t, err)
		if sg.State.Status == status {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("saga %s is %s after 30s, want %s", id, sg.State.Status, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client is a browser without JavaScript: a cookie jar, the test CA, no redirects followed.
func (e *env) client(certs ...tls.Certificate) *http.Client {
	jar, err := cookiejar.New(nil)
	require.NoError(e.t, err)
	pem, err := os.ReadFile(e.ca.CertFile)
	require.NoError(e.t, err)
	roots := x509.NewCertPool()
	require.True(e.t, roots.AppendCertsFromPEM(pem))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Jar: jar, Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get returns the status and body of a GET.
func (e *env) get(c *http.Client, path string) (int, string) {
	e.t.Helper()
	resp, err := c.Get(e.base + path)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp.StatusCode, string(b)
}

// post submits a form and returns the response (its body read).
func (e *env) post(c *http.Client, path string, form url.Values) (*http.Response, string) {
	e.t.Helper()
	resp, err := c.PostForm(e.base+path, form)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the CSRF token of the page's first form.
func (e *env) csrf(body string) string {
	e.t.Helper()
	m := csrfField.FindStringSubmatch(body)
	require.NotNil(e.t, m, "the page has no CSRF field:\n%s", body)
	return m[1]
}

// login logs c in with token and returns it.
func (e *env) login(c *http.Client, token string) *http.Client {
	e.t.Helper()
	code, body := e.get(c, "/login")
	require.Equal(e.t, http.StatusOK, code)
	resp, _ := e.post(c, "/login", url.Values{"csrf": {e.csrf(body)}, "token": {token}, "next": {"/sagas"}})
	require.Equal(e.t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(e.t, "/sagas", resp.Header.Get("Location"))
	return c
}

// contains fails unless body has every string of want.
func contains(t *testing.T, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("page lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%.4000s", body)
	}
}
