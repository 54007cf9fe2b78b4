package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

func txCmd(id, participant string, kind protocol.Kind, payload string) *protocol.TxCommand {
	return &protocol.TxCommand{TxID: id, Participant: participant, Kind: kind, Attempt: 1, Payload: json.RawMessage(payload)}
}

// callTx sends a transaction command and returns the reply to it, skipping decision queries and
// replies to other commands.
func (e *simEnv) callTx(cmd *protocol.TxCommand) protocol.TxReply {
	e.t.Helper()
	msg, err := cmd.Encode()
	require.NoError(e.t, err)
	errs := e.coord.Publish(e.ctx, []transport.Outgoing{{Exchange: protocol.ExchangeCommands, RoutingKey: cmd.Participant, Message: msg}})
	require.NoError(e.t, errs[0])
	id := protocol.CommandRef{TxID: cmd.TxID, Participant: cmd.Participant, Kind: cmd.Kind, Attempt: cmd.Attempt}.ID()
	deadline := time.After(waitFor)
	for {
		select {
		case d := <-e.replies:
			require.NoError(e.t, d.Ack())
			if d.CorrelationID != id {
				continue
			}
			r, err := protocol.DecodeReply(d.Message)
			require.NoError(e.t, err)
			return protocol.TxReply{Outcome: r.Outcome, Error: r.Error}
		case <-deadline:
			e.t.Fatalf("no reply to %s within %v", id, waitFor)
		}
	}
}

func (e *simEnv) held(participant, account string) int64 {
	return e.scalar(`SELECT held FROM `+pgx.Identifier{schemaOf(e.prefix, participant), "accounts"}.Sanitize()+` WHERE account = $1`, account)
}

// hold returns the state of a transaction's hold and whether its decision time is recorded.
func (e *simEnv) hold(participant, txID string) (state string, decided bool) {
	e.t.Helper()
	q := `SELECT state, decided_at IS NOT NULL AND decided_at >= prepared_at FROM ` + pgx.Identifier{schemaOf(e.prefix, participant), "holds"}.Sanitize() + ` WHERE tx_id = $1`
	require.NoError(e.t, e.pool.QueryRow(e.ctx, q, txID).Scan(&state, &decided))
	return state, decided
}

var (
	yes = protocol.TxReply{Outcome: protocol.OutcomeVoteYes}
	ack = protocol.TxReply{Outcome: protocol.OutcomeAck}
)

func TestSimTwoPCTransferHoldsFunds(t *testing.T) {
	t.Parallel()
	e := newSimEnv(t)
	e.start(simConfig{Participants: []participantConfig{
		{Name: "bank-a", Kind: kindTransfer, SeedAccounts: 2, InitialBalance: 100},
		{Name: "bank-b", Kind: kindTransfer, SeedAccounts: 2, InitialBalance: 100},
	}}, func(code int) { t.Errorf("unexpected exit %d", code) })
	debit := `{"account":"acct-1","amount":70,"direction":"debit"}`
	credit := `{"account":"acct-2","amount":70,"direction":"credit"}`

	require.Equal(t, yes, e.callTx(txCmd("t1", "bank-a", protocol.KindPrepare, debit)))
	require.Equal(t, yes, e.callTx(txCmd("t1", "bank-b", protocol.KindPrepare, credit)))
	require.EqualValues(t, 70, e.held("bank-a", "acct-1"))
	require.EqualValues(t, 100, e.balance("bank-a", "acct-1"), "nothing moves before COMMIT")
	require.EqualValues(t, 0, e.held("bank-b", "acct-2"), "a credit holds nothing")

	// What is held is not available: to another PREPARE, nor to a saga debit.
	no := e.callTx(txCmd("t2", "bank-a", protocol.KindPrepare, `{"account":"acct-1","amount":40}`))
	require.Equal(t, protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: "insufficient available funds in acct-1: 40 requested"}, no)
	saga := e.call(step("s1", "bank-a", "debit", protocol.KindAction, "debit", `{"from":"acct-1","to":"acct-2","amount":40}`))
	require.EqualValues(t, protocol.OutcomeFailed, saga.Outcome)
	require.Equal(t, "insufficient funds in acct-1: 40 requested", saga.Error)
	require.Equal(t, ack, e.callTx(txCmd("t2", "bank-a", protocol.KindAbort, "")))

	require.Equal(t, ack, e.callTx(txCmd("t1", "bank-a", protocol.KindCommit, debit)))
	require.Equal(t, ack, e.callTx(txCmd("t1", "bank-b", protocol.KindCommit, credit)))
	require.Equal(t, ack, e.callTx(txCmd("t1", "bank-b", protocol.KindCommit, credit)), "a duplicate COMMIT changes nothing")
	require.EqualValues(t, 30, e.balance("bank-a", "acct-1"))
	require.EqualValues(t, 0, e.held("bank-a", "acct-1"))
	require.EqualValues(t, 170, e.balance("bank-b", "acct-2"))
	for _, p := range []string{"bank-a", "bank-b"} {
		state, decided := e.hold(p, "t1")
		require.Equal(t, holdCommitted, state)
		require.True(t, decided, "decided_at is recorded")
		n, _ := e.ledgerSum(p, "t1")
		require.EqualValues(t, 1, n, "one ledger entry per participant")
	}
	total := e.scalar(`SELECT (SELECT sum(balance) FROM ` + pgx.Identifier{schemaOf(e.prefix, "bank-a"), "accounts"}.Sanitize() + `) + (SELECT sum(balance) FROM ` + pgx.Identifier{schemaOf(e.prefix, "bank-b"), "accounts"}.Sanitize() + `)`)
	require.EqualValues(t, 400, total, "money is conserved (G6)")

	// Prepared then aborted: the hold is released.
	require.Equal(t, yes, e.callTx(txCmd("t3", "bank-a", protocol.KindPrepare, `{"account":"acct-1","amount":30}`)))
	require.Equal(t, ack, e.callTx(txCmd("t3", "bank-a", protocol.KindAbort, "")))
	require.EqualValues(t, 0, e.held("bank-a", "acct-1"))
	require.EqualValues(t, 30, e.balance("bank-a", "acct-1"))
	state, decided := e.hold("bank-a", "t3")
	require.Equal(t, holdAborted, state)
	require.True(t, decided)

	// Payloads the participant cannot take are a NO, never a retry.
	i := 0
	for payload, want := range map[string]string{
		`{"account":"acct-9","amount":1}`:                     "account acct-9 does not exist",
		`{"account":"acct-1","amount":0}`:                     `payload {"account":"acct-1","amount":0} names no account (or sku) or no positive amount (or qty)`,
		`{"account":"acct-1","amount":1,"direction":"steal"}`: `payload direction "steal" must be debit or credit`,
		`[1]`: "payload [1] is not a JSON object this participant reads: json: cannot unmarshal array into Go value of type main.txPayload",
	} {
		i++
		r := e.callTx(txCmd(fmt.Sprintf("bad-%d", i), "bank-a", protocol.KindPrepare, payload))
		require.Equal(t, protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: want}, r)
	}
}

func TestSimTwoPCInventoryPaymentNoop(t *testing.T) {
	t.Parallel()
	e := newSimEnv(t)
	e.start(simConfig{Participants: []participantConfig{
		{Name: "inventory", Kind: kindInventory, SeedAccounts: 1, InitialBalance: 5},
		{Name: "payments", Kind: kindPayment},
		{Name: "bench", Kind: kindNoop},
	}}, func(code int) { t.Errorf("unexpected exit %d", code) })

	require.Equal(t, yes, e.callTx(txCmd("t1", "inventory", protocol.KindPrepare, `{"sku":"sku-1","qty":4}`)))
	no := e.callTx(txCmd("t2", "inventory", protocol.KindPrepare, `{"sku":"sku-1","qty":2}`))
	require.Equal(t, "insufficient available stock in sku-1: 2 requested", no.Error)
	require.Equal(t, ack, e.callTx(txCmd("t1", "inventory", protocol.KindCommit, "")))
	require.EqualValues(t, 1, e.balance("inventory", "sku-1"))
	require.EqualValues(t, 0, e.held("inventory", "sku-1"))

	require.Equal(t, yes, e.callTx(txCmd("t1", "payments", protocol.KindPrepare, `{"account":"cust-1","amount":25}`)))
	require.Equal(t, ack, e.callTx(txCmd("t1", "payments", protocol.KindCommit, "")))
	n, sum := e.ledgerSum("payments", "t1")
	require.EqualValues(t, 1, n)
	require.EqualValues(t, 25, sum)

	require.Equal(t, yes, e.callTx(txCmd("t1", "bench", protocol.KindPrepare, `null`)))
	require.Equal(t, ack, e.callTx(txCmd("t1", "bench", protocol.KindAbort, "")))
}

func TestSimTwoPCFaultKnobs(t *testing.T) {
	t.Parallel()
	e := newSimEnv(t)
	exits := make(chan int, 8)
	e.start(simConfig{Seed: 3, Participants: []participantConfig{{
		Name: "bank-a", Kind: kindTransfer, SeedAccounts: 1, InitialBalance: 100,
		Faults: map[string]faults{
			"prepare": {FailProbability: 1},
			"abort":   {RetryProbability: 0.5, CrashAfterCommitProbability: 1},
		},
	}}}, func(code int) { exits <- code })

	no := e.callTx(txCmd("t1", "bank-a", protocol.KindPrepare, `{"account":"acct-1","amount":1}`))
	require.Equal(t, protocol.TxReply{Outcome: protocol.OutcomeVoteNo, Error: "injected NO vote (fail_probability) in prepare"}, no)
	require.EqualValues(t, 0, e.held("bank-a", "acct-1"))
	select {
	case code := <-exits:
		t.Fatalf("exit %d: no crash was configured for prepare", code)
	default:
	}

	// Transient failures of the ABORT are requeued with the same attempt and draw anew until
	// one try passes; then the injected crash fires after its local commit.
	require.Equal(t, ack, e.callTx(txCmd("t1", "bank-a", protocol.KindAbort, "")))
	select {
	case code := <-exits:
		require.Equal(t, 137, code)
	case <-time.After(waitFor):
		t.Fatal("no injected crash after the ABORT's local commit")
	}
}
