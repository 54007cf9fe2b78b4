package console

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// web holds the templates and the static files: the binary carries everything the browser
// loads.
//
//go:embed web
var web embed.FS

// staticFS is what /static/ serves: the stylesheet and the script.
var staticFS = mustSub(web, "web/static")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

// page is what the layout shows around a page's body.
type page struct {
	Title string
	// User names the caller; Auth is true when the console authenticates (a logout button).
	User string
	Auth bool
	// Operator shows the operators' actions; CSRF goes into every form.
	Operator bool
	CSRF     string
	Body     any
}

var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05.000Z")
	},
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return d.Round(time.Millisecond).String()
	},
	"lower": strings.ToLower,
	"age":   age,
	"rate":  func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) + "/s" },
}

// templates are the pages, each parsed with the layout.
var templates = func() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "sagas", "saga", "attention", "transactions", "transaction", "definitions", "definition", "participants", "participant"} {
		files := []string{"web/layout.html", "web/" + name + ".html"}
		if name == "participants" || name == "participant" {
			files = append(files, "web/figures.html")
		}
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(web, files...))
	}
	return out
}()

// render writes a page; the template runs into a buffer first, so that an error shows as a 500
// rather than half a page.
func (c *Console) render(w http.ResponseWriter, code int, name string, p page) {
	var buf bytes.Buffer
	if err := templates[name].Execute(&buf, p); err != nil {
		c.log.Error("console template", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = buf.WriteTo(w)
}

// pageFor fills the layout's fields for the caller.
func (c *Console) pageFor(who caller, title string, body any) page {
	p := page{Title: title, User: who.id.Name, Auth: c.cfg.Credentials != nil, Body: body}
	p.Operator = who.id.Allows("operator")
	if who.ss != nil {
		p.CSRF = who.ss.csrf
	}
	return p
}
