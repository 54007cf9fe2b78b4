package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/twopc"
)

// BeginRequest asks for a two-phase-commit transaction.
type BeginRequest struct {
	// ID makes the call idempotent; uuid.Nil means pick one.
	ID           uuid.UUID
	Participants []twopc.Participant
	// PrepareTimeout is how long votes are awaited before the transaction aborts; 0 means the
	// default (twopc.DefaultPrepareTimeout).
	PrepareTimeout time.Duration
}

func (r BeginRequest) hash() string {
	b, _ := json.Marshal(struct {
		P []twopc.Participant
		T time.Duration
	}{r.Participants, r.PrepareTimeout})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func (e *Engine) checkBegin(ctx context.Context, req *BeginRequest) error {
	if len(req.Participants) == 0 {
		return fmt.Errorf("%w: participants: a transaction needs at least one participant", ErrInvalidArgument)
	}
	if len(req.Participants) > twopc.MaxParticipants {
		return fmt.Errorf("%w: participants: %d participants; the limit is %d", ErrInvalidArgument, len(req.Participants), twopc.MaxParticipants)
	}
	if req.PrepareTimeout < 0 || req.PrepareTimeout > time.Hour {
		return fmt.Errorf("%w: prepare_timeout: %s must be between 0 (default) and 1h", ErrInvalidArgument, req.PrepareTimeout)
	}
	total := 0
	for _, p := range req.Participants {
		total += len(p.Payload)
	}
	if total > MaxPayloadLimit {
		return fmt.Errorf("%w: participants: the payloads hold %d bytes together; the limit is %d bytes", ErrResourceExhausted, total, MaxPayloadLimit)
	}
	seen := map[string]int{}
	for i, p := range req.Participants {
		if err := e.checkParticipant(ctx, fmt.Sprintf("participants[%d]", i), p, seen); err != nil {
			return err
		}
		seen[p.Name] = i
		if len(p.Payload) == 0 {
			req.Participants[i].Payload = json.RawMessage("null")
		}
	}
	return nil
}

// checkParticipant checks one participant of a BeginRequest; seen holds the names before it.
func (e *Engine) checkParticipant(ctx context.Context, field string, p twopc.Participant, seen map[string]int) error {
	if err := protocol.CheckName(p.Name); err != nil {
		return fmt.Errorf("%w: %s.name: %w", ErrInvalidArgument, field, err)
	}
	if j, dup := seen[p.Name]; dup {
		return fmt.Errorf("%w: %s.name: %q is already participants[%d]; names must be unique", ErrInvalidArgument, field, p.Name, j)
	}
	if len(p.Payload) > e.cfg.MaxPayloadBytes {
		return fmt.Errorf("%w: %s.payload: %d bytes exceeds the limit of %d bytes", ErrResourceExhausted, field, len(p.Payload), e.cfg.MaxPayloadBytes)
	}
	if err := protocol.CheckJSON(p.Payload); err != nil {
		return fmt.Errorf("%w: %s.payload: %w", ErrInvalidArgument, field, err)
	}
	known, err := e.participantKnown(ctx, p.Name)
	if err != nil {
		return err
	}
	if !known {
		return fmt.Errorf("%w: %s.name: unknown participant %q: no queue %s exists (start its worker, or name it in a saga definition, first)", ErrInvalidArgument, field, p.Name, protocol.ParticipantQueue(p.Name))
	}
	return nil
}

// BeginTransaction starts a transaction: it logs it in PREPARING and sends PREPARE to every
// participant. It is idempotent on the id like StartSaga.
func (e *Engine) BeginTransaction(ctx context.Context, req BeginRequest) (*store.Tx, bool, error) {
	if err := e.checkBegin(ctx, &req); err != nil {
		return nil, false, err
	}
	if req.ID == uuid.Nil {
		req.ID = uuid.New()
	}
	hash := req.hash()
	tp, endSpan := e.obs.traceparent(ctx, "sagacoord.BeginTransaction")
	defer endSpan()
	var observe func(context.Context)
	t, created, rows, err := e.cfg.Store.CreateTx(ctx, req.ID, func(now time.Time) (store.TxChange, error) {
		parts := append([]twopc.Participant(nil), req.Participants...)
		tx, fx := machine2PC.Begin(req.ID.String(), parts, req.PrepareTimeout, now)
		tx.Trace = tp
		return e.newTx(&store.Tx{ID: req.ID, Tx: tx, RequestHash: hash}, fx, now, &observe)
	})
	if err != nil {
		return nil, false, err
	}
	if !created {
		if t.RequestHash != hash {
			return nil, false, fmt.Errorf("%w: transaction %s was begun with a different request; use a new transaction_id", ErrAlreadyExists, req.ID)
		}
		return t, false, nil
	}
	e.cfg.Relay.Enqueue(rows)
	observe(ctx)
	return t, true, nil
}

// newTx is the change that creates t with what its first call decided.
func (e *Engine) newTx(t *store.Tx, fx twopc.Effects, now time.Time, observe *func(context.Context)) (store.TxChange, error) {
	msgs, err := txCommands(t.Tx, fx.Commands, now)
	if err != nil {
		return store.TxChange{}, err
	}
	e.settleTx(t, now)
	*observe = e.obs.txObserver(t, fx.Events)
	return store.TxChange{Row: t, Messages: msgs}, nil
}

// GetTransaction returns a transaction.
func (e *Engine) GetTransaction(ctx context.Context, id uuid.UUID) (*store.Tx, error) {
	return e.cfg.Store.GetTx(ctx, id)
}

// abortUnknown answers a participant that asked about a transaction with no record: it logs an
// ABORT for it (presumed abort), so that no COMMIT can ever follow, and sends it to the asker. If
// the transaction appeared meanwhile, the query is answered from it.
func (e *Engine) abortUnknown(ctx context.Context, id uuid.UUID, participant string) error {
	var observe func(context.Context)
	_, created, rows, err := e.cfg.Store.CreateTx(ctx, id, func(now time.Time) (store.TxChange, error) {
		tx, _ := machine2PC.Begin(id.String(), []twopc.Participant{{Name: participant}}, time.Nanosecond, now)
		fx, _ := machine2PC.Query(tx, participant, now)
		tx.Reason = fmt.Sprintf("participant %q asked about a transaction with no record: presumed abort", participant)
		return e.newTx(&store.Tx{ID: id, Tx: tx, RequestHash: "presumed-abort"}, fx, now, &observe)
	})
	if err != nil {
		return err
	}
	if created {
		// Not observed: nobody began this transaction, so it counts as neither begun nor decided.
		e.cfg.Relay.Enqueue(rows)
		return nil
	}
	_, err = applyEvents(ctx, e, e.txs, []event[*store.Tx]{e.txQuery(id, participant)})
	return err
}
