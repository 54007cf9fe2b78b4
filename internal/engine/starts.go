package engine

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
)

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

func (e *Engine) checkStart(req *StartRequest) error {
	if err := protocol.CheckName(req.Definition); err != nil {
		return fmt.Errorf("%w: definition: %w", ErrInvalidArgument, err)
	}
	if req.DefinitionVersion < 0 {
		return fmt.Errorf("%w: definition_version: is %d; it must be 0 (the latest) or a version", ErrInvalidArgument, req.DefinitionVersion)
	}
	if len(req.Input) > e.cfg.MaxPayloadBytes {
		return fmt.Errorf("%w: input: %d bytes exceeds the limit of %d bytes", ErrResourceExhausted, len(req.Input), e.cfg.MaxPayloadBytes)
	}
	if len(req.Input) == 0 {
		req.Input = json.RawMessage("null")
	}
	// What a worker's decoder refuses (protocol.CheckJSON) would park the saga in FAILED.
	if err := protocol.CheckJSON(req.Input); err != nil {
		return fmt.Errorf("%w: input: %w", ErrInvalidArgument, err)
	}
	if req.Deadline < 0 || req.Deadline > saga.MaxDeadline {
		return fmt.Errorf("%w: deadline: is %s; it must be between 0 (the definition's) and %s", ErrInvalidArgument, req.Deadline, saga.MaxDeadline)
	}
	if limit := e.cfg.MaxActiveSagas; limit > 0 {
		if n := e.active.Active(); n >= int64(limit) {
			return fmt.Errorf("%w: %d sagas are running or compensating, the limit is %d (MaxActiveSagas); retry with the same saga_id when some have finished", ErrResourceExhausted, n, limit)
		}
	}
	return nil
}

// StartSaga starts a saga, or returns the existing one when a saga with the same id was started
// with the same request (created false). A different request with the same id is
// ErrAlreadyExists.
func (e *Engine) StartSaga(ctx context.Context, req StartRequest) (*store.Saga, bool, error) {
	if err := e.checkStart(&req); err != nil {
		return nil, false, err
	}
	if req.ID == uuid.Nil {
		req.ID = uuid.New()
	}
	m, err := e.defs.machine(ctx, req.Definition, req.DefinitionVersion)
	if err != nil {
		return nil, false, err
	}
	def := m.Definition()
	hash := req.hash()
	tp, endSpan := e.obs.traceparent(ctx, "sagacoord.StartSaga")
	defer endSpan()
	call := &startCall{done: make(chan struct{})}
	call.ns = store.NewSaga{ID: req.ID, Build: func(now time.Time) (store.Change, error) {
		deadline := def.Deadline
		if req.Deadline > 0 {
			deadline = req.Deadline
		}
		var at time.Time
		if deadline > 0 {
			at = now.Add(deadline)
		}
		st, fx := m.Start(req.ID.String(), req.Input, at, now)
		st.Trace = tp
		sg := &store.Saga{ID: req.ID, DefinitionName: def.Name, DefinitionVersion: def.Version, State: st, RequestHash: hash}
		msgs, err := e.sagaCommands(m, st, fx.Commands)
		if err != nil {
			return store.Change{}, err
		}
		e.settleSaga(sg, now)
		call.observe = e.obs.sagaObserver(sg, def, fx.Events)
		return store.Change{Row: sg, Messages: msgs}, nil
	}}
	select {
	case e.starts <- call:
	default:
		return nil, false, fmt.Errorf("%w: %d sagas are waiting to start on this coordinator; retry with the same saga_id after a short wait", ErrResourceExhausted, cap(e.starts))
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		// The saga may still start; a retry with the same id returns it.
		return nil, false, ctx.Err()
	}
	if call.err != nil {
		return nil, false, call.err
	}
	sg, created := call.res.Saga, call.res.Created
	if !created && sg.RequestHash != hash {
		return nil, false, fmt.Errorf("%w: saga %s was started with a different request (definition, version, input or deadline); use a new saga_id", ErrAlreadyExists, req.ID)
	}
	return sg, created, nil
}

// startCall is one StartSaga waiting for its batch.
type startCall struct {
	ns      store.NewSaga
	observe func(context.Context) // set by Build
	done    chan struct{}
	res     store.Created
	err     error
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
		e.writeStarts(ctx, transport.TakeWaiting(e.starts, batch, e.cfg.StartBatch))
	}
}

// writeStarts creates a batch of sagas in one transaction and answers each call.
func (e *Engine) writeStarts(ctx context.Context, batch []*startCall) {
	news := make([]store.NewSaga, len(batch))
	for i, r := range batch {
		news[i] = r.ns
	}
	results, rows, err := e.cfg.Store.CreateSagas(ctx, news)
	if err == nil {
		e.cfg.Relay.Enqueue(rows)
	}
	for i, r := range batch {
		if err != nil {
			r.err = err
		} else {
			r.res, r.err = results[i], results[i].Err
		}
		if r.err == nil && r.res.Created && r.observe != nil {
			r.observe(ctx)
		}
		close(r.done)
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
