package console

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sagacoord/sagacoord/internal/auth"
)

// anonymous is the caller of a console without a credentials file: every role, as the API
// allows every call without one. Its context carries no identity, so the audit trail says
// "anonymous" (auth.Caller).
var anonymous = auth.Identity{Name: "anonymous", Roles: []auth.Role{auth.RoleOperator}}

// caller is who makes a request, and the session it belongs to.
type caller struct {
	id auth.Identity
	ss *session
}

// identify returns the caller of r: the session's token (checked again against the credentials
// file, so a revoked token ends the session), else a verified client certificate (which gets a
// session of its own, for its CSRF token). Without a credentials file every caller is
// anonymous. It reports false when r has no valid credential.
func (c *Console) identify(w http.ResponseWriter, r *http.Request) (caller, bool) {
	ss, hasSession := c.sessions.get(r)
	if c.cfg.Credentials == nil {
		if !hasSession {
			ss = c.sessions.start("", "")
			c.setCookie(w, sessionCookie, ss.id, 0)
		}
		return caller{id: anonymous, ss: ss}, true
	}
	creds := c.cfg.Credentials.Current()
	cert, hasCert := certificateName(r)
	if hasSession && ss.token != "" {
		if id, ok := creds.Token(ss.token); ok {
			return caller{id: id, ss: ss}, true
		}
		c.sessions.end(ss.id)
		return caller{}, false
	}
	if !hasCert {
		return caller{}, false
	}
	if !hasSession || ss.certificate != cert {
		ss = c.sessions.start("", cert)
		c.setCookie(w, sessionCookie, ss.id, 0)
	}
	return caller{id: creds.Certificate(cert), ss: ss}, true
}

// certificateName returns the subject common name of the request's verified client certificate.
func certificateName(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", false
	}
	name := r.TLS.VerifiedChains[0][0].Subject.CommonName
	return name, name != ""
}

// withIdentity puts the caller in the request's context for the engine (auth.Caller), when the
// console authenticates.
func (c *Console) withIdentity(r *http.Request, who caller) *http.Request {
	if c.cfg.Credentials == nil {
		return r
	}
	return r.WithContext(auth.WithIdentity(r.Context(), who.id))
}

// allow spends one request of who's budget, the API's (server.Limiter), or answers 429.
func (c *Console) allow(w http.ResponseWriter, key string) bool {
	if c.cfg.Limiter == nil {
		return true
	}
	wait, ok := c.cfg.Limiter.Take(key)
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		http.Error(w, "too many requests from this caller; retry later", http.StatusTooManyRequests)
	}
	return ok
}

// limitKey names a caller as the API's limiter does: its identity, else its host.
func limitKey(r *http.Request, who caller) string {
	if who.id.Name != "" && who.id.Name != anonymous.Name {
		return "identity:" + who.id.Name
	}
	return hostKey(r)
}

func hostKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "host:" + host
}

// handler is a console handler, given the authenticated caller.
type handler func(w http.ResponseWriter, r *http.Request, who caller)

// page serves a page to callers with role: others are sent to the login page, or refused.
func (c *Console) page(role auth.Role, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, ok := c.identify(w, r)
		if !ok {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if !c.allow(w, limitKey(r, who)) {
			return
		}
		if !who.id.Allows(role) {
			c.refuse(w, r, who, http.StatusForbidden, "this page needs role "+string(role))
			return
		}
		h(w, c.withIdentity(r, who), who)
	})
}

// stream serves an event stream to readers; without credentials it answers 401, since an
// EventSource cannot follow a login.
func (c *Console) stream(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, ok := c.identify(w, r)
		if !ok {
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		if !c.allow(w, limitKey(r, who)) {
			return
		}
		if !who.id.Allows(auth.RoleReader) {
			c.refuse(w, r, who, http.StatusForbidden, "the events need role reader")
			return
		}
		h(w, c.withIdentity(r, who), who)
	})
}

// action serves an operator's POST: its form must fit maxBodyBytes and carry the session's CSRF
// token, and its caller must be an operator.
func (c *Console) action(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			if maxErr := (*http.MaxBytesError)(nil); errors.As(err, &maxErr) {
				http.Error(w, "the form is larger than the console accepts", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "the form does not parse", http.StatusBadRequest)
			return
		}
		who, ok := c.identify(w, r)
		if !ok {
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		if !c.allow(w, limitKey(r, who)) {
			return
		}
		if !validCSRF(who.ss, r) {
			c.refuse(w, r, who, http.StatusForbidden, "the form's CSRF token is missing or not this session's: reload the page and try again")
			return
		}
		if !who.id.Allows(auth.RoleOperator) {
			c.refuse(w, r, who, http.StatusForbidden, "abort and retry need role operator")
			return
		}
		h(w, c.withIdentity(r, who), who)
	})
}

// refuse logs and answers a refused request.
func (c *Console) refuse(w http.ResponseWriter, r *http.Request, who caller, code int, msg string) {
	c.log.Info("console request refused", "path", r.URL.Path, "method", r.Method, "code", code, "enduser_id", who.id.Name, "peer", r.RemoteAddr, "err", msg)
	http.Error(w, msg, code)
}
