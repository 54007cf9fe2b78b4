package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// Cookie names. The session cookie holds a random id only: what it stands for stays in memory.
const (
	sessionCookie = "sagacoord_session"
	loginCookie   = "sagacoord_login"
)

// maxSessions bounds the sessions in memory; beyond it the expired ones are dropped, then the
// oldest.
const maxSessions = 10_000

// session is one browser's login: the credential it authenticated with, checked again against
// the credentials file on every request (so revoking a token ends its sessions), and the CSRF
// token every state-changing request must carry.
type session struct {
	id, csrf string
	// token is the bearer token given at login; certificate the client certificate's common
	// name the session was made for. Both are empty without a credentials file.
	token, certificate string
	created, expires   time.Time
}

// sessions are the console's sessions, in this process's memory: a restart logs everyone out.
type sessions struct {
	ttl time.Duration
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*session
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, now: time.Now, m: map[string]*session{}}
}

// randomID returns 32 random bytes, base64url.
func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start makes a session.
func (s *sessions) start(token, certificate string) *session {
	now := s.now()
	ss := &session{id: randomID(), csrf: randomID(), token: token, certificate: certificate, created: now, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= maxSessions {
		s.evict(now)
	}
	s.m[ss.id] = ss
	return ss
}

// evict drops the expired sessions, and the oldest if none had expired. s.mu is held.
func (s *sessions) evict(now time.Time) {
	var oldest *session
	for id, ss := range s.m {
		if now.After(ss.expires) {
			delete(s.m, id)
		} else if oldest == nil || ss.created.Before(oldest.created) {
			oldest = ss
		}
	}
	if len(s.m) >= maxSessions && oldest != nil {
		delete(s.m, oldest.id)
	}
}

// get returns the request's session, unless it has none or it expired.
func (s *sessions) get(r *http.Request) (*session, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[ck.Value]
	if !ok {
		return nil, false
	}
	if s.now().After(ss.expires) {
		delete(s.m, ss.id)
		return nil, false
	}
	return ss, true
}

// end drops a session.
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// setCookie sends the session's cookie: HttpOnly, SameSite=Strict, Secure under TLS.
func (c *Console) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.cfg.Secure})
}

// validCSRF reports whether the form's csrf field is the session's token.
func validCSRF(ss *session, r *http.Request) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(ss.csrf)) == 1
}
