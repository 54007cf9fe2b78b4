package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// statuses are the saga statuses the list filters by, in the order the page offers them.
var statuses = []saga.Status{saga.StatusRunning, saga.StatusCompensating, saga.StatusFailed, saga.StatusCompleted, saga.StatusCompensated}

// listView is what /sagas shows.
type listView struct {
	Status, Definition string
	// Version, From and Before are the filters as given: a version number, and times
	// (2006-01-02T15:04, UTC) from which and before which the sagas were created.
	Version, From, Before string
	Statuses              []saga.Status
	Counts                []count
	Rows                  []listRow
	// Next is the URL of the next page, empty on the last.
	Next  string
	Error string
}

type count struct {
	Status string
	N      int
}

type listRow struct {
	ID, Definition, Status     string
	Version                    int
	Created, Updated, Finished time.Time
}

// sagaList serves /sagas: newest first, by status, definition, version and creation time, a
// page at a time. The query
// keys the store's index (created_at DESC, id DESC, with status or definition first): the next
// page starts after the last row, never at an offset.
func (c *Console) sagaList(w http.ResponseWriter, r *http.Request, who caller) {
	q := r.URL.Query()
	if id := strings.TrimSpace(q.Get("id")); id != "" {
		http.Redirect(w, r, "/sagas/"+url.PathEscape(id), http.StatusSeeOther)
		return
	}
	v := listView{Status: q.Get("status"), Definition: strings.TrimSpace(q.Get("definition")), Statuses: statuses,
		Version: q.Get("version"), From: q.Get("from"), Before: q.Get("before")}
	f, err := listFilter(v)
	if err != nil {
		c.render(w, http.StatusBadRequest, "sagas", c.pageFor(who, "Sagas", listView{Statuses: statuses, Error: err.Error()}))
		return
	}
	k, ok := pageQuery(q)
	if !ok {
		c.render(w, http.StatusBadRequest, "sagas", c.pageFor(who, "Sagas", listView{Statuses: statuses, Error: "the page cursor does not parse"}))
		return
	}
	f.Limit, f.AfterCreatedAt, f.AfterID = k.Size+1, k.AfterAt, k.AfterID
	rows, err := c.cfg.Engine.Store().ListSagas(r.Context(), f)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	rows, v.Next = nextPage(k, rows, "/sagas", q, func(sg *store.Saga) (time.Time, uuid.UUID) { return sg.CreatedAt, sg.ID })
	for _, sg := range rows {
		v.Rows = append(v.Rows, listRow{ID: sg.ID.String(), Definition: sg.DefinitionName, Version: sg.DefinitionVersion,
			Status: string(sg.State.Status), Created: sg.CreatedAt, Updated: sg.UpdatedAt, Finished: sg.FinishedAt})
	}
	if v.Counts, err = c.counts(r); err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, http.StatusOK, "sagas", c.pageFor(who, "Sagas", v))
}

// counts are the unfinished sagas by status (store.Stats reads the status index).
func (c *Console) counts(r *http.Request) ([]count, error) {
	st, err := c.cfg.Engine.Store().Stats(r.Context())
	if err != nil {
		return nil, err
	}
	var out []count
	for _, s := range []saga.Status{saga.StatusRunning, saga.StatusCompensating, saga.StatusFailed} {
		out = append(out, count{Status: string(s), N: st.Sagas[s].Count})
	}
	return out, nil
}

// sagaPage serves /sagas/{id}.
func (c *Console) sagaPage(w http.ResponseWriter, r *http.Request, who caller) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		http.Error(w, "not a saga id: "+r.PathValue("id"), http.StatusBadRequest)
		return
	}
	sg, err := c.cfg.Engine.GetSaga(r.Context(), id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	def, err := c.cfg.Engine.Definition(r.Context(), sg.DefinitionName, sg.DefinitionVersion)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	v := newSagaView(sg, def, c.cfg.TraceURL, time.Now())
	c.render(w, http.StatusOK, "saga", c.pageFor(who, "Saga "+v.ID, v))
}

// retry serves an operator's retry of a FAILED saga.
func (c *Console) retry(w http.ResponseWriter, r *http.Request, who caller) {
	c.operate(w, r, who, c.cfg.Engine.RetrySaga)
}

// abort serves an operator's abort of a RUNNING saga.
func (c *Console) abort(w http.ResponseWriter, r *http.Request, who caller) {
	c.operate(w, r, who, c.cfg.Engine.AbortSaga)
}

// operate checks the form's confirmation and reason, applies op, which records the caller and
// the reason in the saga's audit trail, and shows the saga again.
func (c *Console) operate(w http.ResponseWriter, r *http.Request, _ caller, op func(ctx context.Context, id uuid.UUID, reason string) (*store.Saga, error)) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		http.Error(w, "not a saga id: "+r.PathValue("id"), http.StatusBadRequest)
		return
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	switch {
	case r.PostFormValue("confirm") != "yes":
		http.Error(w, "tick the confirmation box to confirm", http.StatusBadRequest)
		return
	case reason == "":
		http.Error(w, "give a reason: it goes into the saga's audit trail", http.StatusBadRequest)
		return
	case len(reason) > maxReasonBytes:
		http.Error(w, "the reason is longer than "+strconv.Itoa(maxReasonBytes)+" bytes", http.StatusBadRequest)
		return
	}
	if _, err := op(r.Context(), id, reason); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/sagas/"+id.String(), http.StatusSeeOther)
}

// fail answers an engine error: 404 for a missing saga, 409 for an action its state refuses,
// 500 (logged, not shown) otherwise.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, engine.ErrNotFound):
		http.Error(w, "not found", http.StatusNotFound)
	case errors.Is(err, engine.ErrFailedPrecondition):
		http.Error(w, err.Error(), http.StatusConflict)
	default:
		c.log.Error("console", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error; the coordinator's log has it", http.StatusInternalServerError)
	}
}
