package pgstore_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
)

// createWithMessages starts one saga of def with n messages and returns its id and outbox rows.
func createWithMessages(t *testing.T, s *pgstore.Store, def saga.Definition, n int) (uuid.UUID, []store.OutboxRow) {
	t.Helper()
	id := uuid.New()
	m := saga.NewMachine(&def)
	var msgs []transport.Outgoing
	for i := range n {
		msgs = append(msgs, transport.Outgoing{Exchange: "x", RoutingKey: "k", Message: protocol.Message{
			MessageID: id.String() + "/" + string(rune('a'+i)), Type: "saga.action", ContentType: "application/json", Body: []byte(`{}`),
		}})
	}
	res, rows, err := s.CreateSagas(t.Context(), []store.NewSaga{{ID: id, Build: func(now time.Time) (store.Change, error) {
		st, _ := m.Start(id.String(), json.RawMessage(`{}`), time.Time{}, now)
		return store.Change{Row: &store.Saga{ID: id, DefinitionName: def.Name, DefinitionVersion: def.Version, State: st, RequestHash: "h"}, Messages: msgs}, nil
	}}})
	require.NoError(t, err)
	require.True(t, res[0].Created)
	require.Len(t, rows, n)
	return id, rows
}

func rowIDs(rows []store.OutboxRow) []int64 {
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	return ids
}

func backlog(t *testing.T, s *pgstore.Store) int {
	t.Helper()
	n, _, err := s.Outbox().Backlog(t.Context())
	require.NoError(t, err)
	return n
}

// TestDeleteSoonRidesOnTheNextStateTransaction: rows handed to DeleteSoon are deleted by the next
// state transaction that commits, long before DeleteDelay.
func TestDeleteSoonRidesOnTheNextStateTransaction(t *testing.T) {
	t.Parallel()
	s := newStore(t, pgstore.Config{DeleteDelay: time.Hour})
	def := registerDefinition(t, s, "order", 2)
	id, rows := createWithMessages(t, s, def, 3)
	s.Outbox().(store.DeferredDelete).DeleteSoon(rowIDs(rows))
	require.Equal(t, 3, backlog(t, s), "DeleteSoon does not delete at once")

	_, err := s.Mutate(t.Context(), []uuid.UUID{id}, func(_ time.Time, sagas []*store.Saga) ([]store.Change, error) {
		sagas[0].State.Reason = "changed"
		return []store.Change{{Row: sagas[0]}}, nil
	})
	require.NoError(t, err)
	require.Equal(t, 0, backlog(t, s), "the state transaction deleted the rows handed over")

	// A start batch carries them too.
	_, more := createWithMessages(t, s, def, 2)
	s.Outbox().(store.DeferredDelete).DeleteSoon(rowIDs(more))
	_, _ = createWithMessages(t, s, def, 1)
	require.Equal(t, 1, backlog(t, s), "only the new saga's row is left")
}

// TestDeleteSoonWithoutStateTransactions: with no state transaction to ride on, the rows are
// deleted on their own after DeleteDelay.
func TestDeleteSoonWithoutStateTransactions(t *testing.T) {
	t.Parallel()
	s := newStore(t, pgstore.Config{DeleteDelay: 10 * time.Millisecond})
	def := registerDefinition(t, s, "order", 2)
	_, rows := createWithMessages(t, s, def, 2)
	s.Outbox().(store.DeferredDelete).DeleteSoon(rowIDs(rows))
	deadline := time.Now().Add(10 * time.Second)
	for backlog(t, s) != 0 {
		require.True(t, time.Now().Before(deadline), "rows were never deleted")
		time.Sleep(5 * time.Millisecond) // polling for an outcome, not ordering
	}
}

// TestDeleteSoonSurvivesAFailedStateTransaction: when the transaction that carried the delete
// does not commit, the ids are kept and deleted later.
func TestDeleteSoonSurvivesAFailedStateTransaction(t *testing.T) {
	t.Parallel()
	s := newStore(t, pgstore.Config{DeleteDelay: time.Hour})
	def := registerDefinition(t, s, "order", 2)
	id, rows := createWithMessages(t, s, def, 2)
	s.Outbox().(store.DeferredDelete).DeleteSoon(rowIDs(rows))

	_, err := s.Mutate(t.Context(), []uuid.UUID{id}, func(_ time.Time, sagas []*store.Saga) ([]store.Change, error) {
		sagas[0].State.Reason = "nul \x00 byte" // jsonb refuses it: the transaction fails
		return []store.Change{{Row: sagas[0]}}, nil
	})
	require.ErrorIs(t, err, store.ErrInvalidData)
	require.Equal(t, 2, backlog(t, s), "the failed transaction deleted nothing")

	require.NoError(t, s.Outbox().(store.DeferredDelete).FlushDeletes(context.Background()))
	require.Equal(t, 0, backlog(t, s), "the ids were kept for a later delete")
}
