package twopc_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/twopc"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newTx(n int) (*twopc.Tx, []twopc.Command) {
	parts := make([]twopc.Participant, n)
	for i := range parts {
		parts[i] = twopc.Participant{Name: string(rune('a' + i))}
	}
	return twopc.New("tx-1", parts, 10*time.Second, t0)
}

func kinds(cmds []twopc.Command) []string {
	var out []string
	for _, c := range cmds {
		out = append(out, c.Kind)
	}
	return out
}

// legal checks the recorded history against Transitions.
func legal(t *testing.T, tx *twopc.Tx) {
	t.Helper()
	from := twopc.State("")
	for i, tr := range tx.History {
		require.Equal(t, from, tr.From, "transition %d", i)
		require.Contains(t, twopc.Transitions()[tr.From], tr.To, "transition %d: %s -> %s", i, tr.From, tr.To)
		from = tr.To
	}
	require.Equal(t, tx.State, from)
}

func TestAllYesCommits(t *testing.T) {
	tx, cmds := newTx(3)
	require.Equal(t, []string{"prepare", "prepare", "prepare"}, kinds(cmds))
	require.Equal(t, t0.Add(10*time.Second), twopc.WakeAt(tx))
	for i := range 2 {
		c, changed := twopc.ApplyVote(tx, i, twopc.VoteYes, "", t0.Add(time.Second))
		require.True(t, changed)
		require.Empty(t, c, "no decision before the last vote")
	}
	c, changed := twopc.ApplyVote(tx, 2, twopc.VoteYes, "", t0.Add(2*time.Second))
	require.True(t, changed)
	require.Equal(t, twopc.StateCommitting, tx.State, "the last YES logs COMMIT")
	require.Equal(t, []string{"commit", "commit", "commit"}, kinds(c))
	require.Equal(t, t0.Add(2*time.Second), tx.DecidedAt)

	_, changed = twopc.ApplyVote(tx, 0, twopc.VoteNo, "late", t0.Add(3*time.Second))
	require.False(t, changed, "votes after the decision change nothing")
	for i := range 3 {
		require.False(t, twopc.ApplyAck(tx, i, twopc.KindAbort, t0), "an ack of the other decision is ignored")
		require.True(t, twopc.ApplyAck(tx, i, twopc.KindCommit, t0.Add(4*time.Second)))
		require.False(t, twopc.ApplyAck(tx, i, twopc.KindCommit, t0.Add(4*time.Second)), "a duplicate ack changes nothing")
	}
	require.Equal(t, twopc.StateCommitted, tx.State)
	require.True(t, twopc.WakeAt(tx).IsZero())
	legal(t, tx)
}

func TestOneNoAbortsEveryone(t *testing.T) {
	tx, _ := newTx(3)
	twopc.ApplyVote(tx, 0, twopc.VoteYes, "", t0)
	c, changed := twopc.ApplyVote(tx, 1, twopc.VoteNo, "insufficient funds", t0)
	require.True(t, changed)
	require.Equal(t, twopc.StateAborting, tx.State)
	require.Equal(t, []string{"abort", "abort", "abort"}, kinds(c), "ABORT goes to every participant, voters or not")
	require.Contains(t, tx.Reason, "insufficient funds")
	_, changed = twopc.ApplyVote(tx, 2, twopc.VoteYes, "", t0)
	require.False(t, changed, "a late YES changes nothing")
	for i := range 3 {
		twopc.ApplyAck(tx, i, twopc.KindAbort, t0)
	}
	require.Equal(t, twopc.StateAborted, tx.State)
	legal(t, tx)
}

func TestPrepareTimeoutAborts(t *testing.T) {
	tx, _ := newTx(2)
	twopc.ApplyVote(tx, 0, twopc.VoteYes, "", t0)
	_, changed := twopc.Tick(tx, t0.Add(9*time.Second))
	require.False(t, changed, "nothing is due before the deadline")
	c, changed := twopc.Tick(tx, t0.Add(10*time.Second))
	require.True(t, changed)
	require.Equal(t, twopc.StateAborting, tx.State)
	require.Len(t, c, 2)
	_, changed = twopc.ApplyVote(tx, 1, twopc.VoteYes, "", t0.Add(11*time.Second))
	require.False(t, changed, "the late YES of the silent participant changes nothing")
	legal(t, tx)
}

// A vote applied after the deadline, before the timer fired (votes queued while the coordinator
// was down), cannot commit: the timeout means abort whichever event comes first.
func TestVoteAfterDeadlineAborts(t *testing.T) {
	tx, _ := newTx(2)
	twopc.ApplyVote(tx, 0, twopc.VoteYes, "", t0)
	c, changed := twopc.ApplyVote(tx, 1, twopc.VoteYes, "", t0.Add(11*time.Second))
	require.True(t, changed)
	require.Equal(t, twopc.StateAborting, tx.State)
	require.Equal(t, []string{"abort", "abort"}, kinds(c))
	legal(t, tx)
}

func TestQueryBeforeDecisionLogsAbort(t *testing.T) {
	tx, _ := newTx(2)
	twopc.ApplyVote(tx, 0, twopc.VoteYes, "", t0)
	c, changed := twopc.Query(tx, 0, t0.Add(time.Second))
	require.True(t, changed)
	require.Equal(t, twopc.StateAborting, tx.State, "presumed abort: the query logs ABORT first")
	require.Len(t, c, 2)
	_, changed = twopc.ApplyVote(tx, 1, twopc.VoteYes, "", t0.Add(2*time.Second))
	require.False(t, changed, "so no COMMIT can follow")

	c, changed = twopc.Query(tx, 1, t0.Add(3*time.Second))
	require.True(t, changed)
	require.Equal(t, []twopc.Command{{Participant: 1, Kind: twopc.KindAbort, Attempt: 2}}, c, "a decided transaction re-sends its decision to the asker")
	legal(t, tx)
}

func TestDecisionIsResentUntilAcked(t *testing.T) {
	tx, _ := newTx(2)
	twopc.ApplyVote(tx, 0, twopc.VoteYes, "", t0)
	twopc.ApplyVote(tx, 1, twopc.VoteYes, "", t0)
	twopc.ApplyAck(tx, 0, twopc.KindCommit, t0)
	at := twopc.WakeAt(tx)
	require.False(t, at.IsZero())
	require.True(t, at.After(t0) && !at.After(t0.Add(twopc.ResendInitial)), "first re-send within the initial backoff")
	c, changed := twopc.Tick(tx, at)
	require.True(t, changed)
	require.Equal(t, []twopc.Command{{Participant: 1, Kind: twopc.KindCommit, Attempt: 2}}, c, "only the participant that did not ack")
	next := twopc.WakeAt(tx)
	require.True(t, next.Sub(at) > at.Sub(t0)/2, "the backoff grows")
	twopc.ApplyAck(tx, 1, twopc.KindCommit, next)
	require.Equal(t, twopc.StateCommitted, tx.State)
	require.True(t, twopc.WakeAt(tx).IsZero())
}

func TestBadIndexesChangeNothing(t *testing.T) {
	tx, _ := newTx(1)
	for _, i := range []int{-1, 1, 5} {
		_, changed := twopc.ApplyVote(tx, i, twopc.VoteYes, "", t0)
		require.False(t, changed)
		require.False(t, twopc.ApplyAck(tx, i, twopc.KindCommit, t0))
		_, changed = twopc.Query(tx, i, t0)
		require.False(t, changed)
	}
	_, changed := twopc.ApplyVote(tx, 0, twopc.Vote("MAYBE"), "", t0)
	require.False(t, changed)
	require.Equal(t, twopc.StatePreparing, tx.State)
}
