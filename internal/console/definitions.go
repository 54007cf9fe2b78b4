package console

import (
	"net/http"
	"time"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// maxVersions bounds the versions /definitions/{name} shows, newest first.
const maxVersions = 20

type defRow struct {
	Name, RegisteredBy string
	Version, Steps     int
	Registered         time.Time
}

// definitionList serves /definitions: the latest version of each definition, by name.
func (c *Console) definitionList(w http.ResponseWriter, r *http.Request, who caller) {
	defs, err := c.cfg.Engine.Store().ListDefinitions(r.Context(), store.DefinitionFilter{AfterName: r.URL.Query().Get("after"), Limit: maxPageSize + 1})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var v struct {
		Rows []defRow
		Next string
	}
	if len(defs) > maxPageSize {
		defs = defs[:maxPageSize]
		v.Next = "/definitions?after=" + defs[len(defs)-1].Name
	}
	for _, d := range defs {
		v.Rows = append(v.Rows, defRow{Name: d.Name, Version: d.Version, Steps: len(d.Steps), RegisteredBy: d.RegisteredBy, Registered: d.CreatedAt})
	}
	c.render(w, http.StatusOK, "definitions", c.pageFor(who, "Definitions", v))
}

// versionView is one version of a definition: its steps, their graph, and the unfinished sagas
// that run on it.
type versionView struct {
	defRow
	Deadline     time.Duration
	StepDefs     []saga.StepDefinition
	Graph        dag
	Running      int
	Compensating int
	Failed       int
	// Changes lists what this version changes from the one before it (definitionDiff); nil for
	// version 1 and the oldest version shown.
	Changes []string
	// Previous is the version before it when that one is shown too (0: none), which Changes
	// compares with.
	Previous int
	def      saga.Definition
}

// definitionPage serves /definitions/{name}: its versions, newest first.
func (c *Console) definitionPage(w http.ResponseWriter, r *http.Request, who caller) {
	name := r.PathValue("name")
	latest, err := c.cfg.Engine.Store().GetDefinition(r.Context(), name, 0)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	counts, err := c.cfg.Engine.Store().CountUnfinished(r.Context(), name)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var v struct {
		Name     string
		Versions []versionView
		Older    bool
	}
	v.Name = name
	for n := latest.Version; n >= 1 && n > latest.Version-maxVersions; n-- {
		d := latest
		if n != latest.Version {
			if d, err = c.cfg.Engine.Store().GetDefinition(r.Context(), name, n); err != nil {
				c.fail(w, r, err)
				return
			}
		}
		cn := counts[n]
		v.Versions = append(v.Versions, versionView{
			defRow:   defRow{Name: d.Name, Version: d.Version, Steps: len(d.Steps), RegisteredBy: d.RegisteredBy, Registered: d.CreatedAt},
			Deadline: d.Deadline, StepDefs: d.Steps, Graph: layoutDAG(d),
			Running: cn[saga.StatusRunning], Compensating: cn[saga.StatusCompensating], Failed: cn[saga.StatusFailed],
			def: d,
		})
	}
	for i := 0; i+1 < len(v.Versions); i++ {
		v.Versions[i].Changes = definitionDiff(&v.Versions[i+1].def, &v.Versions[i].def)
		v.Versions[i].Previous = v.Versions[i+1].Version
	}
	v.Older = latest.Version > maxVersions
	c.render(w, http.StatusOK, "definition", c.pageFor(who, "Definition "+name, v))
}
