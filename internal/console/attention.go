package console

import (
	"net/http"
	"slices"
	"time"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// attentionView is what /attention shows: what waits for a person, oldest first.
type attentionView struct {
	Sagas []listRow
	// MoreSagas is set when there are more FAILED sagas than the page shows.
	MoreSagas bool
	Txs       []txRow
	MoreTxs   bool
}

// attention serves /attention: the FAILED sagas, which wait for an operator's retry, and the
// two-phase-commit transactions in doubt (PREPARING, COMMITTING, ABORTING), oldest first.
func (c *Console) attention(w http.ResponseWriter, r *http.Request, who caller) {
	var v attentionView
	sagas, err := c.cfg.Engine.Store().ListSagas(r.Context(), store.ListFilter{Status: saga.StatusFailed, OldestFirst: true, Limit: maxPageSize + 1})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if v.MoreSagas = len(sagas) > maxPageSize; v.MoreSagas {
		sagas = sagas[:maxPageSize]
	}
	for _, sg := range sagas {
		v.Sagas = append(v.Sagas, listRow{ID: sg.ID.String(), Definition: sg.DefinitionName, Version: sg.DefinitionVersion,
			Status: string(sg.State.Status), Created: sg.CreatedAt, Updated: sg.UpdatedAt})
	}
	// The transactions' list has no oldest-first order: each state's newest maxPageSize, sorted
	// here. In doubt is rare and short, so a page holds them all in practice.
	for _, st := range []twopc.State{twopc.StatePreparing, twopc.StateCommitting, twopc.StateAborting} {
		txs, err := c.cfg.Engine.Store().ListTx(r.Context(), store.TxFilter{State: st, Limit: maxPageSize + 1})
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if len(txs) > maxPageSize {
			v.MoreTxs, txs = true, txs[:maxPageSize]
		}
		for _, tx := range txs {
			v.Txs = append(v.Txs, newTxRow(tx))
		}
	}
	slices.SortFunc(v.Txs, func(a, b txRow) int { return a.Created.Compare(b.Created) })
	c.render(w, http.StatusOK, "attention", c.pageFor(who, "Needs attention", v))
}

// age is how long ago t was, for the attention page.
func age(t time.Time) string {
	return time.Since(t).Round(time.Second).String()
}
