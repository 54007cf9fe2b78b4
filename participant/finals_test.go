package participant

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
)

// noteFinal records gids as final, as a final notice does.
func (e *barrierEnv) noteFinal(t *testing.T, gids ...string) {
	t.Helper()
	_, err := e.pool.Exec(context.Background(), e.b.sql.noteFinals, gids)
	require.NoError(t, err)
}

// age moves back when gid was noted final, as if by d.
func (e *barrierEnv) age(t *testing.T, gid string, d time.Duration) {
	t.Helper()
	_, err := e.pool.Exec(context.Background(), `UPDATE finals SET noted_at = noted_at - $2::interval WHERE gid = $1`, gid, d)
	require.NoError(t, err)
}

func (e *barrierEnv) rowsOf(t *testing.T, gid string) int {
	return e.count(t, `SELECT count(*) FROM barrier WHERE gid = $1`, gid)
}

// TestFinalSagaRefusesLateCommandsWithoutReply: once a saga is final, no copy of its commands
// runs a handler or claims a row, whether its rows are still kept or not, and none is answered;
// a saga that is not final is untouched.
func TestFinalSagaRefusesLateCommandsWithoutReply(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	h := &recorder{out: `{"ok":true}`}
	require.EqualValues(t, protocol.OutcomeSucceeded, e.run(t, action("done"), h.handle).reply.Outcome)
	failing := &recorder{err: Failf("declined")}
	require.EqualValues(t, protocol.OutcomeFailed, e.run(t, action("failed"), failing.handle).reply.Outcome)
	e.noteFinal(t, "done", "never-seen")

	for name, cmd := range map[string]*protocol.StepCommand{
		"a copy of the action":          action("done"),
		"a late compensation":           compensation("done"),
		"an action never seen before":   action("never-seen"),
		"a compensation never seen":     compensation("never-seen"),
		"a later attempt of the action": actionAttempt("done", 7),
		"a later attempt never seen":    actionAttempt("never-seen", 2),
	} {
		res := e.run(t, cmd, h.handle)
		require.True(t, res.final, "%s: refused as final", name)
		require.False(t, res.handlerRan || res.committed || res.duplicate, "%s: nothing ran or was decided", name)
	}
	require.EqualValues(t, 1, h.calls.Load(), "only the first action ran")
	require.Equal(t, 1, e.rowsOf(t, "done"), "no compensation row was claimed")
	require.Zero(t, e.rowsOf(t, "never-seen"), "a final gid claims no row")

	// The saga that failed is not final: a later attempt reopens its failure as before.
	retried := actionAttempt("failed", 2)
	res := e.run(t, retried, h.handle)
	require.False(t, res.final)
	require.EqualValues(t, protocol.OutcomeSucceeded, res.reply.Outcome, "a saga not announced final keeps its barrier")
}

// TestFinalTransactionRefusesLateCommands: the same for a two-phase-commit transaction.
func TestFinalTransactionRefusesLateCommands(t *testing.T) {
	t.Parallel()
	e := newTxEnv(t)
	r := &txRecorder{}
	require.EqualValues(t, protocol.OutcomeVoteYes, e.run(t, txCmd("t1", protocol.KindPrepare), r.handlers()).reply.Outcome)
	require.EqualValues(t, protocol.OutcomeAck, e.run(t, txCmd("t1", protocol.KindCommit), r.handlers()).reply.Outcome)
	e.noteFinal(t, "t1", "t2")
	for _, cmd := range []*protocol.TxCommand{
		txCmd("t1", protocol.KindPrepare), txCmd("t1", protocol.KindCommit), txCmd("t1", protocol.KindAbort),
		txCmd("t2", protocol.KindPrepare), txCmd("t2", protocol.KindCommit), txCmd("t2", protocol.KindAbort),
	} {
		res := e.run(t, cmd, r.handlers())
		require.True(t, res.final, "%s %s: refused as final", cmd.TxID, cmd.Kind)
		require.False(t, res.handlerRan || res.committed, "%s %s", cmd.TxID, cmd.Kind)
	}
	require.Equal(t, 1, e.effectsOf(t, protocol.KindPrepare))
	require.Equal(t, 1, e.effectsOf(t, protocol.KindCommit))
	require.Zero(t, e.effectsOf(t, protocol.KindAbort))
	require.Zero(t, e.rowsOf(t, "t2"))
	require.Zero(t, e.prepared(t), "a final transaction leaves nothing prepared")
}

// TestSweepDeletesRowsAfterTheGraceAndForgetsAfterTheHorizon: the sweep deletes the barrier rows of
// gids final for longer than BarrierGrace, and only those; it forgets a gid after FinalHorizon, and
// then only. A compensation arriving after the rows are gone is still refused.
func TestSweepDeletesRowsAfterTheGraceAndForgetsAfterTheHorizon(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	ctx := context.Background()
	h := &recorder{out: `{"ok":true}`}
	for _, gid := range []string{"old", "recent", "failed-not-final"} {
		e.run(t, action(gid), h.handle)
	}
	e.noteFinal(t, "old", "recent")
	e.age(t, "old", DefaultBarrierGrace+time.Minute)

	n, err := e.w.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "one final gid is past the grace")
	require.Zero(t, e.rowsOf(t, "old"), "its rows are deleted")
	require.Equal(t, 1, e.rowsOf(t, "recent"), "a gid within the grace keeps its rows")
	require.Equal(t, 1, e.rowsOf(t, "failed-not-final"), "a gid never announced keeps its rows")

	res := e.run(t, compensation("old"), h.handle)
	require.True(t, res.final, "a compensation after the rows are gone is refused")
	res = e.run(t, action("old"), h.handle)
	require.True(t, res.final, "and so is a late copy of the action, which would otherwise run again")
	require.EqualValues(t, 3, h.calls.Load())
	require.Zero(t, e.rowsOf(t, "old"), "they claim nothing")

	n, err = e.w.Sweep(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "a swept gid is not swept again")
	require.Equal(t, 2, e.count(t, `SELECT count(*) FROM finals`))

	e.age(t, "old", DefaultFinalHorizon)
	e.age(t, "recent", DefaultFinalHorizon) // past the horizon, but its rows were never swept
	_, err = e.w.Sweep(ctx)
	require.NoError(t, err)
	require.Zero(t, e.count(t, `SELECT count(*) FROM finals WHERE gid = 'old'`), "forgotten after the horizon")
	require.Zero(t, e.rowsOf(t, "recent"), "a gid past the horizon has its rows deleted first")
	require.Zero(t, e.count(t, `SELECT count(*) FROM finals`), "and is then forgotten")
}

func TestConfigRefusesAHorizonWithinTheGrace(t *testing.T) {
	t.Parallel()
	_, err := New(Config{Name: "p", Transport: noTransport{}, DB: nil, BarrierGrace: time.Hour, FinalHorizon: time.Minute})
	require.ErrorContains(t, err, "Config.FinalHorizon 1m0s must exceed Config.BarrierGrace 1h0m0s")
	_, err = New(Config{Name: "p", Transport: noTransport{}, DB: nil, BarrierGrace: -1, FinalHorizon: time.Minute})
	require.NotContains(t, err.Error(), "FinalHorizon", "without final notices the horizon does not matter")
}
