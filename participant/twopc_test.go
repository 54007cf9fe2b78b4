package participant_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// Two-phase commit through RabbitMQ, with the fake coordinator of worker_test.go.

// holds is a participant's 2PC handlers over a holds table: Prepare inserts a hold, Commit and
// Abort settle it. Each handler fails while its fail counter is positive.
type holds struct {
	prepares, commits, aborts atomic.Int32
	failPrepare               atomic.Int32
	voteNo                    atomic.Bool
}

func (h *holds) handlers() participant.TxHandlers {
	return participant.TxHandlers{
		Prepare: func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
			h.prepares.Add(1)
			if h.failPrepare.Add(-1) >= 0 {
				return errors.New("lock timeout")
			}
			if h.voteNo.Load() {
				return participant.Failf("insufficient available funds")
			}
			_, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, 'hold')`, cmd.TxID, cmd.Participant)
			return err
		},
		Commit: func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
			h.commits.Add(1)
			_, err := tx.Exec(ctx, `UPDATE effects SET kind = 'committed' WHERE gid = $1 AND kind = 'hold'`, cmd.TxID)
			return err
		},
		Abort: func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
			h.aborts.Add(1)
			_, err := tx.Exec(ctx, `DELETE FROM effects WHERE gid = $1 AND kind = 'hold'`, cmd.TxID)
			return err
		},
	}
}

func (e *env) startTx(cfg participant.Config, h participant.TxHandlers) *participant.Worker {
	e.t.Helper()
	w, err := participant.New(cfg)
	require.NoError(e.t, err)
	w.HandleTx(h)
	require.NoError(e.t, w.Migrate(e.ctx))
	require.NoError(e.t, w.Start(e.ctx))
	e.t.Cleanup(w.Stop)
	return w
}

func txCommand(id string, kind protocol.Kind, attempt int) *protocol.TxCommand {
	return &protocol.TxCommand{TxID: id, Participant: name, Kind: kind, Attempt: attempt, Payload: json.RawMessage(`{"account":"acct-1","amount":10}`)}
}

func (e *env) sendTx(cmd *protocol.TxCommand) {
	e.t.Helper()
	msg, err := cmd.Encode()
	require.NoError(e.t, err)
	msg.Headers[protocol.HeaderTraceparent] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.publish(msg)
}

// next returns the next message on the reply queue (a reply or a decision query), acked.
func (e *env) next() *transport.Delivery {
	e.t.Helper()
	select {
	case d, ok := <-e.replies:
		require.True(e.t, ok, "reply channel closed")
		require.NoError(e.t, d.Ack())
		return d
	case <-time.After(waitFor):
		e.t.Fatalf("nothing on the reply queue within %v", waitFor)
		return nil
	}
}

// txReply waits for the next transaction reply, skipping decision queries.
func (e *env) txReply() (*protocol.Reply, protocol.Message) {
	e.t.Helper()
	for {
		d := e.next()
		if d.Type == protocol.TypeDecisionQuery {
			continue
		}
		r, err := protocol.DecodeReply(d.Message)
		require.NoError(e.t, err)
		return r, d.Message
	}
}

// query waits for the next decision query, skipping replies.
func (e *env) query() (*protocol.TxQuery, protocol.Message) {
	e.t.Helper()
	for {
		d := e.next()
		if d.Type != protocol.TypeDecisionQuery {
			continue
		}
		q, err := protocol.DecodeTxQuery(d.Message)
		require.NoError(e.t, err)
		return q, d.Message
	}
}

func TestTwoPCWorkerPrepareCommitBesideSagas(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &holds{}
	var committed sync.Map
	cfg := e.config()
	cfg.OnTxCommitted = func(cmd *protocol.TxCommand, r protocol.TxReply) { committed.Store(cmd.Kind, r.Outcome) }
	w, err := participant.New(cfg)
	require.NoError(t, err)
	step := &counter{out: `{"ok":true}`}
	w.Handle("debit", step.handle)
	w.HandleTx(h.handlers())
	require.NoError(t, w.Migrate(e.ctx))
	require.NoError(t, w.Start(e.ctx))
	t.Cleanup(w.Stop)

	e.sendTx(txCommand("t1", protocol.KindPrepare, 1))
	v, msg := e.txReply()
	require.EqualValues(t, protocol.OutcomeVoteYes, v.Outcome)
	require.Equal(t, protocol.CommandRef{TxID: "t1", Participant: name, Kind: protocol.KindPrepare, Attempt: 1}.ID(), msg.CorrelationID)
	require.Equal(t, "t1", msg.Headers[protocol.HeaderTxID])
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", msg.Headers[protocol.HeaderTraceparent], "traceparent is propagated")

	e.send(debit("s1")) // saga commands keep working beside transactions
	r, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome)

	e.sendTx(txCommand("t1", protocol.KindPrepare, 1)) // a duplicate delivery
	dup, dupMsg := e.txReply()
	require.Equal(t, *v, *dup)
	require.Equal(t, msg.Body, dupMsg.Body)

	e.sendTx(txCommand("t1", protocol.KindCommit, 1))
	e.sendTx(txCommand("t1", protocol.KindCommit, 2)) // a re-sent decision
	for range 2 {
		a, _ := e.txReply()
		require.EqualValues(t, protocol.OutcomeAck, a.Outcome)
		require.EqualValues(t, protocol.KindCommit, a.Kind)
	}
	require.EqualValues(t, 1, h.prepares.Load())
	require.EqualValues(t, 1, h.commits.Load())
	require.Equal(t, 1, e.count(`SELECT count(*) FROM effects WHERE gid = 't1' AND kind = 'committed'`))
	require.Equal(t, 0, e.count(`SELECT count(*) FROM prepared`))
	v1, _ := committed.Load(protocol.KindPrepare)
	v2, _ := committed.Load(protocol.KindCommit)
	require.EqualValues(t, protocol.OutcomeVoteYes, v1)
	require.EqualValues(t, protocol.OutcomeAck, v2)
}

func TestTwoPCWorkerVoteNoThenAbortAndAbortFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &holds{}
	h.voteNo.Store(true)
	e.startTx(e.config(), h.handlers())

	e.sendTx(txCommand("no", protocol.KindPrepare, 1))
	v, _ := e.txReply()
	require.EqualValues(t, protocol.OutcomeVoteNo, v.Outcome)
	require.Equal(t, "insufficient available funds", v.Error)
	e.sendTx(txCommand("no", protocol.KindAbort, 1))
	a, _ := e.txReply()
	require.EqualValues(t, protocol.OutcomeAck, a.Outcome)

	// The prepare timeout passed before the PREPARE arrived: ABORT first, then a late PREPARE.
	h.voteNo.Store(false)
	e.sendTx(txCommand("late", protocol.KindAbort, 1))
	a, _ = e.txReply()
	require.EqualValues(t, protocol.OutcomeAck, a.Outcome)
	e.sendTx(txCommand("late", protocol.KindPrepare, 1))
	v, _ = e.txReply()
	require.EqualValues(t, protocol.OutcomeVoteNo, v.Outcome)
	require.Equal(t, "aborted before prepare", v.Error)
	require.EqualValues(t, 1, h.prepares.Load(), "the late PREPARE did not run")
	require.EqualValues(t, 0, h.aborts.Load(), "nothing was held, nothing released")
	require.Equal(t, 0, e.effects())
}

func TestTwoPCWorkerTransientPrepareIsRequeued(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &holds{}
	h.failPrepare.Store(2)
	e.startTx(e.config(), h.handlers())

	e.sendTx(txCommand("t1", protocol.KindPrepare, 1))
	v, _ := e.txReply()
	require.EqualValues(t, protocol.OutcomeVoteYes, v.Outcome, "no vote until the handler succeeds")
	require.EqualValues(t, 3, h.prepares.Load())
	require.Equal(t, 2, e.logs.count("transaction handler failed; nothing was kept, and the command is requeued"))
}

func TestTwoPCWorkerDeadLettersViolationsAndStrays(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead, err := e.coord.Consume(e.ctx, protocol.QueueDead, 16)
	require.NoError(t, err)
	h := &holds{}
	e.startTx(e.config(), h.handlers())

	e.sendTx(txCommand("never-prepared", protocol.KindCommit, 1))
	other := txCommand("t2", protocol.KindPrepare, 1)
	other.Participant = "bank-b"
	msg, err := other.Encode()
	require.NoError(t, err)
	e.publish(msg) // routed to bank-a's queue, addressed to bank-b
	e.publish(protocol.Message{MessageID: "garbage", Type: protocol.TypePrepare, ContentType: protocol.ContentType, Body: []byte(`{"tx_id":`)})
	e.sendTx(txCommand("t3", protocol.KindPrepare, 1))

	v, _ := e.txReply()
	require.Equal(t, "t3", v.TxID, "the good command after the bad ones is answered")
	seen := map[string]bool{}
	for len(seen) < 3 {
		select {
		case d := <-dead:
			seen[d.MessageID] = true
			require.NoError(t, d.Ack())
		case <-time.After(waitFor):
			t.Fatalf("dead letters seen: %v", seen)
		}
	}
	require.True(t, seen[protocol.CommandRef{TxID: "never-prepared", Participant: name, Kind: protocol.KindCommit, Attempt: 1}.ID()], "a COMMIT without a YES is never acked")
	require.True(t, seen[protocol.CommandRef{TxID: "t2", Participant: "bank-b", Kind: protocol.KindPrepare, Attempt: 1}.ID()])
	require.True(t, seen["garbage"])
	require.Equal(t, 1, e.logs.count("dead-lettering a transaction command that breaks the protocol; the transaction needs an operator"))
	require.EqualValues(t, 0, h.commits.Load())
}

func TestTwoPCWorkerWithoutHandlersDeadLetters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead, err := e.coord.Consume(e.ctx, protocol.QueueDead, 16)
	require.NoError(t, err)
	e.start(e.config(), map[string]participant.Handler{"debit": (&counter{out: `{}`}).handle})
	e.sendTx(txCommand("t1", protocol.KindPrepare, 1))
	select {
	case d := <-dead:
		require.Equal(t, protocol.CommandRef{TxID: "t1", Participant: name, Kind: protocol.KindPrepare, Attempt: 1}.ID(), d.MessageID)
		require.NoError(t, d.Ack())
	case <-time.After(waitFor):
		t.Fatal("the PREPARE to a worker without HandleTx was not dead-lettered")
	}
}

// TestTwoPCWorkerAsksForTheDecision: a prepared transaction is asked about at once when a worker
// starts, then after every PreparedSilence without news, until the decision arrives.
func TestTwoPCWorkerAsksForTheDecision(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &holds{}
	cfg := e.config()
	cfg.PreparedSilence = time.Hour // the first worker never asks
	first := e.startTx(cfg, h.handlers())
	e.sendTx(txCommand("t1", protocol.KindPrepare, 1))
	v, _ := e.txReply()
	require.EqualValues(t, protocol.OutcomeVoteYes, v.Outcome)
	first.Stop()

	// A restarted participant asks at once about what it held prepared before it started, but
	// not about what it prepares itself (t2, waiting in its queue): that question could overtake
	// the vote and abort a transaction still collecting votes.
	e.sendTx(txCommand("t2", protocol.KindPrepare, 1))
	restarted := e.startTx(cfg, h.handlers())
	var asked, voted bool
	for !asked || !voted {
		d := e.next()
		switch d.Type {
		case protocol.TypeDecisionQuery:
			q, err := protocol.DecodeTxQuery(d.Message)
			require.NoError(t, err)
			require.Equal(t, protocol.TxQuery{TxID: "t1", Participant: name}, *q)
			require.Equal(t, "t1", d.Headers[protocol.HeaderTxID])
			asked = true
		default:
			r, err := protocol.DecodeReply(d.Message)
			require.NoError(t, err)
			require.Equal(t, "t2", r.TxID)
			require.EqualValues(t, protocol.OutcomeVoteYes, r.Outcome)
			voted = true
		}
	}
	restarted.Stop()
	require.Equal(t, 1, e.count(`SELECT count(*) FROM prepared WHERE tx_id = 't2' AND last_query_at IS NULL`), "t2 was not asked about")

	// A silent one asks again and again.
	cfg.PreparedSilence = 200 * time.Millisecond
	cfg.QueryInterval = 20 * time.Millisecond
	e.startTx(cfg, h.handlers())
	ids := map[string]bool{}
	for len(ids) < 3 {
		q, msg := e.query()
		if q.TxID == "t1" {
			ids[msg.MessageID] = true
		}
	}
	var askedAt time.Time
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT last_query_at FROM prepared WHERE tx_id = 't1'`).Scan(&askedAt))
	require.False(t, askedAt.IsZero())

	e.sendTx(txCommand("t1", protocol.KindCommit, 1))
	e.sendTx(txCommand("t2", protocol.KindAbort, 1))
	for range 2 {
		a, _ := e.txReply()
		require.EqualValues(t, protocol.OutcomeAck, a.Outcome)
	}
	require.Equal(t, 0, e.count(`SELECT count(*) FROM prepared`), "nothing left to ask about")
}

func TestTwoPCHandleTxMisuse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w, err := participant.New(e.config())
	require.NoError(t, err)
	h := (&holds{}).handlers()
	require.Panics(t, func() { w.HandleTx(participant.TxHandlers{Prepare: h.Prepare}) })
	w.HandleTx(h)
	require.Panics(t, func() { w.HandleTx(h) })
}
