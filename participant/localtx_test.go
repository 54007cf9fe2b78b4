package participant

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
)

// These tests cover how the barrier drives its transaction: the round trips it spends, the
// handler's savepoint Tx, and the connections it gives back.

// newMeteredEnv is a barrierEnv on a pool of one connection that counts what it sends.
func newMeteredEnv(t *testing.T) (*barrierEnv, *benchEnv) {
	t.Helper()
	m := newBenchEnv(t, 1)
	_, err := m.pool.Exec(context.Background(), `CREATE TABLE effects (gid text, step text, kind text, note text)`)
	require.NoError(t, err)
	var schema string
	require.NoError(t, m.pool.QueryRow(context.Background(), `SELECT current_schema()`).Scan(&schema))
	return &barrierEnv{pool: m.pool, schema: schema, b: m.b}, m
}

// TestBarrierRoundTrips: the common paths cost two round trips, a duplicate three, once the
// connection has prepared the statements.
func TestBarrierRoundTrips(t *testing.T) {
	t.Parallel()
	e, m := newMeteredEnv(t)
	// Handlers without statements of their own: only the barrier's round trips are counted.
	ok := func(context.Context, pgx.Tx, *protocol.StepCommand) (json.RawMessage, error) {
		return json.RawMessage(`{"entry":1}`), nil
	}
	paths := []struct {
		name       string
		setup      func(saga string)
		cmd        func(saga string) *protocol.StepCommand
		h          Handler
		want       protocol.Outcome
		roundTrips int64
	}{
		{"action succeeds", nil, action, ok, protocol.OutcomeSucceeded, 2},
		{"action fails", nil, action, failing, protocol.OutcomeFailed, 2},
		{"duplicate action", func(s string) { e.run(t, action(s), ok) }, action, ok, protocol.OutcomeSucceeded, 3},
		{"compensation undoes a success", func(s string) { e.run(t, action(s), ok) }, compensation, ok, protocol.OutcomeSucceeded, 2},
		{"compensation after a failure", func(s string) { e.run(t, action(s), failing) }, compensation, ok, protocol.OutcomeSucceeded, 2},
		{"compensation first", nil, compensation, ok, protocol.OutcomeSucceeded, 2},
		{"duplicate compensation", func(s string) { e.run(t, compensation(s), ok) }, compensation, ok, protocol.OutcomeSucceeded, 3},
		{"later attempt reopens a failure", func(s string) { e.run(t, action(s), failing) }, func(s string) *protocol.StepCommand { return actionAttempt(s, 2) }, ok, protocol.OutcomeSucceeded, 3},
	}
	for round, prefix := range []string{"warm-", ""} {
		for _, p := range paths {
			saga := prefix + p.name
			if p.setup != nil {
				p.setup(saga)
			}
			before := m.writes.Load()
			r := e.run(t, p.cmd(saga), p.h)
			require.Equal(t, p.want, r.reply.Outcome, p.name)
			if round == 1 {
				require.Equal(t, p.roundTrips, m.writes.Load()-before, "round trips of %s", p.name)
			}
		}
	}
	require.Len(t, m.connections(), 1, "every path leaves its connection fit for reuse")
}

// TestBarrierHandlerTxIsASavepoint: the handler's Tx keeps the contract of pgx's savepoint Tx.
func TestBarrierHandlerTxIsASavepoint(t *testing.T) {
	t.Parallel()
	e, m := newMeteredEnv(t)
	ctx := context.Background()
	insert := func(tx pgx.Tx, note string) error {
		_, err := tx.Exec(ctx, `INSERT INTO effects VALUES ('s', 'debit', 'action', $1)`, note)
		return err
	}
	notes := func(saga string) []string {
		rows, err := e.pool.Query(ctx, `SELECT note FROM effects WHERE gid = $1 ORDER BY note`, saga)
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return got
	}

	t.Run("every method works on the barrier transaction", func(t *testing.T) {
		var pid uint32
		r := e.run(t, action("methods"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
			pid = tx.Conn().PgConn().PID()
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM barrier WHERE gid = $1`, cmd.SagaID).Scan(&n); err != nil || n != 1 {
				return nil, errors.Join(err, errors.New("the handler does not see its barrier row"))
			}
			rows, err := tx.Query(ctx, `SELECT generate_series(1, 3)`)
			if err != nil {
				return nil, err
			}
			ns, err := pgx.CollectRows(rows, pgx.RowTo[int32])
			if err != nil || len(ns) != 3 {
				return nil, errors.Join(err, errors.New("query"))
			}
			var b pgx.Batch
			b.Queue(`INSERT INTO effects VALUES ($1, 'debit', 'action', 'batch')`, cmd.SagaID)
			if err := tx.SendBatch(ctx, &b).Close(); err != nil {
				return nil, err
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"effects"}, []string{"gid", "note"}, pgx.CopyFromRows([][]any{{cmd.SagaID, "copy"}})); err != nil {
				return nil, err
			}
			if _, err := tx.Prepare(ctx, "effect", `INSERT INTO effects (gid, note) VALUES ($1, 'prepared')`); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(ctx, "effect", cmd.SagaID); err != nil {
				return nil, err
			}
			lo := tx.LargeObjects()
			oid, err := lo.Create(ctx, 0)
			if err != nil {
				return nil, err
			}
			if err := lo.Unlink(ctx, oid); err != nil {
				return nil, err
			}
			return json.RawMessage(`{}`), nil
		})
		require.EqualValues(t, protocol.OutcomeSucceeded, r.reply.Outcome, r.reply.Error)
		require.Equal(t, []string{"batch", "copy", "prepared"}, notes("methods"))
		require.Equal(t, m.connections()[0], pid, "the handler runs on the barrier's connection")
	})

	t.Run("nested transactions are savepoints inside it", func(t *testing.T) {
		r := e.run(t, action("nested"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
			if _, err := tx.Exec(ctx, `INSERT INTO effects (gid, note) VALUES ($1, 'outer')`, cmd.SagaID); err != nil {
				return nil, err
			}
			for _, keep := range []bool{false, true} {
				nested, err := tx.Begin(ctx)
				if err != nil {
					return nil, err
				}
				note := map[bool]string{false: "undone", true: "kept"}[keep]
				if _, err := nested.Exec(ctx, `INSERT INTO effects (gid, note) VALUES ($1, $2)`, cmd.SagaID, note); err != nil {
					return nil, err
				}
				if keep {
					err = nested.Commit(ctx)
				} else {
					err = nested.Rollback(ctx)
				}
				if err != nil {
					return nil, err
				}
				if _, err := nested.Exec(ctx, `SELECT 1`); !errors.Is(err, pgx.ErrTxClosed) {
					return nil, errors.New("a nested transaction stays usable after it ended")
				}
			}
			return nil, nil
		})
		require.EqualValues(t, protocol.OutcomeSucceeded, r.reply.Outcome, r.reply.Error)
		require.Equal(t, []string{"kept", "outer"}, notes("nested"))
	})

	t.Run("a handler that ends its transaction has it retried", func(t *testing.T) {
		for _, end := range []string{"commit", "rollback"} {
			saga := "ends-" + end
			r := e.run(t, action(saga), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
				if err := insert(tx, saga); err != nil {
					return nil, err
				}
				if end == "commit" {
					return nil, tx.Commit(ctx)
				}
				return nil, tx.Rollback(ctx)
			})
			require.EqualValues(t, protocol.OutcomeRetry, r.reply.Outcome, end)
			require.Equal(t, "handler returned success but its transaction cannot be kept: tx is closed", r.reply.Error, end)
			require.False(t, r.committed, end)
		}
		require.Equal(t, 0, e.count(t, `SELECT count(*) FROM barrier WHERE gid LIKE 'ends-%'`))
		require.Equal(t, 0, e.count(t, `SELECT count(*) FROM effects WHERE note LIKE 'ends-%'`), "the savepoint released by the handler is rolled back with the rest")
	})

	t.Run("a business failure after the handler ended its transaction is an infrastructure error", func(t *testing.T) {
		_, err := e.b.runStep(ctx, action("ends-then-fails"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
			if err := tx.Rollback(ctx); err != nil {
				return nil, err
			}
			return nil, Failf("insufficient funds")
		})
		require.ErrorIs(t, err, pgx.ErrTxClosed)
		require.ErrorContains(t, err, "roll back to savepoint after business failure")
	})

	t.Run("a closed Tx refuses every statement", func(t *testing.T) {
		var kept pgx.Tx
		r := e.run(t, action("closed"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
			kept = tx
			return nil, nil
		})
		require.EqualValues(t, protocol.OutcomeSucceeded, r.reply.Outcome)
		_, err := kept.Exec(ctx, `SELECT 1`)
		require.ErrorIs(t, err, pgx.ErrTxClosed, "a Tx kept after the handler returned")
		_, err = kept.Query(ctx, `SELECT 1`)
		require.ErrorIs(t, err, pgx.ErrTxClosed)
		require.ErrorIs(t, kept.QueryRow(ctx, `SELECT 1`).Scan(new(int)), pgx.ErrTxClosed)
		_, err = kept.Begin(ctx)
		require.ErrorIs(t, err, pgx.ErrTxClosed)
		require.ErrorIs(t, kept.Commit(ctx), pgx.ErrTxClosed)
		require.ErrorIs(t, kept.Rollback(ctx), pgx.ErrTxClosed)
		require.ErrorIs(t, kept.SendBatch(ctx, &pgx.Batch{QueuedQueries: []*pgx.QueuedQuery{{SQL: `SELECT 1`}}}).Close(), pgx.ErrTxClosed)
		_, err = kept.CopyFrom(ctx, pgx.Identifier{"effects"}, []string{"gid"}, pgx.CopyFromRows([][]any{{"x"}}))
		require.ErrorIs(t, err, pgx.ErrTxClosed)
		_, err = kept.Prepare(ctx, "p", `SELECT 1`)
		require.ErrorIs(t, err, pgx.ErrTxClosed)
		require.NotNil(t, kept.Conn(), "Conn does not fail, as pgx's does not")
		lo := kept.LargeObjects()
		_, err = lo.Create(ctx, 0)
		require.ErrorIs(t, err, pgx.ErrTxClosed)
	})

	t.Run("a swallowed SQL error then a business failure stores the failure", func(t *testing.T) {
		r := e.run(t, action("aborted"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
			if err := insert(tx, "aborted"); err != nil {
				return nil, err
			}
			_, err := tx.Exec(ctx, `INSERT INTO no_such_table VALUES (1)`)
			return nil, Fail(err)
		})
		require.EqualValues(t, protocol.OutcomeFailed, r.reply.Outcome)
		require.Contains(t, r.reply.Error, "no_such_table")
		require.True(t, r.committed)
		outcome, _, _ := e.actionRow(t, "aborted")
		require.EqualValues(t, protocol.OutcomeFailed, outcome)
		require.Empty(t, notes("aborted"))
	})

	t.Run("a handler that leaves rows unread has it retried", func(t *testing.T) {
		r := e.run(t, action("busy"), func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
			if err := insert(tx, "busy"); err != nil {
				return nil, err
			}
			_, err := tx.Query(ctx, `SELECT generate_series(1, 3)`)
			return nil, err
		})
		require.EqualValues(t, protocol.OutcomeRetry, r.reply.Outcome)
		require.Contains(t, r.reply.Error, "handler returned success but its transaction cannot be kept")
		require.Empty(t, notes("busy"))
		require.Equal(t, 0, e.count(t, `SELECT count(*) FROM barrier WHERE gid = 'busy'`))
	})
}

// TestBarrierFailedReplyWriteCommitsNothing: when the statement that stores the reply fails, the
// COMMIT sent with it does not run, and the error says which row it was.
func TestBarrierFailedReplyWriteCommitsNothing(t *testing.T) {
	t.Parallel()
	e, m := newMeteredEnv(t)
	h := &recorder{out: `{"note":"\u0000"}`} // valid JSON that jsonb refuses
	_, err := e.b.runStep(context.Background(), action("s1"), h.handle)
	require.ErrorContains(t, err, "store reply in barrier row (s1, debit, action)")
	require.NotContains(t, err.Error(), "commit barrier transaction", "a server error is not indeterminate")
	require.True(t, isDataException(err), "the worker dead-letters it: %v", err)
	require.EqualValues(t, 1, h.calls.Load())
	require.Equal(t, 0, e.effects(t))
	require.Equal(t, 0, e.barrierRows(t, protocol.KindAction))

	h.out = `{}`
	r := e.run(t, action("s1"), h.handle)
	require.EqualValues(t, protocol.OutcomeSucceeded, r.reply.Outcome, "the connection was rolled back and is fit for reuse")
	require.Len(t, m.connections(), 1)
}

// TestBarrierReusesItsConnectionAfterEveryPath: whatever happens in the handler, the barrier
// rolls back what it did not commit, so that the pool can reuse the connection.
func TestBarrierReusesItsConnectionAfterEveryPath(t *testing.T) {
	t.Parallel()
	e, m := newMeteredEnv(t)
	e.run(t, action("dup"), (&recorder{}).handle)
	handlers := map[string]Handler{
		"dup":      (&recorder{}).handle,
		"retry":    (&recorder{err: errors.New("deadlock")}).handle,
		"business": (&recorder{err: Failf("no funds")}).handle,
		"aborted": func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
			_, _ = tx.Exec(ctx, `SELECT 1/0`)
			return nil, nil
		},
		"panic": func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
			if _, err := tx.Exec(ctx, `INSERT INTO effects (gid) VALUES ('panic')`); err != nil {
				return nil, err
			}
			panic("boom")
		},
	}
	for saga, h := range handlers {
		r := e.run(t, action(saga), h)
		require.NotEmpty(t, r.reply.Outcome, saga)
	}

	h := newBlocker(`{}`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.b.runStep(ctx, action("interrupted"), h.handle)
		done <- err
	}()
	<-h.entered
	cancel()
	require.ErrorIs(t, <-done, errInterrupted)

	require.Equal(t, int32(0), e.pool.Stat().AcquiredConns())
	require.Len(t, m.connections(), 1, "the one connection was never discarded")
	require.Equal(t, 0, e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND pid = $1`, m.connections()[0]))
	require.Equal(t, 2, e.count(t, `SELECT count(*) FROM barrier`), "dup and business")
	require.Equal(t, 1, e.effects(t), "the first dup's")
}

// TestBarrierCancelledWhileWaitingDecidesNothing: a command cancelled while its batch waits for
// a lock loses its connection, which pgx closes, and decides nothing.
func TestBarrierCancelledWhileWaitingDecidesNothing(t *testing.T) {
	t.Parallel()
	e := newBarrierEnv(t)
	act := newBlocker(`{}`)
	actDone := make(chan error, 1)
	go func() {
		_, err := e.b.runStep(context.Background(), action("s1"), act.handle)
		actDone <- err
	}()
	<-act.entered

	ctx, cancel := context.WithCancel(context.Background())
	compDone := make(chan error, 1)
	go func() {
		_, err := e.b.runStep(ctx, compensation("s1"), (&recorder{}).handle)
		compDone <- err
	}()
	e.waitLockWaiters(t, 1)
	cancel()
	err := <-compDone
	require.ErrorContains(t, err, "insert barrier row (s1, debit, action)")
	close(act.release)
	require.NoError(t, <-actDone)

	require.Equal(t, 0, e.barrierRows(t, protocol.KindCompensate))
	r := e.run(t, compensation("s1"), (&recorder{}).handle)
	require.True(t, r.handlerRan, "the compensation runs once redelivered")
}

// TestBarrierUnderEveryQueryExecMode: the batches work whatever mode the worker's pool runs its
// statements in (simple protocol for PgBouncer, say).
func TestBarrierUnderEveryQueryExecMode(t *testing.T) {
	t.Parallel()
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			dbURL := testenv.Schema(t)
			cfg, err := pgxpool.ParseConfig(dbURL)
			require.NoError(t, err)
			cfg.ConnConfig.DefaultQueryExecMode = mode
			pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			w, err := New(Config{Name: "p", Transport: noTransport{}, DB: pool, Schema: searchPath(t, dbURL)})
			require.NoError(t, err)
			require.NoError(t, w.Migrate(context.Background()))
			_, err = pool.Exec(context.Background(), `CREATE TABLE effects (gid text, step text, kind text, note text)`)
			require.NoError(t, err)
			e := &barrierEnv{pool: pool, b: w.barrier}

			ok, fail := &recorder{out: `{"entry":1}`}, &recorder{err: Failf("insufficient funds")}
			require.EqualValues(t, protocol.OutcomeSucceeded, e.run(t, action("ok"), ok.handle).reply.Outcome)
			require.True(t, e.run(t, action("ok"), ok.handle).duplicate)
			c := e.run(t, compensation("ok"), ok.handle)
			require.True(t, c.handlerRan)
			require.JSONEq(t, `{"entry":1}`, string(ok.last.Load().Output))
			require.EqualValues(t, protocol.OutcomeFailed, e.run(t, action("failed"), fail.handle).reply.Outcome)
			require.EqualValues(t, protocol.OutcomeSucceeded, e.run(t, actionAttempt("failed", 2), ok.handle).reply.Outcome, "reopened")
			require.False(t, e.run(t, compensation("first"), ok.handle).handlerRan)
			require.Equal(t, errCompensatedFirst, e.run(t, action("first"), ok.handle).reply.Error)
			require.Equal(t, 3, e.effects(t), "ok, its compensation, and the reopened attempt")

			// A group, with a command undone in an aborted transaction and one whose reply
			// the database refuses.
			outs, err := e.b.runGroup(context.Background(), items(doing(action("g1"), "ok"), doing(action("g2"), "bad sql"),
				doing(action("g3"), "nul output"), doing(action("ok"), "ok"), doing(action("g4"), "fail")))
			require.NoError(t, err)
			require.EqualValues(t, protocol.OutcomeSucceeded, outs[0].res.reply.Outcome)
			require.EqualValues(t, protocol.OutcomeRetry, outs[1].res.reply.Outcome)
			require.True(t, isDataException(outs[2].err), "%v", outs[2].err)
			require.True(t, outs[3].res.duplicate)
			require.EqualValues(t, protocol.OutcomeFailed, outs[4].res.reply.Outcome)
			require.Equal(t, 4, e.effects(t), "and g1")

			// Two-phase commit, whose reads of rows that may be absent end no batch.
			te, r := &txEnv{barrierEnv: e}, &txRecorder{}
			require.EqualValues(t, protocol.OutcomeVoteYes, te.run(t, txCmd("t1", protocol.KindPrepare), r.handlers()).reply.Outcome)
			commit := txCmd("t1", protocol.KindCommit)
			commit.Payload = nil
			require.True(t, te.run(t, commit, r.handlers()).handlerRan)
			require.JSONEq(t, `{"account":"acct-1","amount":10}`, r.payload(protocol.KindCommit), "from the prepared record")
			require.False(t, te.run(t, txCmd("t2", protocol.KindAbort), r.handlers()).handlerRan)
			require.Equal(t, errAbortedFirst, te.run(t, txCmd("t2", protocol.KindPrepare), r.handlers()).reply.Error)
			_, err = e.b.runTwoPC(context.Background(), txCmd("t3", protocol.KindCommit), r.handlers())
			require.ErrorAs(t, err, new(*violationError))
			require.Equal(t, 0, te.prepared(t))
		})
	}
}
