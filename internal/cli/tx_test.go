package cli

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

func TestParseTransaction(t *testing.T) {
	t.Parallel()
	req, err := ParseTransaction("t.yaml", []byte(`id: 123e4567-e89b-12d3-a456-426614174000
prepare_timeout: 3s
participants:
  - name: bank-a
    payload: {account: A, amount: -10}
  - name: bank-b
`))
	require.NoError(t, err)
	require.Equal(t, "123e4567-e89b-12d3-a456-426614174000", req.GetTransactionId())
	require.Equal(t, 3*time.Second, req.GetPrepareTimeout().AsDuration())
	require.Len(t, req.GetParticipants(), 2)
	require.JSONEq(t, `{"account":"A","amount":-10}`, string(req.GetParticipants()[0].GetPayload()))
	require.Empty(t, req.GetParticipants()[1].GetPayload())

	_, err = ParseTransaction("t.yaml", []byte("participants:\n  - name: a\n    paylod: {}\n"))
	require.ErrorContains(t, err, `t.yaml:3: participants[0].paylod: unknown field (did you mean "payload"?)`)
	_, err = ParseTransaction("t.yaml", []byte("id: nope\nparticipants: []\n"))
	require.ErrorContains(t, err, `t.yaml:1: id: invalid id "nope"`)
}

const txFile = `id: 123e4567-e89b-12d3-a456-426614174000
participants:
  - name: bank-a
    payload: {account: A, amount: -10}
  - name: bank-b
    payload: {account: B, amount: 10}
`

func sampleTx(state sagacoordv1.TransactionState) *sagacoordv1.Transaction {
	return &sagacoordv1.Transaction{
		Id: sagaID, State: state, CreatedAt: ts(0), Version: 3,
		Participants: []*sagacoordv1.TransactionParticipant{
			{Name: "bank-a", Vote: sagacoordv1.Vote_VOTE_YES, Acked: true, Payload: []byte(`{"account":"A","note":"<a & b>"}`)},
			{Name: "bank-b", Vote: sagacoordv1.Vote_VOTE_NO, LastError: "insufficient funds"},
		},
	}
}

// The server may not implement TwoPCService yet: every tx command says so plainly.
func TestTxUnimplemented(t *testing.T) {
	t.Parallel()
	for _, srv := range []struct {
		name string
		tx   sagacoordv1.TwoPCServiceServer
	}{
		{"service not registered", nil},
		{"methods unimplemented", &fakeTx{}},
	} {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			addr := serve(t, &fakeSaga{}, srv.tx)
			for _, args := range [][]string{
				{"tx", "begin", "-f", writeFile(t, "tx.yaml", txFile)},
				{"tx", "get", sagaID},
				{"tx", "list"},
				{"tx", "watch", sagaID},
			} {
				r := sagactl(t, addr, args...)
				requireExit(t, ExitServer, r)
				require.Regexp(t, `^sagactl: tx [a-z]+: Unimplemented: the coordinator at `+addr+` does not implement TwoPCService \(two-phase commit\) yet \(.+\)\n$`, r.stderr)
			}
		})
	}
}

func TestTxCommands(t *testing.T) {
	t.Parallel()
	var begun *sagacoordv1.BeginTransactionRequest
	fake := &fakeTx{
		begin: func(r *sagacoordv1.BeginTransactionRequest) (*sagacoordv1.BeginTransactionResponse, error) {
			begun = r
			return &sagacoordv1.BeginTransactionResponse{Created: true, Transaction: &sagacoordv1.Transaction{
				Id: r.GetTransactionId(), State: sagacoordv1.TransactionState_TRANSACTION_STATE_PREPARING}}, nil
		},
		get: func(r *sagacoordv1.GetTransactionRequest) (*sagacoordv1.GetTransactionResponse, error) {
			return &sagacoordv1.GetTransactionResponse{Transaction: sampleTx(sagacoordv1.TransactionState_TRANSACTION_STATE_ABORTING)}, nil
		},
		list: func(r *sagacoordv1.ListTransactionsRequest) (*sagacoordv1.ListTransactionsResponse, error) {
			if r.GetPageToken() == "" {
				return &sagacoordv1.ListTransactionsResponse{Transactions: []*sagacoordv1.Transaction{sampleTx(r.GetState())}, NextPageToken: "p2"}, nil
			}
			tx := sampleTx(r.GetState())
			tx.Id = "second"
			return &sagacoordv1.ListTransactionsResponse{Transactions: []*sagacoordv1.Transaction{tx}}, nil
		},
	}
	addr := serve(t, nil, fake)

	r := sagactl(t, addr, "tx", "begin", "-f", writeFile(t, "tx.yaml", txFile))
	requireExit(t, ExitOK, r)
	require.Equal(t, "transaction "+sagaID+" begun: PREPARING\n", r.stdout)
	require.Len(t, begun.GetParticipants(), 2)
	require.JSONEq(t, `{"account":"B","amount":10}`, string(begun.GetParticipants()[1].GetPayload()))

	r = sagactlWith(t, runOpts{stdin: `{"participants": [{"name": "a"}]}`}, addr, "tx", "begin", "-f", "-")
	requireExit(t, ExitOK, r)
	require.Regexp(t, `^[0-9a-f-]{36}$`, begun.GetTransactionId(), "a generated id makes the call idempotent")

	r = sagactl(t, addr, "tx", "begin", "-f", writeFile(t, "tx.yaml", "participants:\n  - name: a\n    vote: yes\n"))
	requireExit(t, ExitUsage, r)
	require.Contains(t, r.stderr, "tx.yaml:3: participants[0].vote: unknown field")

	r = sagactl(t, addr, "tx", "get", sagaID)
	requireExit(t, ExitOK, r)
	require.Equal(t, ""+
		"ID:       "+sagaID+"\n"+
		"STATE:    ABORTING\n"+
		"CREATED:  2025-06-01T10:00:00.000Z\n"+
		"VERSION:  3\n"+
		"\n"+
		"PARTICIPANT  VOTE  ACKED  LAST ERROR\n"+
		"bank-a       YES   true   -\n"+
		"bank-b       NO    false  insufficient funds\n", r.stdout)

	// Finding: payloads printed as base64. They are printed as the JSON they hold.
	r = sagactl(t, addr, "-o", "json", "tx", "get", sagaID)
	requireExit(t, ExitOK, r)
	require.Contains(t, r.stdout, `"note": "<a & b>"`, "printed as JSON, without HTML escapes")
	var got struct {
		Participants []struct {
			Payload any `json:"payload"`
		} `json:"participants"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	require.Equal(t, map[string]any{"account": "A", "note": "<a & b>"}, got.Participants[0].Payload)
	require.Nil(t, got.Participants[1].Payload)

	r = sagactl(t, addr, "tx", "list", "--state", "aborted", "--limit", "1")
	requireExit(t, ExitOK, r)
	require.Contains(t, r.stdout, "ID                                    STATE    PARTICIPANTS")
	require.Contains(t, r.stdout, sagaID+"  ABORTED  2 ")
	require.Equal(t, "more transactions: repeat with --page-token p2, or use --all\n", r.stderr)

	r = sagactl(t, addr, "-o", "json", "tx", "list", "--all", "--state", "TRANSACTION_STATE_COMMITTED")
	requireExit(t, ExitOK, r)
	var txs []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &txs))
	require.Len(t, txs, 2)
	require.Equal(t, "TRANSACTION_STATE_COMMITTED", txs[1]["state"])

	r = sagactl(t, addr, "tx", "list", "--state", "done")
	requireExit(t, ExitUsage, r)
	require.Contains(t, r.stderr, "want one of PREPARING, COMMITTING, ABORTING, COMMITTED, ABORTED")
}

func TestTxWatch(t *testing.T) {
	t.Parallel()
	stream := func(final sagacoordv1.TransactionState) func(*sagacoordv1.WatchTransactionRequest, grpc.ServerStreamingServer[sagacoordv1.WatchTransactionResponse]) error {
		return func(_ *sagacoordv1.WatchTransactionRequest, s grpc.ServerStreamingServer[sagacoordv1.WatchTransactionResponse]) error {
			first := sampleTx(sagacoordv1.TransactionState_TRANSACTION_STATE_PREPARING)
			first.Participants[0].Acked, first.Participants[1].Vote, first.Participants[1].LastError = false, 0, ""
			last := sampleTx(final)
			last.FinishedAt = ts(2)
			for _, tx := range []*sagacoordv1.Transaction{first, last} {
				if err := s.Send(&sagacoordv1.WatchTransactionResponse{Transaction: tx}); err != nil {
					return err
				}
			}
			return nil
		}
	}
	addr := serve(t, nil, &fakeTx{watch: stream(sagacoordv1.TransactionState_TRANSACTION_STATE_COMMITTED)})
	r := sagactl(t, addr, "tx", "watch", sagaID)
	requireExit(t, ExitOK, r)
	require.Equal(t, ""+
		"2025-06-01T10:00:00.000Z PREPARING v3 bank-a=YES bank-b=?\n"+
		"2025-06-01T10:00:02.000Z COMMITTED v3 bank-a=YES(acked) bank-b=NO(error \"insufficient funds\")\n", r.stdout)

	addr = serve(t, nil, &fakeTx{watch: stream(sagacoordv1.TransactionState_TRANSACTION_STATE_ABORTED)})
	r = sagactl(t, addr, "-o", "json", "tx", "watch", sagaID)
	requireExit(t, ExitCompensated, r)
	require.Len(t, splitLines(r.stdout), 2)
	require.Equal(t, "sagactl: tx watch: transaction "+sagaID+" ABORTED\n", r.stderr)

	addr = serve(t, nil, &fakeTx{watch: stream(sagacoordv1.TransactionState_TRANSACTION_STATE_COMMITTING)})
	r = sagactl(t, addr, "tx", "watch", sagaID)
	requireExit(t, ExitServer, r)
	require.Contains(t, r.stderr, "ended the watch before transaction "+sagaID+" was done")
}
