package memstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/memstore"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/twopc"
)

// testTimeout bounds every wait of these tests; it is reached only when something is broken.
const testTimeout = 30 * time.Second

// shortWait is how long a call is given when the test expects it to wait until its context ends.
const shortWait = 50 * time.Millisecond

// fakeClock is a database clock that moves only when the test advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// newFakeClock starts at an instant with nanoseconds, which the store keeps to the microsecond.
func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, time.March, 4, 5, 6, 7, 891_234_567, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fixture is a store with one registered definition.
type fixture struct {
	ctx   context.Context
	s     *memstore.Store
	clock *fakeClock
	def   saga.Definition
	m     *saga.Machine
}

// setup returns a store on a fake clock (unless cfg has a clock) with a definition registered.
func setup(t *testing.T, cfg memstore.Config) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	clock := newFakeClock()
	if cfg.Clock == nil {
		cfg.Clock = clock.Now
	}
	s := memstore.New(cfg)
	d, err := saga.Normalize(saga.Definition{Name: "order", Steps: []saga.StepDefinition{
		{Name: "debit", Participant: "bank", Action: "debit", Compensation: "credit"},
		{Name: "ship", Participant: "shop", Action: "ship"},
	}})
	require.NoError(t, err)
	def, _, err := s.RegisterDefinition(ctx, d)
	require.NoError(t, err)
	return &fixture{ctx: ctx, s: s, clock: clock, def: def, m: saga.NewMachine(&def)}
}

// newSaga returns a request for a running saga of f's definition; edit may change it.
func (f *fixture) newSaga(id uuid.UUID, msgs []transport.Outgoing, edit func(now time.Time, sg *store.Saga)) store.NewSaga {
	return store.NewSaga{ID: id, Build: func(now time.Time) (store.Change, error) {
		st, _ := f.m.Start(id.String(), json.RawMessage(`{"amount":42}`), time.Time{}, now)
		sg := &store.Saga{ID: id, DefinitionName: f.def.Name, DefinitionVersion: f.def.Version, State: st, RequestHash: "h"}
		if edit != nil {
			edit(now, sg)
		}
		return store.Change{Row: sg, Messages: msgs}, nil
	}}
}

// createSaga creates one saga and requires that it was created.
func (f *fixture) createSaga(t *testing.T, msgs []transport.Outgoing, edit func(now time.Time, sg *store.Saga)) *store.Saga {
	t.Helper()
	res, _, err := f.s.CreateSagas(f.ctx, []store.NewSaga{f.newSaga(uuid.New(), msgs, edit)})
	require.NoError(t, err)
	require.NoError(t, res[0].Err)
	require.True(t, res[0].Created)
	return res[0].Saga
}

// txBuild returns a build function for a transaction in PREPARING; edit may change it.
func txBuild(id uuid.UUID, msgs []transport.Outgoing, edit func(now time.Time, tx *store.Tx)) func(time.Time) (store.TxChange, error) {
	return func(now time.Time) (store.TxChange, error) {
		st, _ := twopc.Machine{}.Begin(id.String(), []twopc.Participant{{Name: "bank"}, {Name: "shop"}}, 10*time.Second, now)
		tx := &store.Tx{ID: id, Tx: st, RequestHash: "h"}
		if edit != nil {
			edit(now, tx)
		}
		return store.TxChange{Row: tx, Messages: msgs}, nil
	}
}

// createTx creates one transaction and requires that it was created.
func (f *fixture) createTx(t *testing.T, msgs []transport.Outgoing, edit func(now time.Time, tx *store.Tx)) *store.Tx {
	t.Helper()
	id := uuid.New()
	tx, created, _, err := f.s.CreateTx(f.ctx, id, txBuild(id, msgs, edit))
	require.NoError(t, err)
	require.True(t, created)
	return tx
}

// message returns an outgoing message named key.
func message(key string) transport.Outgoing {
	return transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: "bank", Message: protocol.Message{
		MessageID: "msg:" + key, Type: protocol.TypeSagaAction, ContentType: protocol.ContentType,
		Headers: map[string]string{"k": key}, Body: []byte(fmt.Sprintf(`{"key":%q}`, key)),
	}}
}

// withTimeout returns a context that ends after d.
func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitDone waits until done is closed, failing the test after testTimeout.
func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatalf("waited %s for %s", testTimeout, what)
	}
}

// holdConnection starts a CreateTx whose build blocks, so that it holds a connection until the
// returned function is called (also at cleanup).
func holdConnection(t *testing.T, f *fixture) (release func()) {
	t.Helper()
	held, unblock, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		id := uuid.New()
		_, _, _, err := f.s.CreateTx(f.ctx, id, func(now time.Time) (store.TxChange, error) {
			close(held)
			<-unblock
			return txBuild(id, nil, nil)(now)
		})
		if err != nil {
			t.Errorf("the CreateTx holding the connection: %v", err)
		}
	}()
	waitDone(t, held, "the connection to be taken")
	var once sync.Once
	release = func() {
		once.Do(func() { close(unblock) })
		waitDone(t, done, "the CreateTx holding the connection to return")
	}
	t.Cleanup(release)
	return release
}
