package twopc_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/twopc"
)

var (
	t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	m  twopc.Machine
)

func newTx(n int) (*twopc.Tx, []twopc.Command) {
	parts := make([]twopc.Participant, n)
	for i := range parts {
		parts[i] = twopc.Participant{Name: name(i)}
	}
	tx, fx := m.Begin("tx-1", parts, 10*time.Second, t0)
	return tx, fx.Commands
}

func name(i int) string { return string(rune('a' + i)) }

// vote applies participant i's vote (YES, NO or anything else) as its reply to PREPARE.
func vote(tx *twopc.Tx, i int, v twopc.Vote, reason string, at time.Time) ([]twopc.Command, bool) {
	outcome := protocol.Outcome("vote_" + string(v))
	switch v {
	case twopc.VoteYes:
		outcome = protocol.OutcomeVoteYes
	case twopc.VoteNo:
		outcome = protocol.OutcomeVoteNo
	}
	fx, changed := m.Reply(tx, protocol.Reply{CommandRef: protocol.CommandRef{TxID: tx.ID, Participant: name(i), Kind: protocol.KindPrepare, Attempt: 1}, Outcome: outcome, Error: reason}, at)
	return fx.Commands, changed
}

// ack applies participant i's acknowledgement of a decision of kind.
func ack(tx *twopc.Tx, i int, kind protocol.Kind, at time.Time) bool {
	_, changed := m.Reply(tx, protocol.Reply{CommandRef: protocol.CommandRef{TxID: tx.ID, Participant: name(i), Kind: kind, Attempt: 1}, Outcome: protocol.OutcomeAck}, at)
	return changed
}

func query(tx *twopc.Tx, i int, at time.Time) ([]twopc.Command, bool) {
	fx, changed := m.Query(tx, name(i), at)
	return fx.Commands, changed
}

func tick(tx *twopc.Tx, at time.Time) ([]twopc.Command, bool) {
	fx, changed := m.Tick(tx, at)
	return fx.Commands, changed
}

func kinds(cmds []twopc.Command) []protocol.Kind {
	var out []protocol.Kind
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
		ok := false
		for _, e := range twopc.Transitions() {
			ok = ok || e.From == tr.From && e.To == tr.To
		}
		require.True(t, ok, "transition %d: %s -> %s is not in Transitions", i, tr.From, tr.To)
		from = tr.To
	}
	require.Equal(t, tx.State, from)
}

func TestAllYesCommits(t *testing.T) {
	tx, cmds := newTx(3)
	require.Equal(t, []protocol.Kind{"prepare", "prepare", "prepare"}, kinds(cmds))
	require.Equal(t, t0.Add(10*time.Second), m.WakeAt(tx))
	for i := range 2 {
		c, changed := vote(tx, i, twopc.VoteYes, "", t0.Add(time.Second))
		require.True(t, changed)
		require.Empty(t, c, "no decision before the last vote")
	}
	c, changed := vote(tx, 2, twopc.VoteYes, "", t0.Add(2*time.Second))
	require.True(t, changed)
	require.Equal(t, twopc.StateCommitting, tx.State, "the last YES logs COMMIT")
	require.Equal(t, []protocol.Kind{"commit", "commit", "commit"}, kinds(c))
	require.Equal(t, t0.Add(2*time.Second), tx.DecidedAt)

	_, changed = vote(tx, 0, twopc.VoteNo, "late", t0.Add(3*time.Second))
	require.False(t, changed, "votes after the decision change nothing")
	for i := range 3 {
		require.False(t, ack(tx, i, protocol.KindAbort, t0), "an ack of the other decision is ignored")
		require.True(t, ack(tx, i, protocol.KindCommit, t0.Add(4*time.Second)))
		require.False(t, ack(tx, i, protocol.KindCommit, t0.Add(4*time.Second)), "a duplicate ack changes nothing")
	}
	require.Equal(t, twopc.StateCommitted, tx.State)
	require.True(t, m.WakeAt(tx).IsZero())
	require.Equal(t, 3*time.Second, tx.Participants[0].Blocked(t0.Add(time.Hour)), "voted YES at 1s, acked at 4s")
	require.Equal(t, 2*time.Second, tx.Participants[2].Blocked(t0.Add(time.Hour)), "voted YES at 2s, acked at 4s")
	legal(t, tx)
}

// TestBlockedCountsFromTheYesVote: a participant that voted YES is blocked until it acknowledges
// the decision, and counted up to now while it has not; a NO or no vote blocks nothing.
func TestBlockedCountsFromTheYesVote(t *testing.T) {
	tx, _ := newTx(3)
	vote(tx, 0, twopc.VoteYes, "", t0.Add(time.Second))
	require.Equal(t, 4*time.Second, tx.Participants[0].Blocked(t0.Add(5*time.Second)), "prepared and waiting")
	require.Zero(t, tx.Participants[1].Blocked(t0.Add(5*time.Second)), "no vote yet")
	vote(tx, 1, twopc.VoteNo, "no stock", t0.Add(2*time.Second))
	require.Zero(t, tx.Participants[1].Blocked(t0.Add(5*time.Second)), "a NO holds nothing")
	require.True(t, ack(tx, 0, protocol.KindAbort, t0.Add(3*time.Second)))
	require.Equal(t, 2*time.Second, tx.Participants[0].Blocked(t0.Add(time.Hour)), "released by the ABORT")
}

func TestOneNoAbortsEveryone(t *testing.T) {
	tx, _ := newTx(3)
	vote(tx, 0, twopc.VoteYes, "", t0)
	c, changed := vote(tx, 1, twopc.VoteNo, "insufficient funds", t0)
	require.True(t, changed)
	require.Equal(t, twopc.StateAborting, tx.State)
	require.Equal(t, []protocol.Kind{"abort", "abort", "abort"}, kinds(c), "ABORT goes to every participant, voters or not")
	require.Contains(t, tx.Reason, "insufficient funds")
	_, changed = vote(tx, 2, twopc.VoteYes, "", t0)
	require.False(t, changed, "a late YES changes nothing")
	for i := range 3 {
		ack(tx, i, protocol.KindAbort, t0)
	}
	require.Equal(t, twopc.StateAborted, tx.State)
	legal(t, tx)
}

func TestPrepareTimeoutAborts(t *testing.T) {
	tx, _ := newTx(2)
	vote(tx, 0, twopc.VoteYes, "", t0)
	_, changed := tick(tx, t0.Add(9*time.Second))
	require.False(t, changed, "nothing is due before the deadline")
	c, changed := tick(tx, t0.Add(10*time.Second))
	require.True(t, changed)
	require.Equal(t, twopc.StateAborting, tx.State)
	require.Len(t, c, 2)
	_, changed = vote(tx, 1, twopc.VoteYes, "", t0.Add(11*time.Second))
	require.False(t, changed, "the late YES of the silent participant changes nothing")
	legal(t, tx)
}

// A vote applied after the deadline, before the timer fired (votes queued while the coordinator
// was down), cannot commit: the timeout means abort whichever event comes first.
func TestVoteAfterDeadlineAborts(t *testing.T) {
	tx, _ := newTx(2)
	vote(tx, 0, twopc.VoteYes, "", t0)
	c, changed := vote(tx, 1, twopc.VoteYes, "", t0.Add(11*time.Second))
	require.True(t, changed)
	require.Equal(t, twopc.StateAborting, tx.State)
	require.Equal(t, []protocol.Kind{"abort", "abort"}, kinds(c))
	legal(t, tx)
}

func TestQueryBeforeDecisionLogsAbort(t *testing.T) {
	tx, _ := newTx(2)
	vote(tx, 0, twopc.VoteYes, "", t0)
	c, changed := query(tx, 0, t0.Add(time.Second))
	require.True(t, changed)
	require.Equal(t, twopc.StateAborting, tx.State, "presumed abort: the query logs ABORT first")
	require.Len(t, c, 2)
	_, changed = vote(tx, 1, twopc.VoteYes, "", t0.Add(2*time.Second))
	require.False(t, changed, "so no COMMIT can follow")

	c, changed = query(tx, 1, t0.Add(3*time.Second))
	require.True(t, changed)
	require.Equal(t, []twopc.Command{{Participant: 1, Kind: protocol.KindAbort, Attempt: 2}}, c, "a decided transaction re-sends its decision to the asker")
	legal(t, tx)
}

func TestDecisionIsResentUntilAcked(t *testing.T) {
	tx, _ := newTx(2)
	vote(tx, 0, twopc.VoteYes, "", t0)
	vote(tx, 1, twopc.VoteYes, "", t0)
	ack(tx, 0, protocol.KindCommit, t0)
	at := m.WakeAt(tx)
	require.False(t, at.IsZero())
	require.True(t, at.After(t0) && !at.After(t0.Add(twopc.ResendInitial)), "first re-send within the initial backoff")
	c, changed := tick(tx, at)
	require.True(t, changed)
	require.Equal(t, []twopc.Command{{Participant: 1, Kind: protocol.KindCommit, Attempt: 2}}, c, "only the participant that did not ack")
	next := m.WakeAt(tx)
	require.True(t, next.Sub(at) > at.Sub(t0)/2, "the backoff grows")
	ack(tx, 1, protocol.KindCommit, next)
	require.Equal(t, twopc.StateCommitted, tx.State)
	require.True(t, m.WakeAt(tx).IsZero())
}

func TestUnknownParticipantsAndVotesChangeNothing(t *testing.T) {
	tx, _ := newTx(1)
	for _, i := range []int{1, 5} {
		_, changed := vote(tx, i, twopc.VoteYes, "", t0)
		require.False(t, changed)
		require.False(t, ack(tx, i, protocol.KindCommit, t0))
		_, changed = query(tx, i, t0)
		require.False(t, changed)
	}
	_, changed := vote(tx, 0, twopc.Vote("MAYBE"), "", t0)
	require.False(t, changed, "an outcome that is no vote counts as none")
	require.Equal(t, twopc.StatePreparing, tx.State)
}

// The events say what each call did, so that telemetry never compares states.
func TestEventsSayWhatHappened(t *testing.T) {
	parts := []twopc.Participant{{Name: "a"}, {Name: "b"}}
	tx, fx := m.Begin("tx-1", parts, 10*time.Second, t0)
	require.Equal(t, []twopc.Event{twopc.StateChanged{From: "", To: twopc.StatePreparing, At: t0}}, fx.Events)

	at := t0.Add(time.Second)
	fx, _ = m.Reply(tx, protocol.Reply{CommandRef: protocol.CommandRef{Participant: "a", Kind: protocol.KindPrepare, Attempt: 1}, Outcome: protocol.OutcomeVoteYes}, at)
	require.Equal(t, []twopc.Event{twopc.Voted{Participant: 0, Vote: twopc.VoteYes, At: at}}, fx.Events)
	fx, _ = m.Reply(tx, protocol.Reply{CommandRef: protocol.CommandRef{Participant: "b", Kind: protocol.KindPrepare, Attempt: 1}, Outcome: protocol.OutcomeVoteYes}, at)
	require.Equal(t, []twopc.Event{
		twopc.Voted{Participant: 1, Vote: twopc.VoteYes, At: at},
		twopc.StateChanged{From: twopc.StatePreparing, To: twopc.StateCommitting, At: at},
	}, fx.Events)
	fx, _ = m.Reply(tx, protocol.Reply{CommandRef: protocol.CommandRef{Participant: "a", Kind: protocol.KindCommit, Attempt: 1}, Outcome: protocol.OutcomeAck}, at)
	require.Equal(t, []twopc.Event{twopc.Acked{Participant: 0, Kind: protocol.KindCommit, At: at}}, fx.Events)
	fx, _ = m.Reply(tx, protocol.Reply{CommandRef: protocol.CommandRef{Participant: "b", Kind: protocol.KindCommit, Attempt: 1}, Outcome: protocol.OutcomeAck}, at)
	require.Equal(t, []twopc.Event{
		twopc.Acked{Participant: 1, Kind: protocol.KindCommit, At: at},
		twopc.StateChanged{From: twopc.StateCommitting, To: twopc.StateCommitted, At: at},
	}, fx.Events)
}
