package storetest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/twopc"
)

func testCreateTx(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	id := uuid.New()
	msgs := messages(id.String(), 2)
	var now time.Time
	tx, rows := f.createTx(t, id, "hash", msgs, func(n time.Time, tx *store.Tx) {
		now = n
		tx.WakeAt = n.Add(10 * time.Second)
	})
	requireRows(t, msgs, rows)
	require.Equal(t, len(msgs), backlog(t, f.ctx, f.s), "the messages are in the outbox")
	require.Equal(t, id, tx.ID)
	require.Equal(t, int64(1), tx.Version, "a new transaction has version 1")
	requireSameTime(t, now, tx.CreatedAt, "CreatedAt is the database time given to build")
	requireSameTime(t, now, tx.UpdatedAt, "UpdatedAt of a new transaction")

	got, err := f.s.GetTx(f.ctx, id)
	require.NoError(t, err)
	requireSameTx(t, tx, got)
	require.Equal(t, twopc.StatePreparing, got.Tx.State)
	require.Len(t, got.Tx.Participants, 2)
}

func testCreateTxExisting(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	id := uuid.New()
	old, _ := f.createTx(t, id, "first", messages("first", 2), nil)
	before := backlog(t, f.ctx, f.s)

	got, created, rows, err := f.s.CreateTx(f.ctx, id, txBuild(id, "second", messages("second", 3), func(_ time.Time, tx *store.Tx) {
		tx.Tx.Reason = "second"
	}))
	require.NoError(t, err)
	require.False(t, created, "an existing id is not created again")
	require.Empty(t, rows, "nothing is written for an existing transaction")
	require.Equal(t, before, backlog(t, f.ctx, f.s), "nothing is written for an existing transaction")
	requireSameTx(t, old, got)
	require.Equal(t, "first", got.RequestHash, "the existing transaction keeps the request that created it")
}

func testCreateTxBuildError(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	id := uuid.New()
	_, created, rows, err := f.s.CreateTx(f.ctx, id, func(time.Time) (store.TxChange, error) {
		return store.TxChange{}, errBuild
	})
	require.ErrorIs(t, err, errBuild, "CreateTx returns the build error")
	require.False(t, created)
	require.Empty(t, rows)
	_, err = f.s.GetTx(f.ctx, id)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Zero(t, backlog(t, f.ctx, f.s))
}

func testGetTxNotFound(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	_, err := f.s.GetTx(f.ctx, uuid.New())
	require.ErrorIs(t, err, store.ErrNotFound)
}

// testListTx lists 30 transactions in three states by every filter and in pages of several
// sizes. Transactions are created one at a time, concurrently, so some may share a creation time.
func testListTx(t *testing.T, newStore func(t *testing.T) store.Store) {
	f := setup(t, newStore)
	states := []twopc.State{twopc.StatePreparing, twopc.StateCommitted, twopc.StateAborting}
	const n = 30
	ids := newIDs(n)
	errs := make([]error, n)
	parallel(n, func(i int) {
		_, _, _, errs[i] = f.s.CreateTx(f.ctx, ids[i], txBuild(ids[i], "h", nil, func(_ time.Time, tx *store.Tx) {
			tx.Tx.State = states[i%len(states)]
		}))
	})
	all := map[uuid.UUID]twopc.State{}
	for i, err := range errs {
		require.NoError(t, err, "CreateTx %d", i)
		all[ids[i]] = states[i%len(states)]
	}

	for _, state := range []twopc.State{"", twopc.StatePreparing, twopc.StateCommitted, twopc.StateAborted} {
		want := map[uuid.UUID]bool{}
		for id, st := range all {
			if state == "" || st == state {
				want[id] = true
			}
		}
		for _, limit := range []int{1, 4, 30, 100} {
			name := fmt.Sprintf("state=%q limit=%d", state, limit)
			got := listAll(t, name, limit, n, func(at time.Time, id uuid.UUID) ([]*store.Tx, error) {
				return f.s.ListTx(f.ctx, store.TxFilter{State: state, Limit: limit, AfterCreatedAt: at, AfterID: id})
			}, func(tx *store.Tx) (time.Time, uuid.UUID) { return tx.CreatedAt, tx.ID })
			seen := map[uuid.UUID]bool{}
			for _, tx := range got {
				require.True(t, want[tx.ID], "%s: transaction %s does not match the filter", name, tx.ID)
				require.Equal(t, all[tx.ID], tx.Tx.State, "%s: state", name)
				seen[tx.ID] = true
			}
			require.Len(t, seen, len(want), "%s: every matching transaction is listed once", name)
		}
	}
}

// requireSameTx checks that got is want as stored.
func requireSameTx(t *testing.T, want, got *store.Tx) {
	t.Helper()
	require.Equal(t, want.ID, got.ID)
	require.Equal(t, want.RequestHash, got.RequestHash)
	require.Equal(t, want.Version, got.Version)
	require.Equal(t, want.Tx.State, got.Tx.State)
	wantState, err := json.Marshal(want.Tx)
	require.NoError(t, err)
	gotState, err := json.Marshal(got.Tx)
	require.NoError(t, err)
	require.JSONEq(t, string(wantState), string(gotState), "transaction state")
	requireSameTime(t, want.WakeAt, got.WakeAt, "WakeAt")
	requireSameTime(t, want.FinishedAt, got.FinishedAt, "FinishedAt")
	requireSameTime(t, want.CreatedAt, got.CreatedAt, "CreatedAt")
	requireSameTime(t, want.UpdatedAt, got.UpdatedAt, "UpdatedAt")
}
