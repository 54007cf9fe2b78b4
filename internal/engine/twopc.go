package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/transport"
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

var participantName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (r BeginRequest) hash() string {
	b, _ := json.Marshal(struct {
		P []twopc.Participant
		T time.Duration
	}{r.Participants, r.PrepareTimeout})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func (e *Engine) validateBegin(ctx context.Context, req *BeginRequest) error {
	if len(req.Participants) == 0 {
		return fmt.Errorf("%w: participants: a transaction needs at least one participant", ErrInvalidArgument)
	}
	if len(req.Participants) > twopc.MaxParticipants {
		return fmt.Errorf("%w: participants: %d participants; the limit is %d", ErrInvalidArgument, len(req.Participants), twopc.MaxParticipants)
	}
	if req.PrepareTimeout < 0 || req.PrepareTimeout > time.Hour {
		return fmt.Errorf("%w: prepare_timeout: %s must be between 0 (default) and 1h", ErrInvalidArgument, req.PrepareTimeout)
	}
	seen := map[string]int{}
	for i, p := range req.Participants {
		f := fmt.Sprintf("participants[%d]", i)
		if !participantName.MatchString(p.Name) {
			return fmt.Errorf("%w: %s.name: %q must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalidArgument, f, p.Name)
		}
		if j, dup := seen[p.Name]; dup {
			return fmt.Errorf("%w: %s.name: %q is already participants[%d]; names must be unique", ErrInvalidArgument, f, p.Name, j)
		}
		seen[p.Name] = i
		if len(p.Payload) > e.cfg.MaxPayloadBytes {
			return fmt.Errorf("%w: %s.payload: %d bytes exceeds the limit of %d bytes", ErrResourceExhausted, f, len(p.Payload), e.cfg.MaxPayloadBytes)
		}
		if len(p.Payload) == 0 {
			req.Participants[i].Payload = json.RawMessage("null")
		} else if !json.Valid(p.Payload) {
			return fmt.Errorf("%w: %s.payload: not valid JSON", ErrInvalidArgument, f)
		}
		known, err := e.participantKnown(ctx, p.Name)
		if err != nil {
			return err
		}
		if !known {
			return fmt.Errorf("%w: %s.name: unknown participant %q: no queue %s exists (start its worker, or name it in a saga definition, first)", ErrInvalidArgument, f, p.Name, protocol.ParticipantQueue(p.Name))
		}
	}
	return nil
}

// participantKnown reports whether the participant's queue exists. Known participants are
// remembered: queues are durable.
func (e *Engine) participantKnown(ctx context.Context, name string) (bool, error) {
	if _, ok := e.knownParticipants.Load(name); ok {
		return true, nil
	}
	ok, err := e.cfg.Transport.ParticipantExists(ctx, name)
	if err != nil {
		return false, fmt.Errorf("look up participant %q: %w", name, err)
	}
	if ok {
		e.knownParticipants.Store(name, true)
	}
	return ok, nil
}

// BeginTransaction starts a transaction: it logs it in PREPARING and sends PREPARE to every
// participant. It is idempotent on the id like StartSaga.
func (e *Engine) BeginTransaction(ctx context.Context, req BeginRequest) (*store.Tx, bool, error) {
	if err := e.validateBegin(ctx, &req); err != nil {
		return nil, false, err
	}
	if req.ID == uuid.Nil {
		req.ID = uuid.New()
	}
	hash := req.hash()
	tp, endSpan := e.obs.traceparent(ctx, "sagacoord.BeginTransaction")
	defer endSpan()
	t, created, rows, err := e.cfg.Store.CreateTx(ctx, req.ID, func(now time.Time) (store.TxChange, error) {
		parts := append([]twopc.Participant(nil), req.Participants...)
		tx, cmds := twopc.New(req.ID.String(), parts, req.PrepareTimeout, now)
		tx.Trace = tp
		return e.txChange(&store.Tx{ID: req.ID, Tx: tx, RequestHash: hash}, cmds, now)
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
	e.obs.txBegun(ctx)
	return t, true, nil
}

// GetTransaction returns a transaction.
func (e *Engine) GetTransaction(ctx context.Context, id uuid.UUID) (*store.Tx, error) {
	return e.cfg.Store.GetTx(ctx, id)
}

func (e *Engine) txChange(t *store.Tx, cmds []twopc.Command, now time.Time) (store.TxChange, error) {
	t.WakeAt = twopc.WakeAt(t.Tx)
	e.wakeSoon(t.WakeAt, now)
	if t.Tx.State.Terminal() && t.FinishedAt.IsZero() {
		t.FinishedAt = now
	}
	msgs := make([]transport.Outgoing, 0, len(cmds))
	for _, c := range cmds {
		p := t.Tx.Participants[c.Participant]
		cmd := protocol.TxCommand{TxID: t.Tx.ID, Participant: p.Name, Kind: c.Kind, Attempt: c.Attempt, Payload: p.Payload}
		if c.Kind == twopc.KindPrepare {
			// What is left of the prepare timeout: the whole of it, since PREPAREs go out when
			// the transaction begins. The participant may vote NO after it.
			if left := t.Tx.PrepareDeadline.Sub(now); left > 0 {
				cmd.TimeoutMillis = left.Milliseconds()
			}
		}
		msg, err := cmd.Encode()
		if err != nil {
			return store.TxChange{}, fmt.Errorf("encode %s for transaction %s: %w", c.Kind, t.Tx.ID, err)
		}
		if t.Tx.Trace != "" {
			if tp := telemetry.ChildTraceparent(t.Tx.Trace, txCommandSpanID(t.Tx.ID, p.Name, c.Kind)); tp != "" {
				msg.Headers[protocol.HeaderTraceparent] = tp
			}
		}
		msgs = append(msgs, transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: p.Name, Message: msg})
	}
	return store.TxChange{Row: t, Messages: msgs}, nil
}

// txEvent is a decoded reply or decision query about a transaction.
type txEvent struct {
	d     *transport.Delivery
	id    uuid.UUID
	reply *protocol.TxReplyMessage
	query *protocol.TxQuery
}

func (ev txEvent) participant() string {
	if ev.reply != nil {
		return ev.reply.Participant
	}
	return ev.query.Participant
}

// applyTxEvents applies a batch of transaction replies and queries in one database transaction
// and acknowledges them after the commit. A query about a transaction that does not exist logs an
// ABORT for it first (presumed abort), so that no COMMIT can ever follow.
func (e *Engine) applyTxEvents(ctx context.Context, events []txEvent) {
	if len(events) == 0 {
		return
	}
	var ids []uuid.UUID
	seen := map[uuid.UUID]bool{}
	for _, ev := range events {
		if !seen[ev.id] {
			seen[ev.id] = true
			ids = append(ids, ev.id)
		}
	}
	found := map[uuid.UUID]bool{}
	var ev txEvents
	rows, err := e.cfg.Store.MutateTx(ctx, ids, func(now time.Time, txs []*store.Tx) ([]store.TxChange, error) {
		clear(found)
		ev.reset()
		byID := map[uuid.UUID]*store.Tx{}
		marks := make(map[uuid.UUID]txMark, len(txs))
		for _, t := range txs {
			byID[t.ID] = t
			found[t.ID] = true
			marks[t.ID] = markTx(t.Tx)
		}
		cmds := map[uuid.UUID][]twopc.Command{}
		var order []uuid.UUID
		for _, ev := range events {
			t := byID[ev.id]
			if t == nil {
				continue
			}
			i := t.Tx.Index(ev.participant())
			var (
				c       []twopc.Command
				changed bool
			)
			switch {
			case ev.query != nil:
				c, changed = twopc.Query(t.Tx, i, now)
			case ev.reply.Kind == twopc.KindPrepare:
				v := twopc.VoteYes
				if ev.reply.Outcome == protocol.OutcomeVoteNo {
					v = twopc.VoteNo
				}
				c, changed = twopc.ApplyVote(t.Tx, i, v, ev.reply.Error, now)
			default:
				changed = twopc.ApplyAck(t.Tx, i, ev.reply.Kind, now)
			}
			if !changed {
				continue
			}
			if _, dup := cmds[ev.id]; !dup {
				order = append(order, ev.id)
			}
			cmds[ev.id] = append(cmds[ev.id], c...)
		}
		changes := make([]store.TxChange, 0, len(order))
		for _, id := range order {
			if hook := e.cfg.BeforeCommitDecision; hook != nil && marks[id].state == twopc.StatePreparing && byID[id].Tx.State == twopc.StateCommitting {
				hook(id)
			}
			e.obs.txChanged(&ev, byID[id], marks[id], now)
			ch, err := e.txChange(byID[id], cmds[id], now)
			if err != nil {
				return nil, err
			}
			changes = append(changes, ch)
		}
		return changes, nil
	})
	if err != nil {
		e.log.Error("apply transaction replies; they will be redelivered", "messages", len(events), "err", err)
		e.backoff(ctx)
		for _, ev := range events {
			e.settle(ev.d.Requeue, ev.d)
		}
		return
	}
	e.cfg.Relay.Enqueue(rows)
	e.obs.emitTx(ctx, &ev)
	for _, ev := range events {
		if found[ev.id] {
			e.settle(ev.d.Ack, ev.d)
			continue
		}
		if ev.query == nil {
			e.log.Warn("dead-lettering reply for unknown transaction", "tx_id", ev.id, "message_id", ev.d.MessageID)
			e.obs.deadLettered(ctx, "unknown_transaction")
			e.settle(ev.d.Reject, ev.d)
			continue
		}
		if err := e.abortUnknown(ctx, ev.id, ev.query.Participant); err != nil {
			e.log.Error("log ABORT for an unknown transaction; the query will be redelivered", "tx_id", ev.id, "err", err)
			e.settle(ev.d.Requeue, ev.d)
			continue
		}
		e.settle(ev.d.Ack, ev.d)
	}
}

// abortUnknown logs an ABORT for a transaction this coordinator has no record of, and sends it to
// the participant that asked. If the transaction appears meanwhile, the query is answered from it.
func (e *Engine) abortUnknown(ctx context.Context, id uuid.UUID, participant string) error {
	_, created, rows, err := e.cfg.Store.CreateTx(ctx, id, func(now time.Time) (store.TxChange, error) {
		tx, _ := twopc.New(id.String(), []twopc.Participant{{Name: participant}}, time.Nanosecond, now)
		cmds, _ := twopc.Query(tx, 0, now)
		tx.Reason = fmt.Sprintf("participant %q asked about a transaction with no record: presumed abort", participant)
		return e.txChange(&store.Tx{ID: id, Tx: tx, RequestHash: "presumed-abort"}, cmds, now)
	})
	if err != nil {
		return err
	}
	if created {
		e.cfg.Relay.Enqueue(rows)
		return nil
	}
	var ev txEvents
	rows, err = e.cfg.Store.MutateTx(ctx, []uuid.UUID{id}, func(now time.Time, txs []*store.Tx) ([]store.TxChange, error) {
		ev.reset()
		mark := markTx(txs[0].Tx)
		cmds, changed := twopc.Query(txs[0].Tx, txs[0].Tx.Index(participant), now)
		if !changed {
			return nil, nil
		}
		e.obs.txChanged(&ev, txs[0], mark, now)
		ch, err := e.txChange(txs[0], cmds, now)
		return []store.TxChange{ch}, err
	})
	if err == nil {
		e.cfg.Relay.Enqueue(rows)
		e.obs.emitTx(ctx, &ev)
	}
	return err
}

// fireTxTimers fires due transaction timers: prepare timeouts and decision re-sends.
func (e *Engine) fireTxTimers(ctx context.Context) (int, error) {
	var ev txEvents
	n, rows, err := e.cfg.Store.MutateDueTx(ctx, e.cfg.TimerBatch, func(now time.Time, txs []*store.Tx) ([]store.TxChange, error) {
		ev.reset()
		changes := make([]store.TxChange, 0, len(txs))
		for _, t := range txs {
			mark := markTx(t.Tx)
			cmds, _ := twopc.Tick(t.Tx, now)
			e.obs.txChanged(&ev, t, mark, now)
			ch, err := e.txChange(t, cmds, now)
			if err != nil {
				return nil, err
			}
			changes = append(changes, ch)
		}
		return changes, nil
	})
	if err != nil {
		return 0, err
	}
	e.cfg.Relay.Enqueue(rows)
	e.obs.emitTx(ctx, &ev)
	return n, nil
}
