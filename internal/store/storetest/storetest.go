// Package storetest is the conformance suite of store.Store. Every implementation runs it from its
// own tests, against the real database:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { ... })
//	}
//
// The suite checks the contract the engine, the server and the outbox relay rely on: definition
// versioning, idempotent batch creation, keyset listing, mutations that lock, commit their
// messages with them and roll back together (a value the database refuses is ErrInvalidData),
// timers claimed by one instance only, outbox leases, and retention.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/twopc"
)

// NewRowLease is the outbox lease of the store under test (Outbox.Lease; pgstore:
// Config.OutboxLease). The suite waits for it to lapse, so keep it short; it
// checks that fresh rows are not claimed only while less than NewRowLease has passed.
const NewRowLease = time.Second

// Timeout bounds every wait of the suite. It is generous because it is only reached when
// something is broken.
const Timeout = 30 * time.Second

// Run runs the conformance suite as parallel subtests of t.
//
// newStore returns a store on an empty, fully migrated database of its own for the test it is
// given (a fresh schema), whose new outbox rows are leased for NewRowLease, and which can use at
// least two connections at once. It arranges for what it opens to be closed when the test ends.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []test{
		{"Definitions/IdenticalContentIsNoOp", testDefinitionIdentical},
		{"Definitions/ChangedContentIsNextVersion", testDefinitionChanged},
		{"Definitions/GetLatestSpecificAndNotFound", testDefinitionGet},
		{"Definitions/ListLatestPerName", testDefinitionList},
		{"Definitions/ListPages", testDefinitionListPages},
		{"Definitions/ConcurrentIdentical", testDefinitionConcurrentIdentical},
		{"Definitions/ConcurrentChanged", testDefinitionConcurrentChanged},
		{"Definitions/ReregisterOlder", testDefinitionReregisterOlder},
		{"Definitions/RegistrantIsKept", testDefinitionRegistrant},

		{"Sagas/CreateWritesSagasAndMessages", testCreateSagas},
		{"Sagas/CreateExistingReturnsItWithoutMessages", testCreateSagasExisting},
		{"Sagas/CreateSameIDTwiceInOneBatch", testCreateSagasSameIDInBatch},
		{"Sagas/CreateBuildErrorFailsOnlyItsItem", testCreateSagasBuildError},
		{"Sagas/CreateSameIDAfterBuildErrorInOneBatch", testCreateSagasSameIDAfterBuildError},
		{"Sagas/CreateEmptyBatch", testCreateSagasEmpty},
		{"Sagas/GetNotFound", testGetSagaNotFound},
		{"Sagas/ListFiltersAndPages", testListSagas},
		{"Sagas/ListByVersionTimeAndAge", testListSagasByVersionTimeAndAge},
		{"Sagas/CountUnfinished", testCountUnfinished},

		{"Transactions/CreateWritesTxAndMessages", testCreateTx},
		{"Transactions/CreateExistingReturnsItWithoutMessages", testCreateTxExisting},
		{"Transactions/CreateBuildErrorWritesNothing", testCreateTxBuildError},
		{"Transactions/GetNotFound", testGetTxNotFound},
		{"Transactions/ListFiltersAndPages", testListTx},

		{"Outbox/ClaimExpiredLeases", testOutboxClaim},
		{"Outbox/ClaimExpiredLimit", testOutboxClaimLimit},
		{"Outbox/ConcurrentClaimsAreDisjoint", testOutboxConcurrentClaims},
		{"Outbox/RowKeepsEveryProperty", testOutboxRoundTrip},
		{"Outbox/RowKeepsContentType", testOutboxContentType},
		{"Outbox/DeleteAndBacklog", testOutboxDelete},

		{"Retention/DeleteFinished", testDeleteFinished},
		{"Retention/NoticeErrorKeepsTheRows", testDeleteFinishedNoticeError},
		{"Stats/UnfinishedByState", testStats},
	}
	tests = append(tests, sagaKind.tests()...)
	tests = append(tests, txKind.tests()...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newStore)
		})
	}
}

// test is one test of the suite.
type test struct {
	name string
	run  func(t *testing.T, newStore func(t *testing.T) store.Store)
}

// errBuild is the error the suite's failing Build and mutate functions return.
var errBuild = errors.New("storetest: deliberate failure")

// fixture is a store with one registered definition and its machine.
type fixture struct {
	ctx context.Context
	s   store.Store
	def saga.Definition
	m   *saga.Machine
}

func setup(t *testing.T, newStore func(t *testing.T) store.Store) *fixture {
	t.Helper()
	ctx := timeout(t)
	s := newStore(t)
	def, _, err := s.RegisterDefinition(ctx, definition(t, "order", 2))
	require.NoError(t, err, "RegisterDefinition")
	return &fixture{ctx: ctx, s: s, def: def, m: saga.NewMachine(&def)}
}

// definition returns a normalized definition with the given number of steps, whose participants
// alternate between "bank" and "shop".
func definition(t *testing.T, name string, steps int) saga.Definition {
	t.Helper()
	d := saga.Definition{Name: name}
	for i := range steps {
		d.Steps = append(d.Steps, saga.StepDefinition{
			Name: fmt.Sprintf("step-%d", i), Participant: []string{"bank", "shop"}[i%2], Action: "debit", Compensation: "credit",
		})
	}
	n, err := saga.Normalize(d)
	require.NoError(t, err, "Normalize")
	return n
}

// message returns an outgoing message with every property set; key names it uniquely.
func message(key string) transport.Outgoing {
	return transport.Outgoing{
		Exchange:   protocol.ExchangeCommands,
		RoutingKey: "bank",
		Message: protocol.Message{
			MessageID:     "msg:" + key,
			Type:          protocol.TypeSagaAction,
			ContentType:   protocol.ContentType,
			CorrelationID: "corr:" + key,
			Headers: map[string]string{
				protocol.HeaderVersion:     protocol.Version,
				protocol.HeaderSagaID:      key,
				protocol.HeaderStep:        "débit €",
				protocol.HeaderAttempt:     "1",
				protocol.HeaderTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				"x-empty":                  "",
			},
			Body: []byte(`{"key":"` + key + `","bin":"\u0000\u00ff"}` + "\x00\xff"),
		},
	}
}

// messages returns n messages named after key.
func messages(key string, n int) []transport.Outgoing {
	out := make([]transport.Outgoing, n)
	for i := range out {
		out[i] = message(fmt.Sprintf("%s/%d", key, i))
	}
	return out
}

// requireRows checks that rows are the outbox rows of msgs: one each, with distinct ids.
func requireRows(t *testing.T, msgs []transport.Outgoing, rows []store.OutboxRow) {
	t.Helper()
	require.Len(t, rows, len(msgs), "one outbox row per message")
	byID := map[string]transport.Outgoing{}
	for _, m := range msgs {
		byID[m.MessageID] = m
	}
	seen := map[int64]bool{}
	for _, r := range rows {
		require.NotZero(t, r.ID, "outbox row id")
		require.False(t, seen[r.ID], "outbox row id %d returned twice", r.ID)
		seen[r.ID] = true
		want, ok := byID[r.MessageID]
		require.True(t, ok, "outbox row %d carries unexpected message %q", r.ID, r.MessageID)
		require.Equal(t, want, r.Outgoing, "outbox row %d", r.ID)
		delete(byID, r.MessageID)
	}
}

func backlog(t *testing.T, ctx context.Context, s store.Store) int {
	t.Helper()
	n, _, err := s.Outbox().Backlog(ctx)
	require.NoError(t, err, "Backlog")
	return n
}

// waitFor polls cond until it holds, failing the test after Timeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", Timeout, what)
		}
		<-tick.C
	}
}

// newSaga returns a NewSaga whose Build starts a saga of f's definition with the machine, then
// lets edit change it, and adds msgs.
func (f *fixture) newSaga(id uuid.UUID, hash string, msgs []transport.Outgoing, edit func(now time.Time, sg *store.Saga)) store.NewSaga {
	return store.NewSaga{ID: id, Build: func(now time.Time) (store.Change, error) {
		st, _ := f.m.Start(id.String(), json.RawMessage(`{"amount":42}`), time.Time{}, now)
		st.Reason = "0"
		sg := &store.Saga{ID: id, DefinitionName: f.def.Name, DefinitionVersion: f.def.Version, State: st, RequestHash: hash}
		if edit != nil {
			edit(now, sg)
		}
		return store.Change{Row: sg, Messages: msgs}, nil
	}}
}

// createSagas creates the sagas and requires that each was created.
func (f *fixture) createSagas(t *testing.T, batch ...store.NewSaga) ([]*store.Saga, []store.OutboxRow) {
	t.Helper()
	res, rows, err := f.s.CreateSagas(f.ctx, batch)
	require.NoError(t, err, "CreateSagas")
	require.Len(t, res, len(batch))
	out := make([]*store.Saga, len(res))
	for i, r := range res {
		require.NoError(t, r.Err, "CreateSagas item %d", i)
		require.True(t, r.Created, "CreateSagas item %d created", i)
		out[i] = r.Saga
	}
	return out, rows
}

// createTx creates a transaction with two participants and msgs; edit may change it.
func (f *fixture) createTx(t *testing.T, id uuid.UUID, hash string, msgs []transport.Outgoing, edit func(now time.Time, tx *store.Tx)) (*store.Tx, []store.OutboxRow) {
	t.Helper()
	tx, created, rows, err := f.s.CreateTx(f.ctx, id, txBuild(id, hash, msgs, edit))
	require.NoError(t, err, "CreateTx")
	require.True(t, created, "CreateTx created")
	return tx, rows
}

func txBuild(id uuid.UUID, hash string, msgs []transport.Outgoing, edit func(now time.Time, tx *store.Tx)) func(time.Time) (store.TxChange, error) {
	return func(now time.Time) (store.TxChange, error) {
		parts := []twopc.Participant{{Name: "bank", Payload: json.RawMessage(`{"debit":10}`)}, {Name: "shop"}}
		st, _ := twopc.Machine{}.Begin(id.String(), parts, 10*time.Second, now)
		st.Reason = "0"
		tx := &store.Tx{ID: id, Tx: st, RequestHash: hash}
		if edit != nil {
			edit(now, tx)
		}
		return store.TxChange{Row: tx, Messages: msgs}, nil
	}
}

// requireSameSaga checks that got is want as stored.
func requireSameSaga(t *testing.T, want, got *store.Saga) {
	t.Helper()
	require.Equal(t, want.ID, got.ID)
	require.Equal(t, want.DefinitionName, got.DefinitionName)
	require.Equal(t, want.DefinitionVersion, got.DefinitionVersion)
	require.Equal(t, want.RequestHash, got.RequestHash)
	require.Equal(t, want.Version, got.Version)
	require.Equal(t, want.State.Status, got.State.Status)
	require.JSONEq(t, string(want.State.Input), string(got.State.Input))
	wantState, err := json.Marshal(want.State)
	require.NoError(t, err)
	gotState, err := json.Marshal(got.State)
	require.NoError(t, err)
	require.JSONEq(t, string(wantState), string(gotState), "saga state")
	requireSameTime(t, want.WakeAt, got.WakeAt, "WakeAt")
	requireSameTime(t, want.FinishedAt, got.FinishedAt, "FinishedAt")
	requireSameTime(t, want.CreatedAt, got.CreatedAt, "CreatedAt")
	requireSameTime(t, want.UpdatedAt, got.UpdatedAt, "UpdatedAt")
}

// requireSameTime compares instants at the microsecond, the precision of a database timestamp.
func requireSameTime(t *testing.T, want, got time.Time, what string) {
	t.Helper()
	require.Equal(t, want.IsZero(), got.IsZero(), "%s: want %v, got %v", what, want, got)
	if !want.IsZero() {
		require.True(t, want.Truncate(time.Microsecond).Equal(got.Truncate(time.Microsecond)), "%s: want %v, got %v", what, want, got)
	}
}

func sortedIDs(ids []uuid.UUID) []uuid.UUID {
	out := append([]uuid.UUID(nil), ids...)
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func newIDs(n int) []uuid.UUID {
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
	}
	return ids
}

// counter reads the number the suite keeps in a row's Reason.
func counter(t *testing.T, reason string) int {
	t.Helper()
	n, err := strconv.Atoi(reason)
	require.NoError(t, err, "counter %q", reason)
	return n
}

// parallel runs fn n times concurrently and waits for all.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}
