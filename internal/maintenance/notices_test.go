package maintenance_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/maintenance"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
)

func TestFinalNoticesGroupEachParticipantsIDsWithinTheLimit(t *testing.T) {
	t.Parallel()
	var gone []store.Finished
	sagasOfBank := map[string]bool{}
	for range protocol.MaxFinalIDs + 1 {
		id := uuid.New()
		sagasOfBank[id.String()] = true
		gone = append(gone, store.Finished{ID: id, Saga: true, Participants: []string{"bank"}})
	}
	tx := uuid.New()
	gone = append(gone, store.Finished{ID: tx, Participants: []string{"bank", "shop"}})

	msgs, err := maintenance.FinalNotices(gone)
	require.NoError(t, err)
	require.Len(t, msgs, 3, "two notices for bank (the limit is %d ids), one for shop", protocol.MaxFinalIDs)
	got := map[string]*protocol.Final{}
	ids := map[string]bool{}
	for _, m := range msgs {
		require.Equal(t, protocol.ExchangeFinals, m.Exchange)
		require.Equal(t, m.RoutingKey, m.Headers[protocol.HeaderParticipant], "routed to the participant it names")
		require.False(t, ids[m.MessageID], "message ids are unique")
		ids[m.MessageID] = true
		f, err := protocol.DecodeFinal(m.Message)
		require.NoError(t, err, "a notice is within what a participant accepts")
		if prev := got[m.RoutingKey]; prev != nil {
			f.Sagas = append(prev.Sagas, f.Sagas...)
			f.Transactions = append(prev.Transactions, f.Transactions...)
		}
		got[m.RoutingKey] = f
	}
	require.Len(t, got["bank"].Sagas, len(sagasOfBank))
	for _, id := range got["bank"].Sagas {
		require.True(t, sagasOfBank[id], "bank hears of its own sagas only")
	}
	require.Equal(t, []string{tx.String()}, got["bank"].Transactions)
	require.Equal(t, &protocol.Final{Transactions: []string{tx.String()}}, got["shop"])
}

func TestRetainerAnnouncesWhatItDeletes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.add(t, 3, saga.StatusCompleted)
	f.add(t, 1, saga.StatusFailed) // an operator may retry it: never final
	f.clock.advance(2 * time.Hour)
	r := &maintenance.Retainer{Store: f.s, Retention: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	require.Equal(t, 3, r.RunOnce(f.ctx))
	f.clock.advance(time.Hour) // past the outbox lease
	rows, err := f.s.Outbox().ClaimExpired(f.ctx, 10)
	require.NoError(t, err)
	require.Len(t, rows, 1, "one notice for the one participant")
	final, err := protocol.DecodeFinal(rows[0].Message)
	require.NoError(t, err)
	require.Len(t, final.Sagas, 3, "the deleted sagas, and not the FAILED one")
	require.Equal(t, "p", rows[0].RoutingKey)
}
