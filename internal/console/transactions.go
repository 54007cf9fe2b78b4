package console

import (
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/twopc"
)

// txStates are the transaction states the list filters by.
var txStates = []twopc.State{twopc.StatePreparing, twopc.StateCommitting, twopc.StateAborting, twopc.StateCommitted, twopc.StateAborted}

// txListView is what /transactions shows.
type txListView struct {
	State  string
	States []twopc.State
	Rows   []txRow
	Next   string
	Error  string
}

type txRow struct {
	ID, State                  string
	Participants               int
	Created, Updated, Finished time.Time
}

func newTxRow(tx *store.Tx) txRow {
	return txRow{ID: tx.ID.String(), State: string(tx.Tx.State), Participants: len(tx.Tx.Participants),
		Created: tx.CreatedAt, Updated: tx.UpdatedAt, Finished: tx.FinishedAt}
}

// txList serves /transactions: newest first, by state, a page at a time after the last row.
func (c *Console) txList(w http.ResponseWriter, r *http.Request, who caller) {
	q := r.URL.Query()
	if id := strings.TrimSpace(q.Get("id")); id != "" {
		http.Redirect(w, r, "/transactions/"+id, http.StatusSeeOther)
		return
	}
	v := txListView{State: q.Get("state"), States: txStates}
	f := store.TxFilter{State: twopc.State(v.State)}
	known := v.State == ""
	for _, s := range txStates {
		known = known || s == f.State
	}
	if !known {
		c.render(w, http.StatusBadRequest, "transactions", c.pageFor(who, "Transactions", txListView{States: txStates, Error: "unknown state " + v.State}))
		return
	}
	k, ok := pageQuery(q)
	if !ok {
		c.render(w, http.StatusBadRequest, "transactions", c.pageFor(who, "Transactions", txListView{States: txStates, Error: "the page cursor does not parse"}))
		return
	}
	f.Limit, f.AfterCreatedAt, f.AfterID = k.Size+1, k.AfterAt, k.AfterID
	txs, err := c.cfg.Engine.Store().ListTx(r.Context(), f)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	txs, v.Next = nextPage(k, txs, "/transactions", q, func(tx *store.Tx) (time.Time, uuid.UUID) { return tx.CreatedAt, tx.ID })
	for _, tx := range txs {
		v.Rows = append(v.Rows, newTxRow(tx))
	}
	c.render(w, http.StatusOK, "transactions", c.pageFor(who, "Transactions", v))
}

// txView is what /transactions/{id} shows.
type txView struct {
	txRow
	Reason                   string
	PrepareDeadline, Decided time.Time
	Decision                 string
	Participants             []txParticipant
	History                  []twopc.Transition
}

type txParticipant struct {
	Name, Vote, LastError, Payload string
	Acked                          bool
	Sends                          int
	// Blocked says how long it held what it prepared (twopc.Participant.Blocked).
	Blocked string
}

// blockedText is what the page shows of how long p has held what it prepared.
func blockedText(p twopc.Participant, now time.Time) string {
	d := p.Blocked(now)
	switch {
	case d == 0:
		return "—"
	case p.Acked:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String() + " so far"
}

// VoteText and AckedText are what the page (and its events) show of a vote and an
// acknowledgement.
func (p txParticipant) VoteText() string {
	if p.Vote == "" {
		return "none yet"
	}
	return p.Vote
}

func (p txParticipant) AckedText() string {
	if p.Acked {
		return "yes"
	}
	return "no"
}

// decision is the transaction's decision, "" while it has none.
func decision(tx *store.Tx) string {
	switch tx.Tx.State {
	case twopc.StateCommitting, twopc.StateCommitted:
		return "COMMIT"
	case twopc.StateAborting, twopc.StateAborted:
		return "ABORT"
	}
	return ""
}

// txPage serves /transactions/{id}: participants with their votes and acknowledgements, the
// decision and its time, the history of states.
func (c *Console) txPage(w http.ResponseWriter, r *http.Request, who caller) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		http.Error(w, "not a transaction id: "+r.PathValue("id"), http.StatusBadRequest)
		return
	}
	tx, err := c.cfg.Engine.GetTransaction(r.Context(), id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	t := tx.Tx
	v := txView{txRow: newTxRow(tx), Reason: t.Reason, PrepareDeadline: t.PrepareDeadline, Decided: t.DecidedAt, History: t.History}
	v.Decision = decision(tx)
	for _, p := range t.Participants {
		v.Participants = append(v.Participants, txParticipant{Name: p.Name, Vote: string(p.Vote), LastError: p.LastError,
			Payload: prettyJSON(p.Payload), Acked: p.Acked, Sends: p.Sends, Blocked: blockedText(p, time.Now())})
	}
	c.render(w, http.StatusOK, "transaction", c.pageFor(who, "Transaction "+v.ID, v))
}
