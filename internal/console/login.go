package console

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
)

// loginView is what the login page shows.
type loginView struct {
	Next, CSRF, Error string
}

// loginPage shows the form that takes a bearer token. Its CSRF token is a cookie of its own
// (there is no session yet) that the form repeats, so another site cannot log a browser in.
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Credentials == nil {
		http.Redirect(w, r, "/sagas", http.StatusSeeOther)
		return
	}
	c.showLogin(w, r, http.StatusOK, "")
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, code int, msg string) {
	token := randomID()
	c.setCookie(w, loginCookie, token, 600)
	c.render(w, code, "login", page{Title: "Log in", Body: loginView{Next: localPath(r.FormValue("next")), CSRF: token, Error: msg}})
}

// login checks the token against the credentials file and starts a session.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Credentials == nil {
		http.Redirect(w, r, "/sagas", http.StatusSeeOther)
		return
	}
	if err := r.ParseForm(); err != nil {
		if maxErr := (*http.MaxBytesError)(nil); errors.As(err, &maxErr) {
			http.Error(w, "the form is larger than the console accepts", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "the form does not parse", http.StatusBadRequest)
		return
	}
	if !c.allow(w, hostKey(r)) {
		return
	}
	ck, err := r.Cookie(loginCookie)
	form := r.PostFormValue("csrf")
	if err != nil || form == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(form)) != 1 {
		c.refuse(w, r, caller{}, http.StatusForbidden, "the login form's CSRF token is missing or wrong: open the login page again")
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	id, ok := c.cfg.Credentials.Current().Token(token)
	if token == "" || !ok {
		c.log.Info("console login refused", "peer", r.RemoteAddr)
		c.showLogin(w, r, http.StatusUnauthorized, "That token is not in the coordinator's credentials file.")
		return
	}
	ss := c.sessions.start(token, "")
	c.setCookie(w, sessionCookie, ss.id, 0)
	c.setCookie(w, loginCookie, "", -1)
	c.log.Info("console login", "enduser_id", id.Name, "peer", r.RemoteAddr)
	http.Redirect(w, r, localPath(r.PostFormValue("next")), http.StatusSeeOther)
}

// logout ends the session; it needs the session's CSRF token, like every other POST.
func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	ss, ok := c.sessions.get(r)
	if ok && validCSRF(ss, r) {
		c.sessions.end(ss.id)
	} else if ok {
		http.Error(w, "the form's CSRF token is missing or not this session's", http.StatusForbidden)
		return
	}
	c.setCookie(w, sessionCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// localPath returns p when it is a path of this site, else /sagas: a login never redirects
// elsewhere.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") {
		return "/sagas"
	}
	return p
}
