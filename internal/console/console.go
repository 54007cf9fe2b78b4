// Package console is the coordinator's operator web console: server-rendered HTML pages
// (html/template) with embedded CSS and a small hand-written script, served on
// --console-listen (docs/console.md, docs/decisions.md decision 37). It calls the engine
// directly, behind the same identities and roles as the gRPC API (internal/auth).
//
//	console.go   Config, New: the routes and the middleware every request passes
//	session.go   sessions in memory: cookie, expiry, CSRF token
//	identity.go  who calls: a session's token, a client certificate, or anonymous
//	login.go     the login and logout pages
//	sagas.go     /sagas and /sagas/{id}, and the operators' abort and retry
//	filters.go   the list's filters
//	attention.go /attention: FAILED sagas and transactions in doubt, oldest first
//	transactions.go /transactions and /transactions/{id}
//	participants.go /participants and /participants/{name}; rabbit.go reads their queues
//	definitions.go /definitions and /definitions/{name}; dag.go lays out a version's steps
//	view.go      what the saga page shows: steps, timeline, formatted JSON
//	events.go    server-sent events of a saga and of the counts
//	render.go    the templates and the embedded files
package console

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/server"
)

// Bounds of what a request may ask.
const (
	// maxBodyBytes bounds a POST's body: a form with a token or a reason.
	maxBodyBytes = 16 << 10
	// maxReasonBytes bounds the reason of an abort or a retry, stored in the audit trail.
	maxReasonBytes = 1024
	// pageSize and maxPageSize: rows of a list page by default and at most.
	pageSize, maxPageSize = 50, 200
)

// Config is the console's configuration.
type Config struct {
	// Engine serves the data and the operators' actions. Required.
	Engine *engine.Engine
	// Credentials, when set, authenticate every page: a login with a bearer token, or a
	// verified client certificate. Nil: every caller is "anonymous" with every role, as the API
	// treats callers without a credentials file.
	Credentials *auth.CredentialsFile
	// Secure marks the session cookie Secure: set when the console is served over TLS.
	Secure bool
	// TraceURL links a saga's trace id: "{trace_id}" in it is replaced, e.g.
	// http://jaeger:16686/trace/{trace_id}. Empty: the trace id is shown without a link.
	TraceURL string
	// RabbitAPI, when set, is the URL of RabbitMQ's management API with its credentials
	// (http://user:password@host:15672), from which /participants reads the participants'
	// queues in VHost ("/" when empty). The password is never shown. Empty: the page says the
	// queues' figures are not available.
	RabbitAPI, VHost string
	// Limiter, when set, bounds each caller's requests with the API's budget.
	Limiter *server.Limiter
	// SessionTTL is how long a session lasts after login. Default 8h.
	SessionTTL time.Duration
	// Logger receives refusals and operators' actions. Default: discard.
	Logger *slog.Logger
}

// Console is the console's HTTP handler.
type Console struct {
	cfg      Config
	sessions *sessions
	mux      *http.ServeMux
	log      *slog.Logger
	// rabbit reads the queues; rabbitErr says why the configured URL cannot be used.
	rabbit    *rabbitAPI
	rabbitErr error
}

// New returns the console.
func New(cfg Config) *Console {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{cfg: cfg, sessions: newSessions(cfg.SessionTTL), mux: http.NewServeMux(), log: cfg.Logger}
	c.rabbit, c.rabbitErr = newRabbitAPI(cfg.RabbitAPI, cfg.VHost)
	c.routes()
	return c
}

func (c *Console) routes() {
	c.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(staticFS)))
	c.mux.HandleFunc("GET /login", c.loginPage)
	c.mux.HandleFunc("POST /login", c.login)
	c.mux.HandleFunc("POST /logout", c.logout)
	c.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/sagas", http.StatusSeeOther)
	})
	c.mux.Handle("GET /sagas", c.page(auth.RoleReader, c.sagaList))
	c.mux.Handle("GET /sagas/{id}", c.page(auth.RoleReader, c.sagaPage))
	c.mux.Handle("GET /attention", c.page(auth.RoleReader, c.attention))
	c.mux.Handle("GET /definitions", c.page(auth.RoleReader, c.definitionList))
	c.mux.Handle("GET /definitions/{name}", c.page(auth.RoleReader, c.definitionPage))
	c.mux.Handle("GET /participants", c.page(auth.RoleReader, c.participantsList))
	c.mux.Handle("GET /participants/{name}", c.page(auth.RoleReader, c.participantPage))
	c.mux.Handle("GET /transactions", c.page(auth.RoleReader, c.txList))
	c.mux.Handle("GET /transactions/{id}", c.page(auth.RoleReader, c.txPage))
	c.mux.Handle("GET /sagas/{id}/events", c.stream(c.sagaEvents))
	c.mux.Handle("GET /transactions/{id}/events", c.stream(c.txEvents))
	c.mux.Handle("GET /events/counts", c.stream(c.countEvents))
	c.mux.Handle("POST /sagas/{id}/retry", c.action(c.retry))
	c.mux.Handle("POST /sagas/{id}/abort", c.action(c.abort))
}

// ServeHTTP bounds every request's body, and sets the headers every response carries.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	c.mux.ServeHTTP(w, r)
}
