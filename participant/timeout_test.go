package participant_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// hangs is a handler that writes its effect and then waits in the database until its context
// ends, as a handler stuck on a lock or a slow query does.
func hangs(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
	if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, $3)`, cmd.SagaID, cmd.Step, cmd.Kind); err != nil {
		return nil, err
	}
	_, err := tx.Exec(ctx, `SELECT pg_sleep(60)`)
	return nil, err
}

// TestWorkerStopsHandlerAtStepTimeout checks that a handler still running when the step's
// timeout (carried by the command) has passed is cancelled and answered "retry", with nothing
// kept, and that the worker goes on with the next command.
func TestWorkerStopsHandlerAtStepTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ok := &counter{out: `{"ok":true}`}
	e.start(e.config(), map[string]participant.Handler{"debit": hangs, "ok": ok.handle})

	cmd := debit("s1")
	cmd.TimeoutMillis = 300
	began := time.Now()
	e.send(cmd)
	r, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeRetry, r.Outcome)
	require.Contains(t, r.Error, "handler still running after 300ms, the step's timeout")
	require.GreaterOrEqual(t, time.Since(began), 300*time.Millisecond)
	require.Equal(t, 0, e.effects(), "the timed-out handler's effect is rolled back")
	require.Equal(t, 0, e.count(`SELECT count(*) FROM barrier`), "a retry leaves no barrier row")

	next := debit("s2")
	next.Action = "ok"
	e.send(next)
	r, _ = e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome, "the worker goes on after a cancelled handler")
	require.Equal(t, 1, e.effects())
}

// TestWorkerHandlerTimeoutShortensTheStepTimeout checks Config.HandlerTimeout: it bounds a
// handler whose command allows longer.
func TestWorkerHandlerTimeoutShortensTheStepTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.config()
	cfg.HandlerTimeout = 200 * time.Millisecond
	e.start(cfg, map[string]participant.Handler{"debit": hangs})

	cmd := debit("s1")
	cmd.TimeoutMillis = 30_000
	e.send(cmd)
	r, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeRetry, r.Outcome)
	require.Contains(t, r.Error, "handler still running after 200ms")
	require.Equal(t, 0, e.effects())
}

// TestWorkerStopsHandlerAtStepTimeoutInAGroup checks that a grouped handler past its step's
// timeout is cancelled without costing the other commands of its group their effect.
func TestWorkerStopsHandlerAtStepTimeoutInAGroup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.config()
	cfg.Concurrency, cfg.MaxBatch = 1, 8
	ok := &counter{out: `{"ok":true}`}
	e.start(cfg, map[string]participant.Handler{"debit": hangs, "ok": ok.handle})

	hung := debit("s1")
	hung.TimeoutMillis = 300
	var cmds []*protocol.StepCommand
	for _, id := range []string{"s2", "s3", "s4"} {
		c := debit(id)
		c.Action = "ok"
		cmds = append(cmds, c)
	}
	for _, c := range append([]*protocol.StepCommand{hung}, cmds...) {
		e.send(c)
	}
	outcomes := map[string]protocol.Outcome{}
	for range 4 {
		r, _ := e.reply()
		outcomes[r.SagaID] = r.Outcome
	}
	require.Equal(t, map[string]protocol.Outcome{
		"s1": protocol.OutcomeRetry, "s2": protocol.OutcomeSucceeded, "s3": protocol.OutcomeSucceeded, "s4": protocol.OutcomeSucceeded,
	}, outcomes)
	require.Equal(t, 3, e.effects(), "the three quick handlers' effects, not the cancelled one's")
}

// TestTwoPCWorkerPrepareVotesNoAtThePrepareTimeout: a Prepare still waiting when the prepare
// timeout the PREPARE carries has passed is cancelled and votes NO, keeping nothing; the ABORT
// that follows only acks. Commit and Abort get no deadline.
func TestTwoPCWorkerPrepareVotesNoAtThePrepareTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &holds{}
	handlers := h.handlers()
	prepare := handlers.Prepare
	handlers.Prepare = func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
		if cmd.TxID == "stuck" {
			<-ctx.Done() // a lock or a service that does not answer
			return ctx.Err()
		}
		return prepare(ctx, tx, cmd)
	}
	e.startTx(e.config(), handlers)

	cmd := txCommand("stuck", protocol.KindPrepare, 1)
	cmd.TimeoutMillis = 300
	began := time.Now()
	e.sendTx(cmd)
	v, _ := e.txReply()
	require.EqualValues(t, protocol.OutcomeVoteNo, v.Outcome)
	require.Contains(t, v.Error, "prepare still running after 300ms, the prepare timeout")
	require.GreaterOrEqual(t, time.Since(began), 300*time.Millisecond)
	require.Equal(t, 0, e.count(`SELECT count(*) FROM prepared`), "nothing is prepared")

	e.sendTx(txCommand("stuck", protocol.KindAbort, 1))
	a, _ := e.txReply()
	require.EqualValues(t, protocol.OutcomeAck, a.Outcome)
	require.EqualValues(t, 0, h.aborts.Load(), "after a NO there is nothing to release")

	ok := txCommand("fine", protocol.KindPrepare, 1)
	ok.TimeoutMillis = 300
	e.sendTx(ok)
	v, _ = e.txReply()
	require.EqualValues(t, protocol.OutcomeVoteYes, v.Outcome, "a Prepare that finishes in time votes YES")
}
