package pgstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
)

// heard collects what a Listen told.
type heard struct {
	mu        sync.Mutex
	ids       map[uuid.UUID]string // id -> table
	listening chan bool
}

func (h *heard) changed(table string, ids []uuid.UUID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		h.ids[id] = table
	}
}

func (h *heard) has(id uuid.UUID) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.ids[id]
	return t, ok
}

// TestListenHearsTheChangesOfOtherInstances: two stores on one database are two coordinator
// instances. What one changes, the other hears of; what it changes itself, it does not.
func TestListenHearsTheChangesOfOtherInstances(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	a := newStore(t, pgstore.Config{})
	b := pgstore.New(a.Pool(), pgstore.Config{})
	def := registerDefinition(t, a, "listen", 1)
	ids := make([]uuid.UUID, 320) // more than one notification's worth
	for i := range ids {
		ids[i] = uuid.New()
	}
	createSagas(t, a, def, ids)

	h := &heard{ids: map[uuid.UUID]string{}, listening: make(chan bool, 4)}
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Listen(lctx, h.changed, func(on bool) { h.listening <- on })
	}()
	require.True(t, <-h.listening, "a listens")

	own := uuid.New()
	createSagas(t, a, def, []uuid.UUID{own})
	touch := func(s *pgstore.Store, ids []uuid.UUID) {
		_, err := s.Mutate(ctx, ids, func(_ time.Time, got []*store.Saga) ([]store.Change, error) {
			out := make([]store.Change, len(got))
			for i, sg := range got {
				sg.State.Reason = "touched"
				out[i] = store.Change{Row: sg}
			}
			return out, nil
		})
		require.NoError(t, err)
	}
	touch(a, []uuid.UUID{own}) // a's own change: not heard
	touch(b, ids)              // b's: heard, in several notifications
	require.Eventually(t, func() bool {
		for _, id := range ids {
			if _, ok := h.has(id); !ok {
				return false
			}
		}
		return true
	}, 30*time.Second, 10*time.Millisecond, "a hears every saga b changed")
	table, _ := h.has(ids[0])
	require.Equal(t, "sagas", table)
	_, heardOwn := h.has(own)
	require.False(t, heardOwn, "an instance does not hear its own changes")
	stop()
	<-done
	require.False(t, <-h.listening, "it says when it stops")
}
