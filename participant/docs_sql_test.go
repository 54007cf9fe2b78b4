package participant

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
)

// These tests hold docs/protocol.md §8 and docs/twopc.md §8, which tell a worker in another
// language how to keep the barrier, to what the SDK does: the SQL they quote (a block opened with
// "```sql NAME") is barrier.sql's, and the flow they describe, run one statement at a time with
// that SQL, decides every command as the SDK does.

// docSQL returns the named SQL blocks of the protocol docs.
func docSQL(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, path := range []string{"../docs/protocol.md", "../docs/twopc.md"} {
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		lines := strings.Split(string(raw), "\n")
		for i := 0; i < len(lines); i++ {
			name, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), "```sql ")
			if !ok {
				continue
			}
			name = strings.TrimSpace(name)
			var body []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				body = append(body, lines[i])
			}
			require.Less(t, i, len(lines), "%s: block %s is not closed", path, name)
			text := strings.Join(body, "\n")
			if prev, dup := out[name]; dup {
				require.Equal(t, normalizeSQL(prev), normalizeSQL(text), "%s quotes %s twice, differently", path, name)
			}
			out[name] = text
		}
	}
	return out
}

// normalizeSQL leaves out a statement's comments, layout and final semicolon.
func normalizeSQL(s string) string {
	lines := strings.Split(s, "\n")
	for i, line := range lines {
		if c := strings.Index(line, "--"); c >= 0 {
			lines[i] = line[:c]
		}
	}
	return strings.TrimSuffix(strings.Join(strings.Fields(strings.Join(lines, " ")), " "), ";")
}

// TestDocsQuoteTheBarrierSQL: the statements the docs show are barrier.sql's, and every statement
// of barrier.sql that a worker needs is shown.
func TestDocsQuoteTheBarrierSQL(t *testing.T) {
	t.Parallel()
	docs := docSQL(t)
	for name, text := range docs {
		stmt, ok := sqlByName[name]
		require.True(t, ok, "the docs quote %q, which barrier.sql does not have", name)
		require.Equal(t, normalizeSQL(stmt), normalizeSQL(text), "the docs quote %s otherwise than barrier.sql", name)
	}
	sdkOnly := map[string]bool{"add-attempt": true} // upgrades the SDK's own older tables
	for name := range sqlByName {
		if !sdkOnly[name] {
			require.Contains(t, docs, name, "barrier.sql's %s is not in the docs", name)
		}
	}
}

// docWorker decides commands as the docs tell a worker in another language to: one statement at a
// time, with the SQL the docs quote.
type docWorker struct {
	pool *pgxpool.Pool
	sql  map[string]string
}

// newDocFlow makes the docs' tables in a fresh schema, and returns a docWorker and the SDK's
// barrier on them.
func newDocFlow(t *testing.T) (*docWorker, *barrierEnv) {
	t.Helper()
	pool, dbURL := testenv.Pool(t)
	schema := searchPath(t, dbURL)
	ctx := context.Background()
	w := &docWorker{pool: pool, sql: map[string]string{}}
	for name, text := range docSQL(t) {
		w.sql[name] = strings.ReplaceAll(text, DefaultSchema+".", pgx.Identifier{schema}.Sanitize()+".")
	}
	for _, ddl := range []string{w.sql["create-barrier"], w.sql["create-prepared"]} {
		_, err := pool.Exec(ctx, ddl)
		require.NoError(t, err)
	}
	_, err := pool.Exec(ctx, `CREATE TABLE effects (gid text, step text, kind text, note text)`)
	require.NoError(t, err)
	sdk, err := New(Config{Name: "p", Transport: noTransport{}, DB: pool, Schema: schema})
	require.NoError(t, err)
	require.NoError(t, sdk.Migrate(ctx), "the SDK takes the tables the docs made")
	return w, &barrierEnv{pool: pool, schema: schema, b: sdk.barrier}
}

// claim runs the docs' claim and reports whether it affected a row.
func (w *docWorker) claim(ctx context.Context, tx pgx.Tx, gid, step string, kind protocol.Kind, reply string, attempt int) (bool, error) {
	tag, err := tx.Exec(ctx, w.sql["claim"], gid, step, kind, reply, attempt)
	return tag.RowsAffected() == 1, err
}

// reply runs a statement of the docs that returns a reply, and decodes it into dst.
func (w *docWorker) reply(ctx context.Context, tx pgx.Tx, dst any, name string, args ...any) error {
	var raw string
	if err := tx.QueryRow(ctx, w.sql[name], args...).Scan(&raw); err != nil {
		return err
	}
	return json.Unmarshal([]byte(raw), dst)
}

func (w *docWorker) store(ctx context.Context, tx pgx.Tx, dst any, gid, step string, kind protocol.Kind, reply any) error {
	body, err := json.Marshal(reply)
	if err != nil {
		return err
	}
	return w.reply(ctx, tx, dst, "store", gid, step, kind, string(body))
}

// step decides a saga step command as docs/protocol.md §8 says.
func (w *docWorker) step(ctx context.Context, cmd *protocol.StepCommand, h Handler) (r protocol.StepReply, err error) {
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return r, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	gid, step, attempt := cmd.SagaID, cmd.Step, cmd.Attempt
	retry := func(err error) (protocol.StepReply, error) {
		return protocol.StepReply{Outcome: protocol.OutcomeRetry, Error: err.Error()}, tx.Rollback(ctx)
	}
	var reply protocol.StepReply
	if cmd.Kind == protocol.KindAction {
		claimed, err := w.claim(ctx, tx, gid, step, protocol.KindAction, `{}`, attempt)
		if err != nil {
			return r, err
		}
		if !claimed {
			tag, err := tx.Exec(ctx, w.sql["reopen"], gid, step, protocol.KindAction, attempt, "compensated before action")
			if err != nil {
				return r, err
			}
			if tag.RowsAffected() == 0 {
				return r, w.reply(ctx, tx, &r, "read", gid, step, protocol.KindAction)
			}
		}
		if _, err := tx.Exec(ctx, `SAVEPOINT handler`); err != nil {
			return r, err
		}
		out, herr := h(ctx, tx, cmd)
		switch {
		case herr == nil:
			reply = protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: out}
		case IsBusiness(herr):
			if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT handler`); err != nil {
				return r, err
			}
			reply = protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: herr.Error()}
		default:
			return retry(herr)
		}
	} else {
		claimed, err := w.claim(ctx, tx, gid, step, protocol.KindCompensate, `{}`, attempt)
		if err != nil {
			return r, err
		}
		if !claimed {
			return r, w.reply(ctx, tx, &r, "read", gid, step, protocol.KindCompensate)
		}
		refusal := protocol.StepReply{Outcome: protocol.OutcomeFailed, Error: "compensated before action"}
		body, _ := json.Marshal(refusal)
		reply = protocol.StepReply{Outcome: protocol.OutcomeSucceeded}
		planted, err := w.claim(ctx, tx, gid, step, protocol.KindAction, string(body), attempt)
		if err != nil {
			return r, err
		}
		if !planted {
			var action protocol.StepReply
			if err := w.reply(ctx, tx, &action, "read-locked", gid, step, protocol.KindAction); err != nil {
				return r, err
			}
			switch action.Outcome {
			case protocol.OutcomeFailed:
				if action.Error != refusal.Error {
					if err := w.store(ctx, tx, new(protocol.StepReply), gid, step, protocol.KindAction, refusal); err != nil {
						return r, err
					}
				}
			case protocol.OutcomeSucceeded:
				if _, err := tx.Exec(ctx, `SAVEPOINT handler`); err != nil {
					return r, err
				}
				c := *cmd
				if len(c.Output) == 0 {
					c.Output = action.Output
				}
				out, herr := h(ctx, tx, &c)
				if herr != nil {
					return retry(herr)
				}
				reply = protocol.StepReply{Outcome: protocol.OutcomeSucceeded, Output: out}
			}
		}
	}
	if err := w.store(ctx, tx, &r, gid, step, cmd.Kind, reply); err != nil {
		return r, err
	}
	return r, tx.Commit(ctx)
}

// flowHandler is the business logic of the flow tests: it writes an effect (noting the output a
// compensation undoes), then does what do says, and counts its calls.
type flowHandler struct {
	calls int
	do    string
}

func (f *flowHandler) handle(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
	f.calls++
	if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, $3, $4)`, cmd.SagaID, cmd.Step, cmd.Kind, string(cmd.Output)); err != nil {
		return nil, err
	}
	switch f.do {
	case "fail":
		return nil, Failf("insufficient funds")
	case "retry":
		return nil, errors.New("connection reset by peer")
	}
	if cmd.Kind == protocol.KindCompensate {
		return json.RawMessage(`{"undid":` + string(cmd.Output) + `}`), nil
	}
	return json.RawMessage(`{"entry":` + strconv.Itoa(cmd.Attempt) + `}`), nil
}

// sameRows checks that the rows query returns for the gids the SDK decided ("sdk-...") are those
// for the gids the docs' flow decided ("doc-...").
func sameRows(t *testing.T, e *barrierEnv, query string) {
	t.Helper()
	rows := func(prefix string) []string {
		r, err := e.pool.Query(context.Background(), query, prefix+"-%")
		require.NoError(t, err)
		got, err := pgx.CollectRows(r, pgx.RowTo[string])
		require.NoError(t, err)
		for i := range got {
			got[i] = strings.TrimPrefix(got[i], prefix+"-")
		}
		return got
	}
	sdk := rows("sdk")
	require.NotEmpty(t, sdk)
	require.Equal(t, sdk, rows("doc"), query)
}

// TestDocumentedSagaFlowMatchesTheSDK runs docs/protocol.md §8's flow and the SDK through the same
// commands: every reply, barrier row and effect is the same.
func TestDocumentedSagaFlowMatchesTheSDK(t *testing.T) {
	t.Parallel()
	doc, e := newDocFlow(t)
	ctx := context.Background()
	type step struct {
		kind    protocol.Kind
		attempt int
		do      string
		want    string // the reply's JSON
		ran     bool   // the handler ran
	}
	act := func(attempt int, do, want string, ran bool) step {
		return step{protocol.KindAction, attempt, do, want, ran}
	}
	comp := func(do, want string, ran bool) step { return step{protocol.KindCompensate, 1, do, want, ran} }
	const refused = `{"outcome":"failed","error":"compensated before action"}`
	const noop = `{"outcome":"succeeded"}`
	scenarios := map[string][]step{
		"applied once, duplicate replayed": {
			act(1, "ok", `{"outcome":"succeeded","output":{"entry":1}}`, true),
			act(1, "ok", `{"outcome":"succeeded","output":{"entry":1}}`, false),
		},
		"compensation first plants a refusal": {
			comp("ok", noop, false),
			act(1, "ok", refused, false),
			comp("ok", noop, false),
		},
		"later attempt reopens a business failure": {
			act(1, "fail", `{"outcome":"failed","error":"insufficient funds"}`, true),
			act(1, "ok", `{"outcome":"failed","error":"insufficient funds"}`, false),
			act(2, "ok", `{"outcome":"succeeded","output":{"entry":2}}`, true),
			act(3, "ok", `{"outcome":"succeeded","output":{"entry":2}}`, false),
		},
		"compensation turns a failure into the refusal": {
			act(1, "fail", `{"outcome":"failed","error":"insufficient funds"}`, true),
			comp("ok", noop, false),
			act(2, "ok", refused, false),
		},
		"compensation undoes a success with its output": {
			act(1, "ok", `{"outcome":"succeeded","output":{"entry":1}}`, true),
			comp("fail", `{"outcome":"retry","error":"insufficient funds"}`, true),
			comp("retry", `{"outcome":"retry","error":"connection reset by peer"}`, true),
			comp("ok", `{"outcome":"succeeded","output":{"undid":{"entry":1}}}`, true),
			comp("ok", `{"outcome":"succeeded","output":{"undid":{"entry":1}}}`, false),
		},
		"transient failure keeps nothing": {
			act(1, "retry", `{"outcome":"retry","error":"connection reset by peer"}`, true),
			act(1, "ok", `{"outcome":"succeeded","output":{"entry":1}}`, true),
		},
	}
	for name, steps := range scenarios {
		sdkH, docH := &flowHandler{}, &flowHandler{}
		for i, s := range steps {
			cmd := func(prefix string) *protocol.StepCommand {
				c := action(prefix + "-" + name)
				if s.kind == protocol.KindCompensate {
					c = compensation(prefix + "-" + name)
				}
				c.Attempt = s.attempt
				return c
			}
			sdkH.do, docH.do = s.do, s.do
			sdkCalls, docCalls := sdkH.calls, docH.calls
			sdk := e.run(t, cmd("sdk"), sdkH.handle).reply
			got, err := doc.step(ctx, cmd("doc"), docH.handle)
			require.NoError(t, err, "%s, command %d", name, i)
			require.Equal(t, sdk, got, "%s, command %d: the docs' flow replies as the SDK", name, i)
			body, err := json.Marshal(got)
			require.NoError(t, err)
			require.JSONEq(t, s.want, string(body), "%s, command %d", name, i)
			require.Equal(t, s.ran, sdkH.calls > sdkCalls, "%s, command %d: the SDK's handler ran", name, i)
			require.Equal(t, s.ran, docH.calls > docCalls, "%s, command %d: the docs' handler ran", name, i)
		}
	}
	sameRows(t, e, `SELECT gid || ' ' || step || ' ' || kind || ' ' || reply::text || ' ' || attempt FROM barrier WHERE gid LIKE $1 ORDER BY 1`)
	sameRows(t, e, `SELECT gid || ' ' || kind || ' ' || note FROM effects WHERE gid LIKE $1 ORDER BY 1`)
}

// tx decides a two-phase-commit command as docs/twopc.md §8 says. outcome is "reply", "requeue"
// (nothing sent) or "violation" (dead-lettered).
func (w *docWorker) tx(ctx context.Context, cmd *protocol.TxCommand, h *TxHandlers) (r protocol.TxReply, outcome string, err error) {
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return r, "", err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	id, name := cmd.TxID, cmd.Participant
	claimed, err := w.claim(ctx, tx, id, name, cmd.Kind, `{}`, cmd.Attempt)
	if err != nil {
		return r, "", err
	}
	if !claimed {
		return r, "reply", w.reply(ctx, tx, &r, "read", id, name, cmd.Kind)
	}
	// run runs a handler in SAVEPOINT handler, with the prepared record's payload when the
	// command carries none.
	run := func(h TxHandler, payload string) error {
		if _, err := tx.Exec(ctx, `SAVEPOINT handler`); err != nil {
			return err
		}
		c := *cmd
		if len(c.Payload) == 0 && payload != "" {
			c.Payload = json.RawMessage(payload)
		}
		return h(ctx, tx, &c)
	}
	// forget runs forget-prepared: found is false when there was no record.
	forget := func() (payload string, found bool, err error) {
		err = tx.QueryRow(ctx, w.sql["forget-prepared"], id, name).Scan(&payload)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", false, nil
		}
		return payload, err == nil, err
	}
	reply := protocol.TxReply{Outcome: protocol.OutcomeAck}
	switch cmd.Kind {
	case protocol.KindPrepare:
		herr := run(h.Prepare, "")
		switch {
		case herr == nil:
			var payload *string
			if len(cmd.Payload) > 0 {
				s := string(cmd.Payload)
				payload = &s
			}
			if _, err := tx.Exec(ctx, w.sql["record-prepared"], id, name, payload); err != nil {
				return r, "", err
			}
			reply = protocol.TxReply{Outcome: protocol.OutcomeVoteYes}
		case IsBusiness(herr):
			if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT handler`); err != nil {
				return r, "", err
			}
			reply = protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: herr.Error()}
		default:
			return r, "requeue", nil
		}
	case protocol.KindAbort:
		refusal, _ := json.Marshal(protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: "aborted before prepare"})
		planted, err := w.claim(ctx, tx, id, name, protocol.KindPrepare, string(refusal), cmd.Attempt)
		if err != nil {
			return r, "", err
		}
		var vote protocol.TxReply
		if !planted {
			if err := w.reply(ctx, tx, &vote, "read", id, name, protocol.KindPrepare); err != nil {
				return r, "", err
			}
		}
		if vote.Outcome == protocol.OutcomeVoteYes {
			payload, found, err := forget()
			switch {
			case err != nil:
				return r, "", err
			case !found:
				return r, "violation", nil
			}
			if err := run(h.Abort, payload); err != nil {
				return r, "requeue", nil
			}
		}
	case protocol.KindCommit:
		var vote protocol.TxReply
		err := w.reply(ctx, tx, &vote, "read", id, name, protocol.KindPrepare)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && vote.Outcome != protocol.OutcomeVoteYes) {
			return r, "violation", nil
		}
		if err != nil {
			return r, "", err
		}
		payload, found, err := forget()
		switch {
		case err != nil:
			return r, "", err
		case !found:
			return r, "violation", nil
		}
		if err := run(h.Commit, payload); err != nil {
			return r, "requeue", nil
		}
	}
	if err := w.store(ctx, tx, &r, id, name, cmd.Kind, reply); err != nil {
		return r, "", err
	}
	return r, "reply", tx.Commit(ctx)
}

// flowTxHandlers are the 2PC handlers of the flow tests: each writes an effect noting the payload
// it got, then does what do says; calls counts them all.
type flowTxHandlers struct {
	calls int
	do    string
}

func (f *flowTxHandlers) handlers() *TxHandlers {
	h := func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
		f.calls++
		if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, $3, $4)`, cmd.TxID, cmd.Participant, cmd.Kind, string(cmd.Payload)); err != nil {
			return err
		}
		switch f.do {
		case "fail":
			return Failf("insufficient funds")
		case "retry":
			return errors.New("connection reset by peer")
		}
		return nil
	}
	return &TxHandlers{Prepare: h, Commit: h, Abort: h}
}

// TestDocumentedTwoPCFlowMatchesTheSDK runs docs/twopc.md §8's flow and the SDK through the same
// commands: every reply, requeue, violation, barrier row, prepared record and effect is the same.
func TestDocumentedTwoPCFlowMatchesTheSDK(t *testing.T) {
	t.Parallel()
	doc, e := newDocFlow(t)
	ctx := context.Background()
	type step struct {
		kind protocol.Kind
		do   string
		want string // the reply's JSON, "requeue" or "violation"
		ran  bool   // a handler ran
	}
	const yes, ack = `{"outcome":"vote_yes"}`, `{"outcome":"ack"}`
	const no = `{"outcome":"vote_no","error":"insufficient funds"}`
	scenarios := map[string][]step{
		"prepare then commit": {
			{protocol.KindPrepare, "ok", yes, true},
			{protocol.KindPrepare, "ok", yes, false},
			{protocol.KindCommit, "retry", "requeue", true},
			{protocol.KindCommit, "fail", "requeue", true},
			{protocol.KindCommit, "ok", ack, true},
			{protocol.KindCommit, "ok", ack, false},
			{protocol.KindAbort, "ok", "violation", false},
		},
		"prepare then abort": {
			{protocol.KindPrepare, "ok", yes, true},
			{protocol.KindAbort, "ok", ack, true},
			{protocol.KindAbort, "ok", ack, false},
			{protocol.KindCommit, "ok", "violation", false},
		},
		"vote no then abort": {
			{protocol.KindPrepare, "fail", no, true},
			{protocol.KindCommit, "ok", "violation", false},
			{protocol.KindAbort, "ok", ack, false},
		},
		"abort before prepare": {
			{protocol.KindAbort, "ok", ack, false},
			{protocol.KindPrepare, "ok", `{"outcome":"vote_no","error":"aborted before prepare"}`, false},
		},
		"never prepared": {
			{protocol.KindCommit, "ok", "violation", false},
		},
		"transient prepare keeps nothing": {
			{protocol.KindPrepare, "retry", "requeue", true},
			{protocol.KindPrepare, "ok", yes, true},
		},
	}
	for name, steps := range scenarios {
		sdkH, docH := &flowTxHandlers{}, &flowTxHandlers{}
		for i, s := range steps {
			cmd := func(prefix string) *protocol.TxCommand {
				c := txCmd(prefix+"-"+name, s.kind)
				if s.kind != protocol.KindPrepare {
					c.Payload = nil // filled from the prepared record
				}
				return c
			}
			sdkH.do, docH.do = s.do, s.do
			sdkCalls, docCalls := sdkH.calls, docH.calls
			res, err := e.b.runTwoPC(ctx, cmd("sdk"), sdkH.handlers())
			sdk := "reply"
			switch {
			case errors.As(err, new(*violationError)):
				sdk = "violation"
			case err != nil:
				require.NoError(t, err, "%s, command %d", name, i)
			case res.requeue:
				sdk = "requeue"
			}
			got, outcome, err := doc.tx(ctx, cmd("doc"), docH.handlers())
			require.NoError(t, err, "%s, command %d", name, i)
			require.Equal(t, sdk, outcome, "%s, command %d: the docs' flow decides as the SDK", name, i)
			if outcome == "reply" {
				require.Equal(t, res.reply, got, "%s, command %d: the docs' flow replies as the SDK", name, i)
				body, err := json.Marshal(got)
				require.NoError(t, err)
				require.JSONEq(t, s.want, string(body), "%s, command %d", name, i)
			} else {
				require.Equal(t, s.want, outcome, "%s, command %d", name, i)
			}
			require.Equal(t, s.ran, sdkH.calls > sdkCalls, "%s, command %d: the SDK's handler ran", name, i)
			require.Equal(t, s.ran, docH.calls > docCalls, "%s, command %d: the docs' handler ran", name, i)
		}
	}
	sameRows(t, e, `SELECT gid || ' ' || kind || ' ' || reply::text || ' ' || attempt FROM barrier WHERE gid LIKE $1 ORDER BY 1`)
	sameRows(t, e, `SELECT tx_id || ' ' || coalesce(payload::text, '') FROM prepared WHERE tx_id LIKE $1 ORDER BY 1`)
	sameRows(t, e, `SELECT gid || ' ' || kind || ' ' || note FROM effects WHERE gid LIKE $1 ORDER BY 1`)
	require.Equal(t, 2, e.count(t, `SELECT count(*) FROM prepared`), "the transient scenario's, by each")
}
