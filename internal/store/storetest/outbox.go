package storetest

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/transport"
)

// waitLapsed waits until the oldest outbox row is older than NewRowLease: then every row written
// with it, at the same database time, has a lapsed lease.
func waitLapsed(t *testing.T, f *fixture) {
	t.Helper()
	waitFor(t, "the outbox lease of new rows to lapse", func() bool {
		_, age, err := f.s.Outbox().Backlog(f.ctx)
		require.NoError(t, err)
		return age > NewRowLease
	})
}

// claimAll claims lapsed rows until none is left and returns them by id.
func claimAll(t *testing.T, f *fixture) map[int64]store.OutboxRow {
	t.Helper()
	out := map[int64]store.OutboxRow{}
	for {
		rows, err := f.s.Outbox().ClaimExpired(f.ctx, 100)
		require.NoError(t, err)
		if len(rows) == 0 {
			return out
		}
		for _, r := range rows {
			_, dup := out[r.ID]
			require.False(t, dup, "row %d claimed twice while leased", r.ID)
			out[r.ID] = r
		}
	}
}

func testOutboxClaim(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	ob := f.s.Outbox()
	start := time.Now()
	_, written := f.createTx(t, uuid.New(), "h", messages("claim", 3), nil)
	fresh, err := ob.ClaimExpired(f.ctx, 10)
	require.NoError(t, err)
	attempts := 1
	if time.Since(start) < NewRowLease {
		require.Empty(t, fresh, "rows still leased to their writer are not claimed")
	} else {
		t.Logf("the machine took more than %s to write and claim; not checking that fresh rows are left alone", NewRowLease)
		if len(fresh) > 0 {
			attempts++
		}
	}

	require.Equal(t, NewRowLease, ob.Lease(), "the store was made with the suite's lease")
	waitLapsed(t, f)
	claimed := claimAll(t, f)
	require.Len(t, claimed, len(written), "every lapsed row is claimed")
	for _, w := range written {
		c, ok := claimed[w.ID]
		require.True(t, ok, "row %d is claimed", w.ID)
		require.Equal(t, attempts, c.Attempts, "a claim counts an attempt")
	}

	rows, err := ob.ClaimExpired(f.ctx, 10)
	require.NoError(t, err)
	require.Empty(t, rows, "rows leased by a claim are not claimed again")

	// Once the claim's lease lapses, the rows are claimed again, with one more attempt.
	var again map[int64]store.OutboxRow
	waitFor(t, "the claim's lease to lapse", func() bool {
		again = claimAll(t, f)
		return len(again) > 0
	})
	require.Len(t, again, len(written), "every row whose claim lapsed is claimed again")
	for _, r := range again {
		require.Equal(t, attempts+1, r.Attempts, "claiming again counts another attempt")
	}
	require.Equal(t, len(written), backlog(t, f.ctx, f.s), "claiming deletes nothing")
}

func testOutboxClaimLimit(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	_, written := f.createTx(t, uuid.New(), "h", messages("limit", 5), nil)
	waitLapsed(t, f)
	seen := map[int64]bool{}
	for _, want := range []int{2, 2, 1, 0} {
		rows, err := f.s.Outbox().ClaimExpired(f.ctx, 2)
		require.NoError(t, err)
		require.Len(t, rows, want)
		for _, r := range rows {
			require.False(t, seen[r.ID], "row %d claimed twice", r.ID)
			seen[r.ID] = true
		}
	}
	require.Len(t, seen, len(written))
}

// testOutboxConcurrentClaims lets 4 relays claim 60 lapsed rows at once, 5 at a time: each row
// goes to one of them.
func testOutboxConcurrentClaims(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	_, written := f.createTx(t, uuid.New(), "h", messages("concurrent", 60), nil)
	waitLapsed(t, f)
	const relays = 4
	got := make([][]int64, relays)
	errs := make([]error, relays)
	parallel(relays, func(i int) {
		for {
			rows, err := f.s.Outbox().ClaimExpired(f.ctx, 5)
			if err != nil {
				errs[i] = err
				return
			}
			if len(rows) == 0 {
				return
			}
			for _, r := range rows {
				got[i] = append(got[i], r.ID)
			}
		}
	})
	seen := map[int64]int{}
	for i := range relays {
		require.NoError(t, errs[i], "relay %d", i)
		for _, id := range got[i] {
			_, dup := seen[id]
			require.False(t, dup, "row %d claimed by relays %d and %d", id, seen[id], i)
			seen[id] = i
		}
	}
	require.Len(t, seen, len(written), "every row is claimed")
}

// withoutContentType returns msgs with ContentType cleared.
func withoutContentType(msgs []transport.Outgoing) []transport.Outgoing {
	out := append([]transport.Outgoing(nil), msgs...)
	for i := range out {
		out[i].ContentType = ""
	}
	return out
}

// testOutboxRoundTrip checks that a claimed row carries the message that was written: exchange,
// routing key, id, type, correlation id, headers and a binary body (content type: see
// testOutboxContentType). Messages come from each kind of write.
func testOutboxRoundTrip(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	var written []store.OutboxRow
	sagaMsgs := messages("saga", 2)
	sagaMsgs[1].Exchange, sagaMsgs[1].RoutingKey = "", "sagacoord.participant.bank" // the default exchange
	sagaMsgs[1].Headers, sagaMsgs[1].CorrelationID = nil, ""
	_, rows := f.createSagas(t, f.newSaga(uuid.New(), "h", sagaMsgs, nil))
	written = append(written, rows...)
	tx, rows := f.createTx(t, uuid.New(), "h", messages("tx", 1), nil)
	written = append(written, rows...)
	rows, err := f.s.MutateTx(f.ctx, []uuid.UUID{tx.ID}, func(_ time.Time, txs []*store.Tx) ([]store.TxChange, error) {
		return []store.TxChange{{Row: txs[0], Messages: messages("mutated", 2)}}, nil
	})
	require.NoError(t, err)
	written = append(written, rows...)

	claimed := map[int64]store.OutboxRow{}
	waitFor(t, "every row's lease to lapse", func() bool {
		for id, r := range claimAll(t, f) {
			claimed[id] = r
		}
		return len(claimed) >= len(written)
	})
	require.Len(t, claimed, len(written))
	for _, w := range written {
		c, ok := claimed[w.ID]
		require.True(t, ok, "row %d is claimed", w.ID)
		want, got := withoutContentType([]transport.Outgoing{w.Outgoing})[0], withoutContentType([]transport.Outgoing{c.Outgoing})[0]
		if len(want.Headers) == 0 && len(got.Headers) == 0 {
			want.Headers, got.Headers = nil, nil
		}
		require.Equal(t, want, got, "row %d carries the message that was written", w.ID)
	}
}

// testOutboxContentType checks that a claimed row keeps the message's content type: the
// protocol (docs/protocol.md, section 4) says every command carries application/json, also when
// the relay publishes it again from the outbox after a crash or a failed publish (pgstore keeps it
// in the outbox's content_type column, migration 004).
func testOutboxContentType(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	msgs := messages("typed", 1)
	f.createTx(t, uuid.New(), "h", msgs, nil)
	waitLapsed(t, f)
	claimed := claimAll(t, f)
	require.Len(t, claimed, 1)
	for _, c := range claimed {
		require.Equal(t, msgs[0].ContentType, c.ContentType, "a claimed row keeps its content type")
	}
}

func testOutboxDelete(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	ob := f.s.Outbox()
	n, age, err := ob.Backlog(f.ctx)
	require.NoError(t, err)
	require.Zero(t, n, "an empty outbox has no backlog")
	require.Zero(t, age, "an empty outbox has no age")

	_, written := f.createTx(t, uuid.New(), "h", messages("delete", 5), nil)
	n, age, err = ob.Backlog(f.ctx)
	require.NoError(t, err)
	require.Equal(t, 5, n)
	require.GreaterOrEqual(t, age, time.Duration(0))

	require.NoError(t, ob.Delete(f.ctx, nil), "deleting nothing")
	require.NoError(t, ob.Delete(f.ctx, []int64{written[0].ID, written[1].ID}))
	require.NoError(t, ob.Delete(f.ctx, []int64{written[0].ID, -1}), "deleting a row again, or one that never existed, is harmless")
	require.Equal(t, 3, backlog(t, f.ctx, f.s))

	waitLapsed(t, f)
	n, age, err = ob.Backlog(f.ctx)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Greater(t, age, NewRowLease, "the age is that of the oldest row")
	claimed := claimAll(t, f)
	require.Len(t, claimed, 3, "deleted rows are not claimed")
	for _, w := range written[:2] {
		_, ok := claimed[w.ID]
		require.False(t, ok, "deleted row %d claimed", w.ID)
	}
	for _, w := range written[2:] {
		require.NoError(t, ob.Delete(f.ctx, []int64{w.ID}))
	}
	n, age, err = ob.Backlog(f.ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Zero(t, age)
}
