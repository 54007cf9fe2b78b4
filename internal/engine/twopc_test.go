package engine

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/twopc"
)

// txCommand returns the next transaction command on a participant's queue.
func (h *harness) txCommand(participant string) *protocol.TxCommand {
	h.t.Helper()
	cmd, err := protocol.DecodeTxCommand(h.command(participant))
	require.NoError(h.t, err)
	return cmd
}

// vote answers a command with outcome (a vote, or an ack).
func (h *harness) vote(cmd *protocol.TxCommand, outcome protocol.Outcome) {
	h.t.Helper()
	m, err := protocol.EncodeTxReply(cmd, protocol.TxReply{Outcome: outcome})
	require.NoError(h.t, err)
	h.publish(m)
}

func (h *harness) awaitTx(id uuid.UUID, want twopc.State) *store.Tx {
	h.t.Helper()
	var tx *store.Tx
	require.Eventually(h.t, func() bool {
		var err error
		tx, err = h.store.GetTx(h.ctx, id)
		require.NoError(h.t, err)
		return tx.Tx.State == want
	}, wait, time.Millisecond, "transaction %s did not become %s", id, want)
	return tx
}

func (h *harness) begin(timeout time.Duration, names ...string) uuid.UUID {
	h.t.Helper()
	parts := make([]twopc.Participant, len(names))
	for i, n := range names {
		h.listen(n)
		parts[i] = twopc.Participant{Name: n, Payload: json.RawMessage(`{"amount":5}`)}
	}
	tx, created, err := h.e.BeginTransaction(h.ctx, BeginRequest{Participants: parts, PrepareTimeout: timeout})
	require.NoError(h.t, err)
	require.True(h.t, created)
	return tx.ID
}

func TestTwoPCAllYesCommits(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := h.begin(time.Minute, "bank-a", "bank-b")
	pa, pb := h.txCommand("bank-a"), h.txCommand("bank-b")
	require.Equal(t, protocol.KindPrepare, pa.Kind)
	require.JSONEq(t, `{"amount":5}`, string(pa.Payload))
	require.EqualValues(t, time.Minute.Milliseconds(), pa.TimeoutMillis, "a PREPARE carries what is left of the prepare timeout")
	h.vote(pa, protocol.OutcomeVoteYes)
	h.vote(pb, protocol.OutcomeVoteYes)
	ca, cb := h.txCommand("bank-a"), h.txCommand("bank-b")
	require.Equal(t, protocol.KindCommit, ca.Kind, "the last YES logs COMMIT and sends it")
	h.awaitTx(id, twopc.StateCommitting)
	h.vote(ca, protocol.OutcomeAck)
	h.vote(cb, protocol.OutcomeAck)
	tx := h.awaitTx(id, twopc.StateCommitted)
	require.False(t, tx.FinishedAt.IsZero())
}

func TestTwoPCNoVoteAborts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := h.begin(time.Minute, "bank-a", "bank-b")
	pa, _ := h.txCommand("bank-a"), h.txCommand("bank-b")
	h.vote(pa, protocol.OutcomeVoteNo)
	for _, p := range []string{"bank-a", "bank-b"} {
		abort := h.txCommand(p)
		require.Equal(t, protocol.KindAbort, abort.Kind, "ABORT goes to voters and silent participants alike")
		h.vote(abort, protocol.OutcomeAck)
	}
	h.awaitTx(id, twopc.StateAborted)
}

func TestTwoPCPrepareTimeoutAbortsAndTheDecisionIsResent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := h.begin(time.Second, "bank-a")
	h.txCommand("bank-a")
	h.clock.advance(2 * time.Second)
	abort := h.txCommand("bank-a")
	require.Equal(t, protocol.KindAbort, abort.Kind)
	tx := h.awaitTx(id, twopc.StateAborting)
	require.Contains(t, tx.Tx.Reason, "prepare timed out")
	h.clock.advance(twopc.ResendInitial)
	again := h.txCommand("bank-a")
	require.Equal(t, protocol.KindAbort, again.Kind, "an unacknowledged decision is sent again")
	require.Equal(t, abort.Attempt+1, again.Attempt)
	h.vote(again, protocol.OutcomeAck)
	h.awaitTx(id, twopc.StateAborted)
}

func TestTwoPCQueryAboutAnUnknownTransactionPresumesAbort(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.listen("bank-a")
	id := uuid.New()
	q, err := protocol.EncodeTxQuery(protocol.TxQuery{TxID: id.String(), Participant: "bank-a"}, "1")
	require.NoError(t, err)
	h.publish(q)
	abort := h.txCommand("bank-a")
	require.Equal(t, protocol.KindAbort, abort.Kind)
	tx := h.awaitTx(id, twopc.StateAborting)
	require.Contains(t, tx.Tx.Reason, "presumed abort")
	_, _, err = h.e.BeginTransaction(h.ctx, BeginRequest{ID: id, Participants: []twopc.Participant{{Name: "bank-a"}}})
	require.ErrorIs(t, err, ErrAlreadyExists, "no COMMIT can follow a presumed abort")
}

func TestTwoPCCommitDecisionHookRunsBeforeTheDecisionCommits(t *testing.T) {
	t.Parallel()
	states := make(chan twopc.State, 1)
	var h *harness
	h = newHarness(t, func(o *harnessOpts) {
		o.cfg = func(c *Config) {
			c.Test.BeforeCommitDecision = func(id uuid.UUID) {
				tx, err := h.store.GetTx(h.ctx, id)
				require.NoError(t, err)
				states <- tx.Tx.State
			}
		}
	})
	id := h.begin(time.Minute, "bank-a")
	h.vote(h.txCommand("bank-a"), protocol.OutcomeVoteYes)
	require.Equal(t, twopc.StatePreparing, <-states, "the hook sees the transaction before its decision is committed")
	h.awaitTx(id, twopc.StateCommitting)
}

// The payloads of one transaction together are bounded, so that it fits a response.
func TestTwoPCBeginBoundsThePayloadsTogether(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *harnessOpts) { o.cfg = func(c *Config) { c.MaxPayloadBytes = MaxPayloadLimit } })
	h.listen("bank-a")
	h.listen("bank-b")
	half := json.RawMessage(`"` + strings.Repeat("x", MaxPayloadLimit/2) + `"`)
	_, _, err := h.e.BeginTransaction(h.ctx, BeginRequest{Participants: []twopc.Participant{{Name: "bank-a", Payload: half}, {Name: "bank-b", Payload: half}}})
	require.ErrorIs(t, err, ErrResourceExhausted)
	require.ErrorContains(t, err, "participants: the payloads hold")

	_, err = New(Config{Store: h.store, Transport: h.tr, Relay: h.relay, MaxPayloadBytes: MaxPayloadLimit + 1})
	require.ErrorContains(t, err, "MaxPayloadBytes", "a larger MaxPayloadBytes is refused")
}

func TestTwoPCBeginRefusesBadRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.listen("bank-a")
	for name, tc := range map[string]struct {
		parts []twopc.Participant
		want  error
	}{
		"none":        {nil, ErrInvalidArgument},
		"bad name":    {[]twopc.Participant{{Name: "a b"}}, ErrInvalidArgument},
		"duplicate":   {[]twopc.Participant{{Name: "bank-a"}, {Name: "bank-a"}}, ErrInvalidArgument},
		"unknown":     {[]twopc.Participant{{Name: "nobody"}}, ErrInvalidArgument},
		"bad payload": {[]twopc.Participant{{Name: "bank-a", Payload: json.RawMessage(`{`)}}, ErrInvalidArgument},
		"deep payload": {[]twopc.Participant{{Name: "bank-a", Payload: json.RawMessage(strings.Repeat("[", 65) + strings.Repeat("]", 65))}},
			ErrInvalidArgument},
	} {
		_, _, err := h.e.BeginTransaction(h.ctx, BeginRequest{Participants: tc.parts})
		require.ErrorIs(t, err, tc.want, name)
	}
}
