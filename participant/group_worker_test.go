package participant_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// These tests run group commit (Config.MaxBatch) end to end.

// heldTransport hands the worker its first n deliveries at once: Consume returns only when they
// all wait in its channel, so that the first handler goroutine takes them as one group.
type heldTransport struct {
	transport.Transport
	n int
}

func (h *heldTransport) Consume(ctx context.Context, queue string, prefetch int) (<-chan *transport.Delivery, error) {
	if queue == protocol.TwoPCQueue(name) {
		return h.Transport.Consume(ctx, queue, prefetch) // only saga steps are grouped
	}
	in, err := h.Transport.Consume(ctx, queue, prefetch)
	if err != nil {
		return nil, err
	}
	out := make(chan *transport.Delivery, prefetch)
	deadline := time.After(waitFor)
	for len(out) < h.n {
		select {
		case d := <-in:
			out <- d
		case <-deadline:
			return nil, fmt.Errorf("%d of %d deliveries arrived", len(out), h.n)
		}
	}
	go func() {
		defer close(out)
		for d := range in {
			select {
			case out <- d:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (e *env) groupConfig(maxBatch, n int) (participant.Config, *testenv.SQLCounter) {
	e.t.Helper()
	commits := &testenv.SQLCounter{}
	pc := e.pool.Config()
	pc.ConnConfig.Tracer = commits
	pool, err := pgxpool.NewWithConfig(e.ctx, pc)
	require.NoError(e.t, err)
	e.t.Cleanup(pool.Close)
	cfg := e.config()
	cfg.DB = pool
	cfg.Prefetch = 16
	cfg.Concurrency = 1
	cfg.MaxBatch = maxBatch
	cfg.Transport = &heldTransport{Transport: e.tr, n: n}
	return cfg, commits
}

// script writes an effect and then does what the command's input says.
type script struct {
	mu    sync.Mutex
	calls map[string]int
	// do, when set, runs in the handler's transaction on the given call of a saga.
	do func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, call int) error
}

func (s *script) handle(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
	s.mu.Lock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[cmd.SagaID]++
	call := s.calls[cmd.SagaID]
	s.mu.Unlock()
	if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, $3)`, cmd.SagaID, cmd.Step, cmd.Kind); err != nil {
		return nil, err
	}
	if s.do != nil {
		if err := s.do(ctx, tx, cmd, call); err != nil {
			return nil, err
		}
	}
	var in struct{ Do string }
	_ = json.Unmarshal(cmd.Input, &in)
	switch in.Do {
	case "fail":
		return nil, participant.Failf("insufficient funds")
	case "retry":
		return nil, errors.New("connection reset by peer")
	case "panic":
		panic("index out of range")
	}
	return json.RawMessage(`{"entry":1}`), nil
}

func (s *script) callsOf(saga string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[saga]
}

func with(cmd *protocol.StepCommand, do string) *protocol.StepCommand {
	cmd.Input = json.RawMessage(`{"do":"` + do + `"}`)
	return cmd
}

// replies reads n replies, by "saga/kind".
func (e *env) repliesBy(n int) map[string][]*protocol.Reply {
	e.t.Helper()
	got := map[string][]*protocol.Reply{}
	for range n {
		r, _ := e.reply()
		got[r.SagaID+"/"+string(r.Kind)] = append(got[r.SagaID+"/"+string(r.Kind)], r)
	}
	return got
}

// TestWorkerGroupMixedOutcomes: a group of commands with every outcome is committed in one
// transaction, and each command is settled as it would be alone; with MaxBatch 1, each decision
// has a transaction of its own, as before group commit.
func TestWorkerGroupMixedOutcomes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		maxBatch int
		commits  int64
	}{{8, 1}, {1, 3}} {
		t.Run(fmt.Sprintf("max_batch=%d", tc.maxBatch), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			dead, err := e.coord.Consume(e.ctx, protocol.QueueDead, 16)
			require.NoError(t, err)
			nul := debit("s\x00nul") // valid JSON, but PostgreSQL text cannot hold a NUL
			cmds := []*protocol.StepCommand{
				with(debit("s-ok"), "ok"),
				with(debit("s-fail"), "fail"),
				with(debit("s-retry"), "retry"),
				with(debit("s-ok"), "ok"), // a duplicate delivery
				refund("s-comp"),          // before its action
				with(debit("s-comp"), "ok"),
				nul,
				with(debit("s-panic"), "panic"),
			}
			for _, c := range cmds {
				e.send(c)
			}
			cfg, commits := e.groupConfig(tc.maxBatch, len(cmds))
			var committed atomic.Int32
			cfg.OnCommitted = func(*protocol.StepCommand, protocol.StepReply) { committed.Add(1) }
			h := &script{}
			e.start(cfg, map[string]participant.Handler{"debit": h.handle, "refund_debit": h.handle})
			commits.Commits.Store(0) // Migrate's

			got := e.repliesBy(len(cmds) - 1)
			require.Len(t, got["s-ok/action"], 2)
			require.EqualValues(t, protocol.OutcomeSucceeded, got["s-ok/action"][0].Outcome)
			require.JSONEq(t, `{"entry":1}`, string(got["s-ok/action"][0].Output))
			require.Equal(t, got["s-ok/action"][0], got["s-ok/action"][1], "the duplicate gets the stored reply")
			require.EqualValues(t, protocol.OutcomeFailed, got["s-fail/action"][0].Outcome)
			require.Equal(t, "insufficient funds", got["s-fail/action"][0].Error)
			require.EqualValues(t, protocol.OutcomeRetry, got["s-retry/action"][0].Outcome)
			require.EqualValues(t, protocol.OutcomeSucceeded, got["s-comp/compensate"][0].Outcome)
			require.EqualValues(t, protocol.OutcomeFailed, got["s-comp/action"][0].Outcome)
			require.Equal(t, "compensated before action", got["s-comp/action"][0].Error)
			require.EqualValues(t, protocol.OutcomeRetry, got["s-panic/action"][0].Outcome)
			require.Contains(t, got["s-panic/action"][0].Error, "handler panicked: index out of range")

			select {
			case d := <-dead:
				require.Equal(t, protocol.CommandRef{SagaID: "s\x00nul", StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID(), d.MessageID)
				require.NoError(t, d.Ack())
			case <-time.After(waitFor):
				t.Fatal("the command with a NUL was not dead-lettered")
			}

			require.Equal(t, 1, e.count(`SELECT count(*) FROM barrier WHERE gid = 's-ok' AND reply->>'outcome' = 'succeeded'`))
			require.Equal(t, 1, e.count(`SELECT count(*) FROM barrier WHERE gid = 's-fail' AND reply->>'outcome' = 'failed'`))
			require.Equal(t, 2, e.count(`SELECT count(*) FROM barrier WHERE gid = 's-comp'`))
			require.Equal(t, 4, e.count(`SELECT count(*) FROM barrier`), "no row for a retry, a panic or the NUL")
			require.Equal(t, 1, e.effects(), "only the success keeps its effect")
			require.Equal(t, 0, h.callsOf("s-comp"), "neither the early compensation nor the refused action ran")
			require.EqualValues(t, 1, h.callsOf("s-ok"))
			require.EqualValues(t, 3, committed.Load(), "OnCommitted for each new decision")
			require.Equal(t, tc.commits, commits.Commits.Load(), "COMMITs")
		})
	}
}

// groupWithFault sends a debit for each saga, runs them as one group in which the first call of
// victim's handler also runs fault in its transaction, and returns the replies, the handler and
// the COMMITs counted from the start of the group.
func (e *env) groupWithFault(sagas []string, victim string, fault func(ctx context.Context, tx pgx.Tx) error) (map[string][]*protocol.Reply, *script, *testenv.SQLCounter) {
	e.t.Helper()
	for _, s := range sagas {
		e.send(debit(s))
	}
	cfg, commits := e.groupConfig(8, len(sagas))
	h := &script{do: func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, call int) error {
		if cmd.SagaID != victim || call != 1 {
			return nil
		}
		return fault(ctx, tx)
	}}
	e.start(cfg, map[string]participant.Handler{"debit": h.handle})
	commits.Commits.Store(0) // Migrate's
	return e.repliesBy(len(sagas)), h, commits
}

// TestWorkerGroupLostCommitRequeuesTheGroup: when the connection is lost at the group's COMMIT,
// nothing of the group was decided; every command is redelivered and answered once.
func TestWorkerGroupLostCommitRequeuesTheGroup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sagas := []string{"g1", "g2", "g3"}
	// The last command's handler ends its own backend: the COMMIT that follows finds the
	// connection gone.
	got, h, _ := e.groupWithFault(sagas, "g3", func(ctx context.Context, tx pgx.Tx) error {
		_, err := e.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, tx.Conn().PgConn().PID())
		return err
	})
	for _, s := range sagas {
		require.Len(t, got[s+"/action"], 1, s)
		require.EqualValues(t, protocol.OutcomeSucceeded, got[s+"/action"][0].Outcome, s)
		require.Equal(t, 2, h.callsOf(s), "%s: run in the lost group, then again", s)
	}
	require.Equal(t, 1, e.logs.count("group transaction failed; requeueing its commands"))
	require.Equal(t, 3, e.effects(), "each effect once")
	require.Equal(t, 3, e.count(`SELECT count(*) FROM barrier`))
}

// TestWorkerGroupRefusedCommitDecidesOneByOne: when PostgreSQL refuses the group's COMMIT (a
// deferred constraint of one handler), the group's commands are decided one by one, so that the
// guilty one cannot hold back the others.
func TestWorkerGroupRefusedCommitDecidesOneByOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := e.pool.Exec(e.ctx, `CREATE TABLE once (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED)`)
	require.NoError(t, err)
	sagas := []string{"d1", "d2", "d3"}
	got, _, commits := e.groupWithFault(sagas, "d2", func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO once VALUES (1), (1)`) // fails only at COMMIT
		return err
	})
	for _, s := range sagas {
		require.EqualValues(t, protocol.OutcomeSucceeded, got[s+"/action"][0].Outcome, s)
	}
	require.Equal(t, 1, e.logs.count("group transaction failed; deciding its commands one by one"))
	require.Equal(t, 3, e.effects())
	require.EqualValues(t, 4, commits.Commits.Load(), "the refused one, then one per command")
}

// TestWorkerGroupLockConflictIsDecidedAlone: a command whose handler loses a deadlock inside a
// group (the group held rows its other handlers locked) is decided again alone after the group,
// instead of being replied "retry", which would cost the step one of its retries.
func TestWorkerGroupLockConflictIsDecidedAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sagas := []string{"v1", "v2", "v3"}
	got, h, commits := e.groupWithFault(sagas, "v2", func(ctx context.Context, tx pgx.Tx) error {
		// What PostgreSQL raises in the victim of a deadlock.
		_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$`)
		return err
	})
	for _, s := range sagas {
		require.Len(t, got[s+"/action"], 1, s)
		require.EqualValues(t, protocol.OutcomeSucceeded, got[s+"/action"][0].Outcome, s)
	}
	require.Equal(t, 2, h.callsOf("v2"), "run in the group, then alone")
	require.Equal(t, 1, h.callsOf("v1"))
	require.Equal(t, 1, e.logs.count("command lost a lock conflict in its group; deciding it alone"))
	require.Equal(t, 3, e.effects(), "each effect once")
	require.EqualValues(t, 2, commits.Commits.Load(), "the group's, then v2's own")
}
