package engine

import (
	"sync"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
)

// Watch is one watcher of one saga or transaction: Changed is signalled when this instance
// committed a change to it, and Latest returns the row as that change committed it. Changes
// committed by other instances are not seen here; watchers poll for those.
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

func (w *Watch[T]) set(row T) {
	w.mu.Lock()
	w.latest, w.has = row, true
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

// committed hands a committed row to its watchers.
func (h *hub[T]) committed(id uuid.UUID, row T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watches[id] {
		w.set(row)
	}
}

// WatchSaga starts watching a saga; call the returned function to stop.
func (e *Engine) WatchSaga(id uuid.UUID) (*Watch[*store.Saga], func()) { return e.sagaHub.watch(id) }

// WatchTransaction starts watching a transaction; call the returned function to stop.
func (e *Engine) WatchTransaction(id uuid.UUID) (*Watch[*store.Tx], func()) {
	return e.txHub.watch(id)
}
