package participant

import (
	_ "embed"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// barrierSQLText is the barrier's SQL, which the protocol documents quote (see barrier.sql).
//
//go:embed barrier.sql
var barrierSQLText string

// sqlByName holds the statements of barrier.sql by name, for the default schema.
var sqlByName = mustParseSQL(barrierSQLText)

// barrierSQL is the statements of barrier.sql for one schema.
type barrierSQL struct {
	createBarrier, addAttempt, createPrepared string
	claim, reopen, read, readLocked, store    string
	recordPrepared, forgetPrepared            string
	claimQueries                              string
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
