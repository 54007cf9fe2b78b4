package engine

import (
	"context"
	"sync"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
)

// Watch is one watcher of one saga or transaction: Changed is signalled when this instance
// committed a change to it, and Latest returns the row as that change committed it; or when
// another instance did (when the store tells, see Listening), and Latest then returns false: the
// watcher reads the row. Watchers poll for what the store does not tell.
type Watch[T any] struct {
	c      chan struct{}
	mu     sync.Mutex
	latest T
	has    bool
}

// Changed is signalled (without blocking: a pending signal stands for any number of changes)
// when this instance committed a change.
func (w *Watch[T]) Changed() <-chan struct{} { return w.c }

// Latest returns the row as last committed by this instance since the watch began, if any.
func (w *Watch[T]) Latest() (T, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.has
}

func (w *Watch[T]) set(row T) { w.put(row, true) }

// stale marks the row changed elsewhere: Latest has none until the watcher reads it.
func (w *Watch[T]) stale() {
	var zero T
	w.put(zero, false)
}

// put records what Latest returns and signals Changed.
func (w *Watch[T]) put(row T, has bool) {
	w.mu.Lock()
	w.latest, w.has = row, has
	w.mu.Unlock()
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// hub holds the watches of one kind of row. Rows handed to it are never changed afterwards: a
// batch reads fresh rows each time.
type hub[T any] struct {
	mu      sync.Mutex
	watches map[uuid.UUID]map[*Watch[T]]struct{}
}

// watch starts watching id; the returned function ends the watch.
func (h *hub[T]) watch(id uuid.UUID) (*Watch[T], func()) {
	w := &Watch[T]{c: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watches == nil {
		h.watches = map[uuid.UUID]map[*Watch[T]]struct{}{}
	}
	if h.watches[id] == nil {
		h.watches[id] = map[*Watch[T]]struct{}{}
	}
	h.watches[id][w] = struct{}{}
	return w, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.watches[id], w)
		if len(h.watches[id]) == 0 {
			delete(h.watches, id)
		}
	}
}

// elsewhere tells the watchers of ids that another instance changed them.
func (h *hub[T]) elsewhere(ids []uuid.UUID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		for w := range h.watches[id] {
			w.stale()
		}
	}
}

// committed hands a committed row to its watchers.
func (h *hub[T]) committed(id uuid.UUID, row T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watches[id] {
		w.set(row)
	}
}

// Listening reports whether the store tells this engine which rows other instances change, so
// that watchers need not poll for them often.
func (e *Engine) Listening() bool { return e.listening.Load() }

// listen passes the store's news of other instances' changes to the watchers, until ctx ends.
func (e *Engine) listen(ctx context.Context, n store.Notifier) {
	n.Listen(ctx, func(table string, ids []uuid.UUID) {
		switch table {
		case "sagas":
			e.sagaHub.elsewhere(ids)
		case "transactions":
			e.txHub.elsewhere(ids)
		}
	}, e.listening.Store)
}

// WatchSaga starts watching a saga; call the returned function to stop.
func (e *Engine) WatchSaga(id uuid.UUID) (*Watch[*store.Saga], func()) { return e.sagaHub.watch(id) }

// WatchTransaction starts watching a transaction; call the returned function to stop.
func (e *Engine) WatchTransaction(id uuid.UUID) (*Watch[*store.Tx], func()) {
	return e.txHub.watch(id)
}
