package participant

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSQL(t *testing.T) {
	t.Parallel()
	got, err := parseSQL(`-- a file comment

-- what the first one does
-- name: one
SELECT 1
  FROM t;

-- name: two
ALTER TABLE t ADD c int;
ALTER TABLE t DROP c;
`)
	require.NoError(t, err)
	require.Equal(t, map[string]string{
		"one": "SELECT 1\n  FROM t",
		"two": "ALTER TABLE t ADD c int;\nALTER TABLE t DROP c",
	}, got, "comments and the last semicolon are left out")

	for text, want := range map[string]string{
		"SELECT 1;\n-- name: one\nSELECT 1":               "statement before the first name",
		"-- name: one\n-- name: two\nSELECT 1":            "statement one is empty",
		"-- name: one\nSELECT 1;\n-- name: one\nSELECT 2": "statement one is named twice",
	} {
		_, err := parseSQL(text)
		require.ErrorContains(t, err, want, text)
	}
}

// TestBarrierSQLForSchema: every statement names its tables in the configured schema, and no
// statement of barrier.sql goes unused.
func TestBarrierSQLForSchema(t *testing.T) {
	t.Parallel()
	s := newBarrierSQL("my_schema")
	all := []string{s.createBarrier, s.addAttempt, s.createPrepared, s.claim, s.reopen, s.read, s.readLocked, s.store,
		s.recordPrepared, s.forgetPrepared, s.claimQueries, s.createFinals, s.noteFinals, s.sweepBarrier, s.forgetFinals}
	require.Len(t, sqlByName, len(all))
	for _, stmt := range all {
		require.NotContains(t, stmt, DefaultSchema)
		require.Contains(t, stmt, `"my_schema".`)
	}
	require.True(t, strings.HasPrefix(s.claim, `INSERT INTO "my_schema".barrier `), s.claim)
}
