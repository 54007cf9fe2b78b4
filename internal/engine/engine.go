// Package engine drives sagas: it wires the pure state machine (package saga) to the store (every
// transition and the commands it causes committed in one transaction), the outbox relay
// (published right after commit) and the transport (replies consumed and acknowledged only after
// their effect committed). It holds nothing in memory that a crash would lose: any instance may
// serve any saga, and several instances share one database safely.
package engine

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/lifecycle"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/outbox"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/transport"
)

// Errors the API maps to gRPC codes. Each is wrapped with a message that names what was wrong.
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = store.ErrNotFound
	ErrAlreadyExists      = errors.New("already exists")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrResourceExhausted  = errors.New("resource exhausted")
)

// Config configures an Engine.
type Config struct {
	Store     store.Store
	Transport transport.Transport
	Relay     *outbox.Relay
	Logger    *slog.Logger
	// MaxPayloadBytes bounds a saga's input. Default 256 KiB.
	MaxPayloadBytes int
	// ReplyPrefetch bounds unacknowledged replies held by this instance. Default 1024.
	ReplyPrefetch int
	// ReplyBatch is the most replies applied in one transaction. Default 256.
	ReplyBatch int
	// ReplyWorkers is the number of goroutines applying reply batches. Default 1: while its
	// batch commits, replies gather for the next, so one worker gives the fewest transactions per
	// saga (measured in docs/performance.md: at 256 sagas in flight, 0.26 commits per saga with
	// one worker, 0.40 with two, 0.66 with four, and the most sagas/s with one). More workers
	// overlap the round trips of their batches, which helps when the database is far away.
	ReplyWorkers int
	// StartBatch is the most StartSaga calls written in one transaction. Default 256.
	StartBatch int
	// StartWorkers is the number of start batches written concurrently. Default 1, for the
	// same reason as ReplyWorkers.
	StartWorkers int
	// MaxPendingStarts bounds StartSaga calls waiting for a batch; beyond it StartSaga fails
	// with ResourceExhausted instead of queueing without bound. Default 4096.
	MaxPendingStarts int
	// MaxActiveSagas bounds the sagas RUNNING or COMPENSATING in the whole database: while at
	// least this many are, StartSaga fails with ResourceExhausted, so that offered load beyond
	// what the system completes is pushed back to the caller instead of piling up as sagas that
	// all finish late. Each instance counts them every ActiveCountInterval, so the bound is
	// approximate. Default 10000; negative disables it.
	MaxActiveSagas int
	// ActiveCountInterval is how often the active sagas are counted. Default 1s.
	ActiveCountInterval time.Duration
	// TimerBatch is the most due sagas claimed in one transaction. Default 256.
	TimerBatch int
	// TimerPoll is how often due timers are looked for. Default 100ms.
	TimerPoll time.Duration
	// Retention is how long finished sagas and transactions are kept; older ones are deleted in
	// batches by any instance. Negative keeps them forever. Default 168h (7 days).
	Retention time.Duration
	// RetentionInterval is how often the deletion runs. Default 1m.
	RetentionInterval time.Duration
	// TracerProvider, when set, traces sagas and transactions (see observe.go); it must use
	// telemetry.IDGenerator. Nil turns tracing off at no cost.
	TracerProvider trace.TracerProvider
	// MeterProvider, when set, records the engine's metrics (docs/observability.md). Nil turns
	// them off.
	MeterProvider metric.MeterProvider
	// BeforeCommitDecision, when set, is called in the transaction that logs a 2PC COMMIT
	// decision (the last YES vote arrived), before that transaction commits. TEST ONLY: the
	// chaos suite kills the process here (catalogue fault 11: every vote YES, no decision logged).
	BeforeCommitDecision func(txID uuid.UUID)
}

// WithDefaults returns c with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = 256 << 10
	}
	if c.ReplyPrefetch == 0 {
		c.ReplyPrefetch = 1024
	}
	if c.ReplyBatch == 0 {
		c.ReplyBatch = 256
	}
	if c.ReplyWorkers == 0 {
		c.ReplyWorkers = 1
	}
	if c.StartBatch == 0 {
		c.StartBatch = 256
	}
	if c.StartWorkers == 0 {
		c.StartWorkers = 1
	}
	if c.MaxPendingStarts == 0 {
		c.MaxPendingStarts = 4096
	}
	if c.TimerBatch == 0 {
		c.TimerBatch = 256
	}
	if c.MaxActiveSagas == 0 {
		c.MaxActiveSagas = 10_000
	}
	if c.ActiveCountInterval == 0 {
		c.ActiveCountInterval = time.Second
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.RetentionInterval == 0 {
		c.RetentionInterval = time.Minute
	}
	if c.TimerPoll == 0 {
		c.TimerPoll = 100 * time.Millisecond
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("engine: Store is required")
	case c.Transport == nil:
		return errors.New("engine: Transport is required")
	case c.Relay == nil:
		return errors.New("engine: Relay is required")
	}
	return nil
}

// Engine runs sagas. Create it with New, then Start it; Stop is idempotent.
type Engine struct {
	cfg Config
	log *slog.Logger
	obs *observer
	// gauges reads the database for the gauges; unregistered by Stop.
	gauges metric.Registration

	machines sync.Map // defKey -> *saga.Machine; definitions are immutable
	latest   sync.Map // name -> latestVersion
	// knownParticipants caches participants whose queue exists (queues are durable).
	knownParticipants sync.Map

	starts chan *startCall
	kick   chan time.Time // to the timer loop: a timer falls due at this local time
	// active is the last count of RUNNING and COMPENSATING sagas (admission control).
	active atomic.Int64

	group lifecycle.Group
}

type defKey struct {
	name    string
	version int
}

// New returns an engine.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	obs, err := newObserver(cfg.Logger, cfg.TracerProvider, cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("engine metrics: %w", err)
	}
	return &Engine{cfg: cfg, log: cfg.Logger, obs: obs, starts: make(chan *startCall, cfg.MaxPendingStarts), kick: make(chan time.Time, 16)}, nil
}

// Start declares the broker topology, declares the queues of every known participant and starts
// the reply consumers and the timer loop.
func (e *Engine) Start(ctx context.Context) error {
	if err := e.cfg.Transport.DeclareTopology(ctx); err != nil {
		return fmt.Errorf("declare broker topology: %w", err)
	}
	defs, err := e.cfg.Store.ListDefinitions(ctx)
	if err != nil {
		return err
	}
	for _, d := range defs {
		if err := e.declareParticipants(ctx, d); err != nil {
			return err
		}
	}
	ctx, err = e.group.Start(ctx)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	// The consumer ends with the group, so Stop also stops taking replies.
	deliveries, err := e.cfg.Transport.Consume(ctx, protocol.QueueReplies, e.cfg.ReplyPrefetch)
	if err != nil {
		e.group.Stop()
		return fmt.Errorf("consume replies: %w", err)
	}
	if e.cfg.MeterProvider != nil {
		if e.gauges, err = registerGauges(e.cfg.MeterProvider, e.cfg.Store, e.log); err != nil {
			e.group.Stop()
			return fmt.Errorf("engine gauges: %w", err)
		}
	}
	for range e.cfg.ReplyWorkers {
		e.group.Go(func() { e.consumeReplies(ctx, deliveries) })
	}
	for range e.cfg.StartWorkers {
		e.group.Go(func() { e.startLoop(ctx) })
	}
	e.group.Go(func() { e.timerLoop(ctx) })
	if e.cfg.MaxActiveSagas > 0 {
		e.group.Go(func() { e.countActiveLoop(ctx) })
	}
	if e.cfg.Retention > 0 {
		e.group.Go(func() { e.retentionLoop(ctx) })
	}
	return nil
}

// Stop stops consuming and waits for in-flight batches to finish. Unacknowledged replies are
// redelivered to another instance.
func (e *Engine) Stop() {
	if !e.group.Stop() {
		return
	}
	if e.gauges != nil {
		_ = e.gauges.Unregister()
	}
}

func (e *Engine) declareParticipants(ctx context.Context, d saga.Definition) error {
	seen := map[string]bool{}
	for _, s := range d.Steps {
		if seen[s.Participant] {
			continue
		}
		seen[s.Participant] = true
		if err := e.cfg.Transport.DeclareParticipant(ctx, s.Participant); err != nil {
			return fmt.Errorf("declare queue of participant %q: %w", s.Participant, err)
		}
	}
	return nil
}

// machine returns the machine of a definition version, loading each version once (versions are
// immutable). Version 0 means the latest, which another instance may change at any time: it is
// remembered for latestTTL only.
func (e *Engine) machine(ctx context.Context, name string, version int) (*saga.Machine, error) {
	if version == 0 {
		if l, ok := e.latest.Load(name); ok && time.Since(l.(latestVersion).at) < latestTTL {
			version = l.(latestVersion).version
		}
	}
	if version > 0 {
		if m, ok := e.machines.Load(defKey{name, version}); ok {
			return m.(*saga.Machine), nil
		}
	}
	def, err := e.cfg.Store.GetDefinition(ctx, name, version)
	if err != nil {
		return nil, err
	}
	if version == 0 {
		e.latest.Store(name, latestVersion{version: def.Version, at: time.Now()})
	}
	m, _ := e.machines.LoadOrStore(defKey{name, def.Version}, saga.NewMachine(&def))
	return m.(*saga.Machine), nil
}

// latestTTL bounds how long StartSaga without a version may keep using a version after a newer
// one was registered on another instance.
const latestTTL = time.Second

type latestVersion struct {
	version int
	at      time.Time
}

// RegisterDefinition validates and stores a definition and declares its participants' queues,
// so that commands wait in a durable queue even before a worker starts.
func (e *Engine) RegisterDefinition(ctx context.Context, def saga.Definition) (saga.Definition, bool, error) {
	n, err := saga.Normalize(def)
	if err != nil {
		return saga.Definition{}, false, fmt.Errorf("%w: definition: %w", ErrInvalidArgument, err)
	}
	if err := e.declareParticipants(ctx, n); err != nil {
		return saga.Definition{}, false, err
	}
	stored, created, err := e.cfg.Store.RegisterDefinition(ctx, n)
	if err == nil {
		e.latest.Delete(n.Name)
	}
	return stored, created, err
}

// StartRequest asks for a saga to start.
type StartRequest struct {
	// ID makes the call idempotent; uuid.Nil means pick one.
	ID                uuid.UUID
	Definition        string
	DefinitionVersion int
	Input             json.RawMessage
	// Deadline overrides the definition's default when positive.
	Deadline time.Duration
}

func (r StartRequest) hash() string {
	h := sha256.New()
	h.Write([]byte(r.Definition))
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(r.DefinitionVersion))
	binary.BigEndian.PutUint64(b[8:], uint64(r.Deadline))
	h.Write(b[:])
	h.Write(r.Input)
	return hex.EncodeToString(h.Sum(nil))
}

// StartSaga starts a saga, or returns the existing one when a saga with the same id was started
// with the same request (created false). A different request with the same id is
// ErrAlreadyExists.
func (e *Engine) StartSaga(ctx context.Context, req StartRequest) (*store.Saga, bool, error) {
	if req.Definition == "" {
		return nil, false, fmt.Errorf("%w: definition: must not be empty", ErrInvalidArgument)
	}
	if len(req.Input) > e.cfg.MaxPayloadBytes {
		return nil, false, fmt.Errorf("%w: input: %d bytes exceeds the limit of %d bytes", ErrResourceExhausted, len(req.Input), e.cfg.MaxPayloadBytes)
	}
	if len(req.Input) == 0 {
		req.Input = json.RawMessage("null")
	}
	if !json.Valid(req.Input) {
		return nil, false, fmt.Errorf("%w: input: not valid JSON", ErrInvalidArgument)
	}
	if req.Deadline < 0 {
		return nil, false, fmt.Errorf("%w: deadline: must not be negative", ErrInvalidArgument)
	}
	if req.ID == uuid.Nil {
		req.ID = uuid.New()
	}
	if limit := e.cfg.MaxActiveSagas; limit > 0 {
		if n := e.active.Load(); n >= int64(limit) {
			return nil, false, fmt.Errorf("%w: %d sagas are running or compensating, the limit is %d (MaxActiveSagas); retry with the same saga_id when some have finished", ErrResourceExhausted, n, limit)
		}
	}
	m, err := e.machine(ctx, req.Definition, req.DefinitionVersion)
	if err != nil {
		return nil, false, err
	}
	def := m.Definition()
	hash := req.hash()
	tp, endSpan := e.obs.traceparent(ctx, "sagacoord.StartSaga")
	defer endSpan()
	r := &startCall{
		ns: store.NewSaga{ID: req.ID, Build: func(now time.Time) (store.Change, error) {
			var deadline time.Time
			if d := req.Deadline; d > 0 {
				deadline = now.Add(d)
			} else if def.Deadline > 0 {
				deadline = now.Add(def.Deadline)
			}
			st, cmds := m.New(req.ID.String(), req.Input, deadline, now)
			st.Trace = tp
			sg := &store.Saga{ID: req.ID, DefinitionName: def.Name, DefinitionVersion: def.Version, State: st, RequestHash: hash}
			return e.change(m, sg, cmds, now)
		}},
		done: make(chan struct{}),
	}
	select {
	case e.starts <- r:
	default:
		return nil, false, fmt.Errorf("%w: %d sagas are waiting to start on this coordinator; retry with the same saga_id after a short wait", ErrResourceExhausted, cap(e.starts))
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		// The saga may still start; a retry with the same id returns it.
		return nil, false, ctx.Err()
	}
	if r.err != nil {
		return nil, false, r.err
	}
	sg, created := r.res.Saga, r.res.Created
	if !created && sg.RequestHash != hash {
		return nil, false, fmt.Errorf("%w: saga %s was started with a different request (definition, version, input or deadline); use a new saga_id", ErrAlreadyExists, req.ID)
	}
	return sg, created, nil
}

// startCall is one StartSaga waiting for its batch.
type startCall struct {
	ns   store.NewSaga
	done chan struct{}
	res  store.Created
	err  error
}

// startLoop writes StartSaga calls in batches: while one batch commits, the next accumulates, so
// concurrent starts share a transaction (group commit) without waiting for a timer.
func (e *Engine) startLoop(ctx context.Context) {
	batch := make([]*startCall, 0, e.cfg.StartBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			e.failPendingStarts(ctx.Err())
			return
		case r := <-e.starts:
			batch = append(batch, r)
		}
	fill:
		for len(batch) < e.cfg.StartBatch {
			select {
			case r := <-e.starts:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		news := make([]store.NewSaga, len(batch))
		for i, r := range batch {
			news[i] = r.ns
		}
		results, rows, err := e.cfg.Store.CreateSagas(ctx, news)
		if err == nil {
			e.cfg.Relay.Enqueue(rows)
			for _, res := range results {
				if res.Created {
					e.obs.started(ctx, res.Saga)
				}
			}
		}
		for i, r := range batch {
			if err != nil {
				r.err = err
			} else {
				r.res, r.err = results[i], results[i].Err
			}
			close(r.done)
		}
	}
}

func (e *Engine) failPendingStarts(err error) {
	for {
		select {
		case r := <-e.starts:
			r.err = err
			close(r.done)
		default:
			return
		}
	}
}

// GetSaga returns a saga.
func (e *Engine) GetSaga(ctx context.Context, id uuid.UUID) (*store.Saga, error) {
	return e.cfg.Store.GetSaga(ctx, id)
}

// AbortSaga starts compensation of a RUNNING saga.
func (e *Engine) AbortSaga(ctx context.Context, id uuid.UUID, reason string) (*store.Saga, error) {
	return e.operate(ctx, id, func(m *saga.Machine, st *saga.State, now time.Time) ([]saga.Command, error) {
		return m.Abort(st, reason, now)
	})
}

// RetrySaga resumes a FAILED saga.
func (e *Engine) RetrySaga(ctx context.Context, id uuid.UUID) (*store.Saga, error) {
	return e.operate(ctx, id, func(m *saga.Machine, st *saga.State, now time.Time) ([]saga.Command, error) {
		return m.Retry(st, now)
	})
}

func (e *Engine) operate(ctx context.Context, id uuid.UUID, op func(*saga.Machine, *saga.State, time.Time) ([]saga.Command, error)) (*store.Saga, error) {
	var (
		result *store.Saga
		ev     sagaEvents
	)
	found := false
	rows, err := e.cfg.Store.Mutate(ctx, []uuid.UUID{id}, func(now time.Time, sagas []*store.Saga) ([]store.Change, error) {
		ev.reset()
		sg := sagas[0]
		found, result = true, sg
		m, err := e.machine(ctx, sg.DefinitionName, sg.DefinitionVersion)
		if err != nil {
			return nil, err
		}
		mark := len(sg.State.History)
		cmds, err := op(m, sg.State, now)
		e.obs.statuses(&ev, sg, mark)
		if err != nil {
			return nil, fmt.Errorf("%w: saga %s: %w", ErrFailedPrecondition, id, err)
		}
		c, err := e.change(m, sg, cmds, now)
		if err != nil {
			return nil, err
		}
		return []store.Change{c}, nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("saga %s: %w", id, ErrNotFound)
	}
	e.cfg.Relay.Enqueue(rows)
	e.obs.emit(ctx, &ev)
	return result, nil
}

// wakeSoon kicks the timer loop when a timer falls due before its next poll. It may be called
// from a transaction that then rolls back: a spurious wake-up only finds nothing due.
func (e *Engine) wakeSoon(at, now time.Time) {
	if at.IsZero() || at.Sub(now) >= e.cfg.TimerPoll {
		return
	}
	select {
	case e.kick <- time.Now().Add(at.Sub(now)):
	default:
	}
}

// change records the derived columns of a saga after the machine ran and builds its messages.
func (e *Engine) change(m *saga.Machine, sg *store.Saga, cmds []saga.Command, now time.Time) (store.Change, error) {
	wake := m.WakeAt(sg.State)
	// Keep an earlier wake-up that is still ahead rather than move it later: the saga, woken
	// early, finds nothing due and the timer loop writes its real wake_at then (it always
	// rewrites it). Moving wake_at at every step would change an indexed column in every update
	// and deny PostgreSQL the HOT update, with no index writes, that a step transition otherwise
	// gets (migration 005 leaves room on each page for it).
	if !wake.IsZero() && sg.WakeAt.After(now) && sg.WakeAt.Before(wake) {
		wake = sg.WakeAt
	}
	sg.WakeAt = wake
	e.wakeSoon(sg.WakeAt, now)
	if sg.State.Status.Terminal() && sg.FinishedAt.IsZero() {
		sg.FinishedAt = now
	}
	msgs := make([]transport.Outgoing, 0, len(cmds))
	for _, c := range cmds {
		msg, err := e.command(m, sg.State, c)
		if err != nil {
			return store.Change{}, err
		}
		msgs = append(msgs, msg)
	}
	return store.Change{Row: sg, Messages: msgs}, nil
}

// command builds the message of one step command: the saga input and the outputs of the steps
// it depends on for an action; the output of the action it undoes for a compensation.
func (e *Engine) command(m *saga.Machine, st *saga.State, c saga.Command) (transport.Outgoing, error) {
	def := m.Definition()
	sd := def.Steps[c.StepIndex]
	cmd := protocol.StepCommand{
		SagaID:      st.ID,
		Step:        sd.Name,
		StepIndex:   c.StepIndex,
		Kind:        c.Kind,
		Participant: sd.Participant,
		Action:      sd.Action,
		Attempt:     c.Attempt,
		Input:       st.Input,
		// The attempt's timer runs for the step's timeout (saga.Machine); the participant may
		// stop its handler after as long.
		TimeoutMillis: sd.Timeout.Milliseconds(),
	}
	if c.Kind == saga.KindCompensate {
		cmd.Action = sd.Compensation
		cmd.Output = st.Steps[c.StepIndex].Output
	} else if deps := m.Graph().Deps[c.StepIndex]; len(deps) > 0 {
		cmd.Deps = make(map[string]json.RawMessage, len(deps))
		for _, d := range deps {
			cmd.Deps[def.Steps[d].Name] = st.Steps[d].Output
		}
	}
	msg, err := cmd.Encode()
	if err != nil {
		return transport.Outgoing{}, fmt.Errorf("encode command for saga %s step %q: %w", st.ID, sd.Name, err)
	}
	if st.Trace != "" {
		// The participant's span becomes a child of this attempt's span, which the instance
		// that sees the attempt end emits with this id.
		if tp := telemetry.ChildTraceparent(st.Trace, attemptSpanID(st.ID, c.StepIndex, c.Kind, c.Attempt)); tp != "" {
			msg.Headers[protocol.HeaderTraceparent] = tp
		}
	}
	return transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: sd.Participant, Message: msg}, nil
}

// consumeReplies applies replies in batches: each batch in one transaction, acknowledged after
// the commit.
func (e *Engine) consumeReplies(ctx context.Context, deliveries <-chan *transport.Delivery) {
	batch := make([]*transport.Delivery, 0, e.cfg.ReplyBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			batch = append(batch, d)
		}
		batch = transport.TakeWaiting(deliveries, batch, e.cfg.ReplyBatch)
		e.applyReplies(ctx, batch)
	}
}

type pendingReply struct {
	d     *transport.Delivery
	reply *protocol.SagaReply
	id    uuid.UUID
}

// classify decodes a delivery on the reply queue: a saga reply, a transaction reply or a
// decision query. An error wraps protocol.ErrMalformed: the delivery is dead-lettered.
func classify(d *transport.Delivery) (*pendingReply, *txEvent, error) {
	parseID := func(what, s string) (uuid.UUID, error) {
		id, err := uuid.Parse(s)
		if err != nil {
			return uuid.Nil, fmt.Errorf("%w: %s id %q: %v", protocol.ErrMalformed, what, s, err)
		}
		return id, nil
	}
	switch {
	case d.Type == protocol.TypeDecisionQuery:
		q, err := protocol.DecodeTxQuery(d.Message)
		if err != nil {
			return nil, nil, err
		}
		id, err := parseID("transaction", q.TxID)
		if err != nil {
			return nil, nil, err
		}
		return nil, &txEvent{d: d, id: id, query: q}, nil
	case strings.HasPrefix(d.CorrelationID, "tx:"):
		r, err := protocol.DecodeTxReply(d.Message)
		if err != nil {
			return nil, nil, err
		}
		id, err := parseID("transaction", r.TxID)
		if err != nil {
			return nil, nil, err
		}
		return nil, &txEvent{d: d, id: id, reply: r}, nil
	default:
		r, err := protocol.DecodeSagaReply(d.Message)
		if err != nil {
			return nil, nil, err
		}
		id, err := parseID("saga", r.SagaID)
		if err != nil {
			return nil, nil, err
		}
		return &pendingReply{d: d, reply: r, id: id}, nil, nil
	}
}

func (e *Engine) applyReplies(ctx context.Context, batch []*transport.Delivery) {
	var (
		valid []pendingReply
		txs   []txEvent
		ids   []uuid.UUID
		seen  = map[uuid.UUID]bool{}
	)
	for _, d := range batch {
		e.obs.received(ctx, d.Redelivered)
		p, tev, err := classify(d)
		if err != nil {
			e.log.Warn("dead-lettering malformed message on the reply queue", "message_id", d.MessageID, "type", d.Type, "correlation_id", d.CorrelationID, "err", err)
			e.obs.deadLettered(ctx, "malformed")
			e.settle(d.Reject, d)
			continue
		}
		if tev != nil {
			txs = append(txs, *tev)
			continue
		}
		valid = append(valid, *p)
		if !seen[p.id] {
			seen[p.id] = true
			ids = append(ids, p.id)
		}
	}
	e.applyTxEvents(ctx, txs)
	if len(valid) == 0 {
		return
	}
	found := map[uuid.UUID]bool{}
	// invalid holds the replies that name a step their saga's definition does not have:
	// garbage, dead-lettered rather than acknowledged as stale.
	invalid := map[*transport.Delivery]string{}
	var ev sagaEvents
	rows, err := e.cfg.Store.Mutate(ctx, ids, func(now time.Time, sagas []*store.Saga) ([]store.Change, error) {
		clear(found)
		clear(invalid)
		ev.reset()
		byID := make(map[uuid.UUID]*store.Saga, len(sagas))
		marks := make(map[uuid.UUID]int, len(sagas))
		for _, sg := range sagas {
			byID[sg.ID] = sg
			found[sg.ID] = true
			marks[sg.ID] = len(sg.State.History)
		}
		changed := map[uuid.UUID][]saga.Command{}
		var order []uuid.UUID
		for _, p := range valid {
			sg := byID[p.id]
			if sg == nil {
				continue
			}
			m, err := e.machine(ctx, sg.DefinitionName, sg.DefinitionVersion)
			if err != nil {
				return nil, err
			}
			if n := len(m.Definition().Steps); p.reply.StepIndex >= n {
				invalid[p.d] = fmt.Sprintf("step_index %d is out of range: definition %s version %d has %d steps", p.reply.StepIndex, sg.DefinitionName, sg.DefinitionVersion, n)
				continue
			}
			r := saga.Reply{
				StepIndex: p.reply.StepIndex, Kind: p.reply.Kind, Attempt: p.reply.Attempt,
				Outcome: p.reply.Outcome, Output: p.reply.Output, Error: p.reply.Error,
			}
			e.obs.before(&ev, m, sg)
			cmds, ok := m.ApplyReply(sg.State, r, now)
			if !ok {
				continue
			}
			e.obs.after(&ev, m, sg, &r, now)
			if _, dup := changed[p.id]; !dup {
				order = append(order, p.id)
			}
			changed[p.id] = append(changed[p.id], cmds...)
		}
		changes := make([]store.Change, 0, len(order))
		for _, id := range order {
			sg := byID[id]
			e.obs.statuses(&ev, sg, marks[id])
			m, _ := e.machine(ctx, sg.DefinitionName, sg.DefinitionVersion)
			c, err := e.change(m, sg, changed[id], now)
			if err != nil {
				return nil, err
			}
			changes = append(changes, c)
		}
		return changes, nil
	})
	if errors.Is(err, store.ErrInvalidData) {
		// One reply holds a value the database refuses. Apply them one by one, so that only
		// that one is dead-lettered and the others are not held back with it.
		if len(valid) > 1 {
			for _, p := range valid {
				e.applyReplies(ctx, []*transport.Delivery{p.d})
			}
			return
		}
		e.log.Warn("dead-lettering a reply the database refuses", "saga_id", valid[0].id, "message_id", valid[0].d.MessageID, "err", err)
		e.obs.deadLettered(ctx, "invalid_data")
		e.settle(valid[0].d.Reject, valid[0].d)
		return
	}
	if err != nil {
		e.log.Error("apply replies; they will be redelivered", "replies", len(valid), "err", err)
		e.backoff(ctx)
		for _, p := range valid {
			e.settle(p.d.Requeue, p.d)
		}
		return
	}
	e.cfg.Relay.Enqueue(rows)
	e.obs.emit(ctx, &ev)
	for _, p := range valid {
		if !found[p.id] {
			e.log.Warn("dead-lettering reply for unknown saga", "saga_id", p.id, "message_id", p.d.MessageID)
			e.obs.deadLettered(ctx, "unknown_saga")
			e.settle(p.d.Reject, p.d)
			continue
		}
		if why, bad := invalid[p.d]; bad {
			e.log.Warn("dead-lettering reply for a step the saga does not have", "saga_id", p.id, "message_id", p.d.MessageID, "err", why)
			e.obs.deadLettered(ctx, "invalid_step")
			e.settle(p.d.Reject, p.d)
			continue
		}
		e.settle(p.d.Ack, p.d)
	}
}

// backoff waits a little before replies are requeued after a database error, so that an outage
// does not spin them through the broker (on quorum queues each requeue counts towards the
// delivery limit).
func (e *Engine) backoff(ctx context.Context) {
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (e *Engine) settle(f func() error, d *transport.Delivery) {
	if err := f(); err != nil {
		// A stale delivery is redelivered by the broker; applying it again changes nothing.
		e.log.Debug("settle delivery", "message_id", d.MessageID, "err", err)
	}
}

// countActiveLoop counts the active sagas for admission control. When the count fails, the last
// one stands: a database outage fails StartSaga on its own.
func (e *Engine) countActiveLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.ActiveCountInterval)
	defer t.Stop()
	for {
		st, err := e.cfg.Store.Stats(ctx)
		if err == nil {
			e.active.Store(int64(st.Sagas[saga.StatusRunning].Count + st.Sagas[saga.StatusCompensating].Count))
		} else if ctx.Err() == nil {
			e.log.Warn("count active sagas for admission control", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// retentionLoop deletes finished sagas and transactions older than the retention, a batch at a
// time, so that no transaction holds many row locks or runs long.
func (e *Engine) retentionLoop(ctx context.Context) {
	const batch = 1000
	t := time.NewTicker(e.cfg.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			n, err := e.cfg.Store.DeleteFinished(ctx, e.cfg.Retention, batch)
			if err != nil {
				if ctx.Err() == nil {
					e.log.Error("delete finished sagas", "err", err)
				}
				break
			}
			if n > 0 {
				e.log.Debug("deleted finished sagas and transactions", "count", n, "older_than", e.cfg.Retention)
			}
			if n < batch {
				break
			}
		}
	}
}

// timerLoop fires due timers (timeouts, backoffs, deadlines) of any saga, claiming them with
// SKIP LOCKED so that instances share the work.
//
// Polling is the fallback. A timer set by this instance that falls due before the next poll
// (a short retry backoff, say) kicks the loop to run at that time instead; the instance that set a
// timer is alive to fire it, and if it dies, every other instance's poll picks it up.
func (e *Engine) timerLoop(ctx context.Context) {
	t := time.NewTimer(e.cfg.TimerPoll)
	defer t.Stop()
	next := time.Now().Add(e.cfg.TimerPoll)
	for {
		select {
		case <-ctx.Done():
			return
		case at := <-e.kick:
			// A little late rather than early: the database's clock decides what is due.
			at = at.Add(2 * time.Millisecond)
			if at.Before(next) {
				next = at
				t.Reset(max(time.Until(next), 0))
			}
			continue
		case <-t.C:
		}
		next = time.Now().Add(e.cfg.TimerPoll)
		t.Reset(e.cfg.TimerPoll)
		for ctx.Err() == nil {
			n, err := e.fireTxTimers(ctx)
			if err != nil {
				if ctx.Err() == nil {
					e.log.Error("fire transaction timers", "err", err)
				}
				break
			}
			if n == e.cfg.TimerBatch {
				continue
			}
			break
		}
		var ev sagaEvents
		for ctx.Err() == nil {
			n, rows, err := e.cfg.Store.MutateDue(ctx, e.cfg.TimerBatch, func(now time.Time, sagas []*store.Saga) ([]store.Change, error) {
				ev.reset()
				changes := make([]store.Change, 0, len(sagas))
				for _, sg := range sagas {
					m, err := e.machine(ctx, sg.DefinitionName, sg.DefinitionVersion)
					if err != nil {
						return nil, err
					}
					mark := len(sg.State.History)
					e.obs.before(&ev, m, sg)
					cmds, _ := m.Tick(sg.State, now)
					e.obs.after(&ev, m, sg, nil, now)
					e.obs.statuses(&ev, sg, mark)
					// Always write: even an unchanged saga needs its wake_at recomputed.
					c, err := e.change(m, sg, cmds, now)
					if err != nil {
						return nil, err
					}
					changes = append(changes, c)
				}
				return changes, nil
			})
			if err != nil {
				if ctx.Err() == nil {
					e.log.Error("fire timers", "err", err)
				}
				break
			}
			e.cfg.Relay.Enqueue(rows)
			e.obs.emit(ctx, &ev)
			if n < e.cfg.TimerBatch {
				break
			}
		}
	}
}

// Definition returns a definition version (the latest when version is 0).
func (e *Engine) Definition(ctx context.Context, name string, version int) (*saga.Definition, error) {
	m, err := e.machine(ctx, name, version)
	if err != nil {
		return nil, err
	}
	return m.Definition(), nil
}

// Store returns the engine's store, for read-only queries.
func (e *Engine) Store() store.Store { return e.cfg.Store }
