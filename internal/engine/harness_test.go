package engine

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/memstore"
	"github.com/sagacoord/sagacoord/outbox"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/memtransport"
)

// The engine's unit tests run it on the in-memory store and transport: no PostgreSQL, no
// RabbitMQ, a clock the test moves. The test plays every participant: it reads the commands from
// their queues and publishes the replies.

// wait bounds every wait of a test; it is only reached when something is broken.
const wait = 10 * time.Second

// clock is the store's "database time"; tests move it forward to make timers fall due.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type harness struct {
	t      *testing.T
	ctx    context.Context
	cfg    Config
	clock  *clock
	store  *memstore.Store
	faults *faultyStore
	broker *memtransport.Broker
	tr     *memtransport.Transport // the coordinator's connection
	peer   *memtransport.Transport // the participants' connection
	relay  *outbox.Relay
	e      *Engine
	queues map[string]<-chan *transport.Delivery
}

type harnessOpts struct {
	storeCfg memstore.Config
	cfg      func(*Config)
}

func newHarness(t *testing.T, opts ...func(*harnessOpts)) *harness {
	t.Helper()
	var o harnessOpts
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	t.Cleanup(cancel)
	h := &harness{t: t, ctx: ctx, clock: &clock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}, queues: map[string]<-chan *transport.Delivery{}}
	o.storeCfg.Clock = h.clock.Now
	h.store = memstore.New(o.storeCfg)
	h.faults = &faultyStore{Store: h.store}
	h.broker = memtransport.NewBroker()
	h.tr = memtransport.New(h.broker)
	h.peer = memtransport.New(h.broker)
	t.Cleanup(func() { _ = h.tr.Close(); _ = h.peer.Close() })
	h.relay = outbox.NewRelay(h.store.Outbox(), h.tr, outbox.Config{PollInterval: 10 * time.Millisecond})
	require.NoError(t, h.relay.Start(ctx))
	t.Cleanup(h.relay.Stop)
	h.cfg = Config{Store: h.faults, Transport: h.tr, Relay: h.relay, TimerPoll: 5 * time.Millisecond, Retention: -1, MaxActiveSagas: -1,
		ReplyBatch: 16}
	if o.cfg != nil {
		o.cfg(&h.cfg)
	}
	h.startEngine()
	return h
}

func (h *harness) startEngine() {
	h.t.Helper()
	e, err := New(h.cfg)
	require.NoError(h.t, err)
	h.e = e
	require.NoError(h.t, e.Start(h.ctx))
	h.t.Cleanup(e.Stop)
}

// restart stops the engine and starts a new one on the same store and broker, as a coordinator
// restart would: its caches are empty, its unacknowledged replies are redelivered.
func (h *harness) restart() {
	h.t.Helper()
	h.e.Stop()
	h.startEngine()
}

// faultyStore fails the next Mutate or MutateTx with an injected error, once per failure queued.
type faultyStore struct {
	store.Store
	mu    sync.Mutex
	queue []error
}

func (f *faultyStore) failMutate(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, err)
}

func (f *faultyStore) pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue)
}

func (f *faultyStore) next() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) == 0 {
		return nil
	}
	err := f.queue[0]
	f.queue = f.queue[1:]
	return err
}

func (f *faultyStore) Mutate(ctx context.Context, ids []uuid.UUID, fn store.MutateFunc[*store.Saga]) ([]store.OutboxRow, error) {
	if err := f.next(); err != nil {
		return nil, err
	}
	return f.Store.Mutate(ctx, ids, fn)
}

func (f *faultyStore) MutateTx(ctx context.Context, ids []uuid.UUID, fn store.MutateFunc[*store.Tx]) ([]store.OutboxRow, error) {
	if err := f.next(); err != nil {
		return nil, err
	}
	return f.Store.MutateTx(ctx, ids, fn)
}

// define registers a definition and starts reading its participants' queues.
func (h *harness) define(def saga.Definition) *saga.Definition {
	h.t.Helper()
	stored, _, err := h.e.RegisterDefinition(h.ctx, def)
	require.NoError(h.t, err)
	for _, s := range stored.Steps {
		h.listen(s.Participant)
	}
	return &stored
}

// listen starts reading a participant's two queues (declaring them), its saga steps and its
// two-phase-commit commands, as one channel.
func (h *harness) listen(participant string) {
	h.t.Helper()
	if _, ok := h.queues[participant]; ok {
		return
	}
	require.NoError(h.t, h.peer.DeclareParticipant(h.ctx, participant))
	both := make(chan *transport.Delivery, 200)
	for _, q := range []string{protocol.ParticipantQueue(participant), protocol.TwoPCQueue(participant)} {
		ch, err := h.peer.Consume(h.ctx, q, 100)
		require.NoError(h.t, err)
		go func() {
			for d := range ch {
				both <- d
			}
		}()
	}
	h.queues[participant] = both
}

// command returns the next command on a participant's queue, acknowledged.
func (h *harness) command(participant string) protocol.Message {
	h.t.Helper()
	select {
	case d := <-h.queues[participant]:
		require.NoError(h.t, d.Ack())
		return d.Message
	case <-time.After(wait):
		h.t.Fatalf("no command reached %s in %s", participant, wait)
		return protocol.Message{}
	}
}

// step returns the next saga step command on a participant's queue.
func (h *harness) step(participant string) *protocol.StepCommand {
	h.t.Helper()
	cmd, err := protocol.DecodeStepCommand(h.command(participant))
	require.NoError(h.t, err)
	return cmd
}

// noCommand checks that nothing waits on a participant's queue now.
func (h *harness) noCommand(participant string) {
	h.t.Helper()
	select {
	case d := <-h.queues[participant]:
		h.t.Fatalf("unexpected command %s on %s", d.MessageID, participant)
	default:
	}
}

// answer publishes a participant's reply to cmd.
func (h *harness) answer(cmd *protocol.StepCommand, outcome protocol.Outcome, output string) {
	h.t.Helper()
	r := protocol.StepReply{Outcome: outcome}
	if outcome == protocol.OutcomeSucceeded && output != "" {
		r.Output = json.RawMessage(output)
	} else if outcome != protocol.OutcomeSucceeded {
		r.Error = output
	}
	m, err := protocol.EncodeStepReply(cmd, r)
	require.NoError(h.t, err)
	h.publish(m)
}

// publish puts a message on the reply queue, as a participant would.
func (h *harness) publish(m protocol.Message) {
	h.t.Helper()
	errs := h.peer.Publish(h.ctx, []transport.Outgoing{{Exchange: protocol.ExchangeReplies, RoutingKey: protocol.RoutingKeyReplies, Message: m}})
	require.NoError(h.t, errs[0])
}

// start starts a saga of def with input and returns its id.
func (h *harness) start(def string, input string) uuid.UUID {
	h.t.Helper()
	sg, created, err := h.e.StartSaga(h.ctx, StartRequest{Definition: def, Input: json.RawMessage(input)})
	require.NoError(h.t, err)
	require.True(h.t, created)
	return sg.ID
}

// saga returns a saga as stored.
func (h *harness) saga(id uuid.UUID) *store.Saga {
	h.t.Helper()
	sg, err := h.store.GetSaga(h.ctx, id)
	require.NoError(h.t, err)
	return sg
}

// awaitStatus waits until the saga has status want.
func (h *harness) awaitStatus(id uuid.UUID, want saga.Status) *store.Saga {
	h.t.Helper()
	var sg *store.Saga
	require.Eventually(h.t, func() bool {
		sg = h.saga(id)
		return sg.State.Status == want
	}, wait, time.Millisecond, "saga %s did not become %s", id, want)
	return sg
}

// deadLetters reads the dead-letter queue.
func (h *harness) deadLetters() <-chan *transport.Delivery {
	h.t.Helper()
	ch, err := h.peer.Consume(h.ctx, protocol.QueueDead, 100)
	require.NoError(h.t, err)
	return ch
}

func awaitDelivery(t *testing.T, ch <-chan *transport.Delivery, what string) *transport.Delivery {
	t.Helper()
	select {
	case d := <-ch:
		require.NoError(t, d.Ack())
		return d
	case <-time.After(wait):
		t.Fatalf("no %s in %s", what, wait)
		return nil
	}
}

// three is a definition of three steps a, b, c on participants pa, pb, pc, each compensable.
func three(name string, edit ...func(*saga.Definition)) saga.Definition {
	d := saga.Definition{Name: name, Steps: []saga.StepDefinition{
		{Name: "a", Participant: "pa", Action: "do-a", Compensation: "undo-a", Timeout: time.Second},
		{Name: "b", Participant: "pb", Action: "do-b", Compensation: "undo-b", Timeout: time.Second},
		{Name: "c", Participant: "pc", Action: "do-c", Compensation: "undo-c", Timeout: time.Second},
	}}
	for _, f := range edit {
		f(&d)
	}
	return d
}
