package participant

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sagacoord/sagacoord/protocol"
)

// barrierSQLText is the barrier's SQL, which the protocol documents quote (see barrier.sql).
//
//go:embed barrier.sql
var barrierSQLText string

// sqlByName holds the statements of barrier.sql by name, for the default schema.
var sqlByName = mustParseSQL(barrierSQLText)

// barrierSQL is the statements of barrier.sql for one schema.
type barrierSQL struct {
	createBarrier, addAttempt, createPrepared, createFinals string
	claim, reopen, read, readLocked, store                  string
	recordPrepared, forgetPrepared                          string
	claimQueries                                            string
	noteFinals, sweepBarrier, forgetFinals                  string
}

func newBarrierSQL(schema string) barrierSQL {
	qualified := pgx.Identifier{schema}.Sanitize() + "."
	get := func(name string) string {
		s, ok := sqlByName[name]
		if !ok {
			panic("participant: barrier.sql has no statement " + name)
		}
		return strings.ReplaceAll(s, DefaultSchema+".", qualified)
	}
	return barrierSQL{
		createBarrier:  get("create-barrier"),
		addAttempt:     get("add-attempt"),
		createPrepared: get("create-prepared"),
		claim:          get("claim"),
		reopen:         get("reopen"),
		read:           get("read"),
		readLocked:     get("read-locked"),
		store:          get("store"),
		recordPrepared: get("record-prepared"),
		forgetPrepared: get("forget-prepared"),
		claimQueries:   get("claim-queries"),
		createFinals:   get("create-finals"),
		noteFinals:     get("note-finals"),
		sweepBarrier:   get("sweep-barrier"),
		forgetFinals:   get("forget-finals"),
	}
}

// parseSQL splits a file of statements, each after a line "-- name: NAME", into its statements by
// name. Other lines that begin with "--" are comments and are left out, as is the ";" that ends a
// statement.
func parseSQL(text string) (map[string]string, error) {
	out := map[string]string{}
	var name string
	var body []string
	flush := func() error {
		if name == "" {
			return nil
		}
		s := strings.TrimSuffix(strings.TrimSpace(strings.Join(body, "\n")), ";")
		if s == "" {
			return fmt.Errorf("statement %s is empty", name)
		}
		if _, dup := out[name]; dup {
			return fmt.Errorf("statement %s is named twice", name)
		}
		out[name] = s
		return nil
	}
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "-- name: "):
			if err := flush(); err != nil {
				return nil, err
			}
			name, body = strings.TrimSpace(strings.TrimPrefix(line, "-- name: ")), nil
		case strings.HasPrefix(strings.TrimSpace(line), "--"):
		case name == "" && strings.TrimSpace(line) != "":
			return nil, fmt.Errorf("statement before the first name: %q", line)
		default:
			body = append(body, line)
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

func mustParseSQL(text string) map[string]string {
	m, err := parseSQL(text)
	if err != nil {
		panic("participant: barrier.sql: " + err.Error())
	}
	return m
}

// claim queues the claim of row, with reply as its first reply ('{}' while undecided, or a
// refusal); tag tells whether the row was new.
func (b *barrier) claim(bt *batch, tag *pgconn.CommandTag, row rowKey, reply string, attempt int) {
	bt.exec(tag, "insert barrier row "+row.String(), b.sql.claim, row.gid, row.step, row.kind, reply, attempt)
}

// reopen queues the reopening of a business failure stored in row for a later attempt.
func (b *barrier) reopen(bt *batch, tag *pgconn.CommandTag, row rowKey, attempt int) {
	bt.exec(tag, "reopen barrier row "+row.String(), b.sql.reopen, row.gid, row.step, row.kind, attempt, errCompensatedFirst)
}

// read queues the read of the reply row holds into raw.
func (b *barrier) read(bt *batch, raw *string, row rowKey) {
	bt.queryRow(raw, "read barrier row "+row.String(), b.sql.read, row.gid, row.step, row.kind)
}

// readIfAny is read for a row that may be absent; found tells whether it was there.
func (b *barrier) readIfAny(bt *batch, raw *string, found *bool, row rowKey) {
	bt.queryOptional(raw, found, "read barrier row "+row.String(), b.sql.read, row.gid, row.step, row.kind)
}

// readLocked is readIfAny, locking the row until the transaction ends. It does not look at the
// finals: a final gid claims nothing, and its command is answered by replay.
func (b *barrier) readLocked(bt *batch, raw *string, found *bool, row rowKey) {
	bt.queryOptional(raw, found, "read barrier row "+row.String(), b.sql.readLocked, row.gid, row.step, row.kind)
}

// store queues the write of the decided reply in bt. Once bt has been sent, the returned function
// gives the reply as the database holds it, so that the first reply and every re-sent copy are
// byte for byte the same.
//
// The COMMIT that follows in the batch does not wait for the row count: the row cannot be missing,
// as this transaction inserted or found it and barrier rows are never deleted (a handler that
// deletes them breaks the barrier whatever it does).
func (b *barrier) store(bt *batch, row rowKey, r storedReply) (func() (storedReply, error), error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}
	var raw string
	bt.queryRow(&raw, "store reply in barrier row "+row.String(), b.sql.store, row.gid, row.step, row.kind, string(body))
	return func() (storedReply, error) { return decodeStored(raw, row) }, nil
}

// recordPrepared queues the record of cmd's transaction as prepared here, with its payload.
func (b *barrier) recordPrepared(bt *batch, cmd *protocol.TxCommand) {
	var payload *string
	if len(cmd.Payload) > 0 {
		s := string(cmd.Payload)
		payload = &s
	}
	bt.exec(nil, "record prepared transaction "+cmd.TxID, b.sql.recordPrepared, cmd.TxID, cmd.Participant, payload)
}

// forgetPrepared queues the deletion of the prepared record of cmd's transaction, which gives its
// payload; found tells whether there was one.
func (b *barrier) forgetPrepared(bt *batch, payload *string, found *bool, cmd *protocol.TxCommand) {
	bt.queryOptional(payload, found, "delete prepared record of transaction "+cmd.TxID, b.sql.forgetPrepared, cmd.TxID, cmd.Participant)
}

// decodeStored decodes the reply that row holds.
func decodeStored(raw string, row rowKey) (storedReply, error) {
	var r storedReply
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return storedReply{}, fmt.Errorf("decode barrier row %s: %w", row, err)
	}
	if r.Outcome == "" {
		return storedReply{}, fmt.Errorf("barrier row %s holds no reply", row)
	}
	return r, nil
}

// refusalJSON is the JSON of a refusal, planted in a row before its command arrived.
func refusalJSON(r storedReply) string {
	body, err := json.Marshal(r)
	if err != nil {
		panic(err) // a reply without output always encodes
	}
	return string(body)
}
