package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/store"
)

// How often the event streams read again what no watch told them: a saga changed by another
// instance whose notifications are off, and the counts (which no watch covers).
const (
	sagaPoll  = 2 * time.Second
	countPoll = 2 * time.Second
	// keepAlive is how often an idle stream sends a comment, so that proxies keep it open.
	keepAlive = 15 * time.Second
)

// sagaEvent is the data of a "saga" event: what the saga page updates in place.
type sagaEvent struct {
	Status  string      `json:"status"`
	Version int64       `json:"version"`
	Updated string      `json:"updated"`
	Steps   []stepEvent `json:"steps"`
}

type stepEvent struct {
	Status       string `json:"status"`
	Attempts     int    `json:"attempts"`
	CompAttempts int    `json:"comp_attempts"`
	LastError    string `json:"last_error"`
}

// txEvent is the data of a "tx" event: what the transaction page updates in place.
type txEvent struct {
	State        string        `json:"state"`
	Decision     string        `json:"decision"`
	Participants []txPartEvent `json:"participants"`
}

type txPartEvent struct {
	Vote      string `json:"vote"`
	Acked     string `json:"acked"`
	Sends     int    `json:"sends"`
	LastError string `json:"last_error"`
	Blocked   string `json:"blocked"`
}

func newTxEvent(tx *store.Tx) txEvent {
	ev := txEvent{State: string(tx.Tx.State), Decision: decision(tx)}
	for _, p := range tx.Tx.Participants {
		pv := txParticipant{Vote: string(p.Vote), Acked: p.Acked}
		ev.Participants = append(ev.Participants, txPartEvent{Vote: pv.VoteText(), Acked: pv.AckedText(), Sends: p.Sends,
			LastError: p.LastError, Blocked: blockedText(p, time.Now())})
	}
	return ev
}

func newSagaEvent(sg *store.Saga) sagaEvent {
	ev := sagaEvent{Status: string(sg.State.Status), Version: sg.Version, Updated: sg.UpdatedAt.UTC().Format("2006-01-02 15:04:05.000Z")}
	for _, s := range sg.State.Steps {
		ev.Steps = append(ev.Steps, stepEvent{Status: string(s.Status), Attempts: s.Attempt, CompAttempts: s.CompAttempt, LastError: s.LastError})
	}
	return ev
}

// eventStream is one open server-sent-events response.
type eventStream struct {
	w http.ResponseWriter
	f http.Flusher
}

// openStream starts an event stream, counted against the caller's watches like the API's.
func (c *Console) openStream(w http.ResponseWriter, r *http.Request, who caller) (*eventStream, func(), bool) {
	f, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return nil, nil, false
	}
	release := func() {}
	if c.cfg.Limiter != nil {
		var err error
		if release, err = c.cfg.Limiter.OpenWatch(limitKey(r, who)); err != nil {
			http.Error(w, err.Error(), http.StatusTooManyRequests)
			return nil, nil, false
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	return &eventStream{w: w, f: f}, release, true
}

// send writes one event with v as JSON.
func (s *eventStream) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	s.f.Flush()
	return nil
}

func (s *eventStream) ping() error {
	if _, err := fmt.Fprint(s.w, ": keep-alive\n\n"); err != nil {
		return err
	}
	s.f.Flush()
	return nil
}

// sagaEvents streams a saga: an event now, and one each time its version changes.
func (c *Console) sagaEvents(w http.ResponseWriter, r *http.Request, who caller) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		http.Error(w, "not a saga id", http.StatusBadRequest)
		return
	}
	watch, stop := c.cfg.Engine.WatchSaga(id)
	defer stop()
	follow(c, w, r, who, watch, "saga", func(ctx context.Context) (*store.Saga, error) { return c.cfg.Engine.GetSaga(ctx, id) },
		func(sg *store.Saga) (int64, any) { return sg.Version, newSagaEvent(sg) })
}

// txEvents streams a transaction: an event now, and one each time its version changes.
func (c *Console) txEvents(w http.ResponseWriter, r *http.Request, who caller) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		http.Error(w, "not a transaction id", http.StatusBadRequest)
		return
	}
	watch, stop := c.cfg.Engine.WatchTransaction(id)
	defer stop()
	follow(c, w, r, who, watch, "tx", func(ctx context.Context) (*store.Tx, error) { return c.cfg.Engine.GetTransaction(ctx, id) },
		func(tx *store.Tx) (int64, any) { return tx.Version, newTxEvent(tx) })
}

// follow streams a row: it sends view's event now and each time the row's version changes, told
// by the engine's watch (this instance's changes, and others' when the store notifies) or found
// by polling every sagaPoll.
func follow[T any](c *Console, w http.ResponseWriter, r *http.Request, who caller, watch *engine.Watch[T], event string,
	get func(context.Context) (T, error), view func(T) (int64, any)) {
	row, err := get(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	s, release, ok := c.openStream(w, r, who)
	if !ok {
		return
	}
	defer release()
	poll, alive := time.NewTicker(sagaPoll), time.NewTicker(keepAlive)
	defer poll.Stop()
	defer alive.Stop()
	last := int64(-1)
	for {
		if version, data := view(row); version != last {
			if s.send(event, data) != nil {
				return
			}
			last = version
		}
		fresh := false
		select {
		case <-r.Context().Done():
			return
		case <-alive.C:
			if s.ping() != nil {
				return
			}
			continue
		case <-watch.Changed():
			row, fresh = watch.Latest()
		case <-poll.C:
		}
		if !fresh {
			if row, err = get(r.Context()); err != nil {
				return
			}
		}
	}
}

// countEvents streams the counts of unfinished sagas by status, when they change.
func (c *Console) countEvents(w http.ResponseWriter, r *http.Request, who caller) {
	s, release, ok := c.openStream(w, r, who)
	if !ok {
		return
	}
	defer release()
	tick := time.NewTicker(countPoll)
	defer tick.Stop()
	last := ""
	for {
		counts, err := c.counts(r)
		if err != nil {
			return
		}
		m := map[string]int{}
		for _, n := range counts {
			m[n.Status] = n.N
		}
		if key := fmt.Sprint(counts); key != last {
			if s.send("counts", m) != nil {
				return
			}
			last = key
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
