package participant

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
)

// These tests drive groups (barrier.runGroup) directly; group_worker_test.go covers them end to
// end through RabbitMQ.

// scripted is a handler that writes one effects row and then does what the command's input says.
func scripted(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
	if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, $3, $4)`, cmd.SagaID, cmd.Step, cmd.Kind, cmd.Action); err != nil {
		return nil, err
	}
	var in struct{ Do string }
	_ = json.Unmarshal(cmd.Input, &in)
	switch in.Do {
	case "fail":
		return nil, Failf("insufficient funds")
	case "retry":
		return nil, errors.New("connection reset by peer")
	case "panic":
		panic("index out of range")
	case "bad sql":
		// A failed statement aborts the transaction; the handler passes the error on.
		_, err := tx.Exec(ctx, `SELECT 1/0`)
		return nil, err
	case "nul output":
		// Valid JSON that jsonb refuses: the reply's UPDATE fails with a data exception.
		return json.RawMessage(`{"note":"\u0000"}`), nil
	case "open rows":
		// Leaves a result unread on the connection: the transaction cannot go on.
		_, err := tx.Query(ctx, `SELECT generate_series(1, 100000)`)
		if err != nil {
			return nil, err
		}
		return nil, errors.New("gave up halfway")
	}
	return json.RawMessage(`{"entry":1}`), nil
}

func doing(cmd *protocol.StepCommand, what string) *protocol.StepCommand {
	cmd.Input = json.RawMessage(`{"do":"` + what + `"}`)
	return cmd
}

func items(cmds ...*protocol.StepCommand) []groupItem {
	its := make([]groupItem, len(cmds))
	for i, c := range cmds {
		its[i] = groupItem{ctx: context.Background(), cmd: c, h: scripted}
	}
	return its
}

// TestBarrierGroupMixedOutcomes: every rule of the barrier holds per command in a group, which
// commits once.
func TestBarrierGroupMixedOutcomes(t *testing.T) {
	t.Parallel()
	e, m := newMeteredEnv(t)
	ctx := context.Background()
	e.run(t, doing(action("earlier"), "ok"), scripted)
	before := m.sql.Commits.Load()

	outs, err := e.b.runGroup(ctx, items(
		doing(action("ok"), "ok"),
		doing(action("fails"), "fail"),
		doing(action("retries"), "retry"),
		doing(action("ok"), "ok"),               // a duplicate of the first, in the same group
		doing(action("earlier"), "ok"),          // a duplicate of a command decided before
		doing(compensation("comp-first"), "ok"), // before its action: a no-op that plants a refusal
		doing(action("comp-first"), "ok"),       // refused
		doing(action("s\x00nul"), "ok"),         // a data exception
		doing(action("panics"), "panic"),
		doing(action("bad-sql"), "bad sql"),
		doing(compensation("fails"), "ok"), // for the failed action in this group: a no-op
	))
	require.NoError(t, err)
	require.EqualValues(t, 1, m.sql.Commits.Load()-before, "one COMMIT for the group")

	want := []struct {
		outcome        protocol.Outcome
		errText        string
		committed, dup bool
	}{
		{protocol.OutcomeSucceeded, "", true, false},
		{protocol.OutcomeFailed, "insufficient funds", true, false},
		{protocol.OutcomeRetry, "connection reset by peer", false, false},
		{protocol.OutcomeSucceeded, "", false, true},
		{protocol.OutcomeSucceeded, "", false, true},
		{protocol.OutcomeSucceeded, "", true, false},
		{protocol.OutcomeFailed, errCompensatedFirst, false, true},
		{},
		{protocol.OutcomeRetry, "handler panicked: index out of range", false, false},
		{protocol.OutcomeRetry, "division by zero", false, false},
		{protocol.OutcomeSucceeded, "", true, false},
	}
	for i, w := range want {
		o := outs[i]
		if w.outcome == "" {
			require.Error(t, o.err, "command %d", i)
			require.True(t, isDataException(o.err), "command %d: %v", i, o.err)
			continue
		}
		require.NoError(t, o.err, "command %d", i)
		require.Equal(t, w.outcome, o.res.reply.Outcome, "command %d", i)
		require.Contains(t, o.res.reply.Error, w.errText, "command %d", i)
		require.Equal(t, w.committed, o.res.committed, "command %d", i)
		require.Equal(t, w.dup, o.res.duplicate, "command %d", i)
	}
	require.Equal(t, outs[0].res.reply, outs[3].res.reply, "the duplicate gets the stored reply")
	require.JSONEq(t, `{"entry":1}`, string(outs[0].res.reply.Output))

	rows := func(saga string) []string {
		r, err := e.pool.Query(ctx, `SELECT kind || '=' || (reply->>'outcome') FROM barrier WHERE gid = $1 ORDER BY kind`, saga)
		require.NoError(t, err)
		got, err := pgx.CollectRows(r, pgx.RowTo[string])
		require.NoError(t, err)
		return got
	}
	require.Equal(t, []string{"action=succeeded"}, rows("ok"))
	require.Equal(t, []string{"action=failed", "compensate=succeeded"}, rows("fails"))
	require.Empty(t, rows("retries"), "a retry keeps no row")
	require.Equal(t, []string{"action=failed", "compensate=succeeded"}, rows("comp-first"))
	require.Empty(t, rows("panics"))
	require.Empty(t, rows("bad-sql"))
	_, _, attempt := e.actionRow(t, "comp-first")
	require.Equal(t, 1, attempt)
	outcome, errText, _ := e.actionRow(t, "fails")
	require.EqualValues(t, protocol.OutcomeFailed, outcome)
	require.Equal(t, errCompensatedFirst, errText, "the compensation turned the failure into the refusal")

	// Only the successful action's effect and the earlier one are left.
	require.Equal(t, 2, e.effects(t))
	require.Equal(t, 1, e.count(t, `SELECT count(*) FROM effects WHERE gid = 'ok'`))
	require.Len(t, m.connections(), 1, "the group leaves its connection fit for reuse")
}

// TestBarrierGroupRoundTrips: a command's ending statements travel with the next one's first, so
// n commands cost n+1 round trips.
func TestBarrierGroupRoundTrips(t *testing.T) {
	t.Parallel()
	e, m := newMeteredEnv(t)
	ctx := context.Background()
	ok := func(context.Context, pgx.Tx, *protocol.StepCommand) (json.RawMessage, error) {
		return json.RawMessage(`{"entry":1}`), nil
	}
	for round, prefix := range []string{"warm-", ""} {
		its := []groupItem{
			{ctx, action(prefix + "a"), ok},
			{ctx, action(prefix + "b"), failing},
			{ctx, compensation(prefix + "c"), ok},
			{ctx, action(prefix + "d"), ok},
		}
		before, commits := m.writes.Load(), m.sql.Commits.Load()
		outs, err := e.b.runGroup(ctx, its)
		require.NoError(t, err)
		for i, o := range outs {
			require.NoError(t, o.err, "command %d", i)
			require.True(t, o.res.committed, "command %d", i)
		}
		if round == 1 {
			require.EqualValues(t, len(its)+1, m.writes.Load()-before)
			require.EqualValues(t, 1, m.sql.Commits.Load()-commits)
		}
	}
}

// TestBarrierGroupReplyRefusedByDatabase: when the statement that stores a command's reply fails
// (here jsonb refuses the output), that command alone is undone, wherever it stands in the group.
func TestBarrierGroupReplyRefusedByDatabase(t *testing.T) {
	t.Parallel()
	e, m := newMeteredEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cmds []*protocol.StepCommand
		bad  int
	}{
		{"middle", []*protocol.StepCommand{doing(action("m1"), "ok"), doing(action("m2"), "nul output"), doing(action("m3"), "ok")}, 1},
		{"last", []*protocol.StepCommand{doing(action("l1"), "ok"), doing(action("l2"), "nul output")}, 1},
	} {
		before := m.sql.Commits.Load()
		outs, err := e.b.runGroup(ctx, items(tc.cmds...))
		require.NoError(t, err, tc.name)
		require.EqualValues(t, 1, m.sql.Commits.Load()-before, tc.name)
		for i, o := range outs {
			if i == tc.bad {
				require.True(t, isDataException(o.err), "%s: %v", tc.name, o.err)
				require.Zero(t, e.count(t, `SELECT count(*) FROM barrier WHERE gid = $1`, tc.cmds[i].SagaID), tc.name)
				require.Zero(t, e.count(t, `SELECT count(*) FROM effects WHERE gid = $1`, tc.cmds[i].SagaID), tc.name)
				continue
			}
			require.NoError(t, o.err, tc.name)
			require.EqualValues(t, protocol.OutcomeSucceeded, o.res.reply.Outcome, tc.name)
			require.Equal(t, 1, e.count(t, `SELECT count(*) FROM effects WHERE gid = $1`, tc.cmds[i].SagaID), tc.name)
		}
	}
}

// TestBarrierGroupBrokenByHandler: a handler that leaves the transaction unusable breaks the
// group, which then decided nothing: its commands are to be run alone.
func TestBarrierGroupBrokenByHandler(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	ctx := context.Background()
	_, err := e.b.runGroup(ctx, items(doing(action("before"), "ok"), doing(action("rows"), "open rows"), doing(action("after"), "ok")))
	require.ErrorIs(t, err, errGroupBroken)
	require.Zero(t, e.count(t, `SELECT count(*) FROM barrier`))
	require.Zero(t, e.effects(t))

	// Alone, the handler's command is replied "retry", and the others succeed.
	require.EqualValues(t, protocol.OutcomeSucceeded, e.run(t, doing(action("before"), "ok"), scripted).reply.Outcome)
	require.EqualValues(t, protocol.OutcomeRetry, e.run(t, doing(action("rows"), "open rows"), scripted).reply.Outcome)
}

// TestBarrierGroupDeferredConstraintBreaksTheCommit: a COMMIT that PostgreSQL refuses decides
// nothing for any command of the group.
func TestBarrierGroupDeferredConstraintBreaksTheCommit(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	ctx := context.Background()
	_, err := e.pool.Exec(ctx, `CREATE TABLE once (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED)`)
	require.NoError(t, err)
	dup := func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		_, err := tx.Exec(ctx, `INSERT INTO once VALUES (1), (1)`)
		return nil, err
	}
	its := items(doing(action("a"), "ok"), doing(action("b"), "ok"))
	its[1].h = dup
	_, err = e.b.runGroup(ctx, its)
	require.ErrorIs(t, err, errGroupBroken)
	require.Zero(t, e.count(t, `SELECT count(*) FROM barrier`))
	require.Zero(t, e.effects(t))
}
