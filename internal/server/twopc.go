package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/twopc"
)

// TwoPCService implements pb.TwoPCServiceServer.
type TwoPCService struct {
	pb.UnimplementedTwoPCServiceServer
	Engine *engine.Engine
	Logger *slog.Logger
	// WatchPoll is how often WatchTransaction looks for changes. Default 50ms.
	WatchPoll time.Duration
}

var txStateToPB = map[twopc.State]pb.TransactionState{
	twopc.StatePreparing:  pb.TransactionState_TRANSACTION_STATE_PREPARING,
	twopc.StateCommitting: pb.TransactionState_TRANSACTION_STATE_COMMITTING,
	twopc.StateAborting:   pb.TransactionState_TRANSACTION_STATE_ABORTING,
	twopc.StateCommitted:  pb.TransactionState_TRANSACTION_STATE_COMMITTED,
	twopc.StateAborted:    pb.TransactionState_TRANSACTION_STATE_ABORTED,
}

var voteToPB = map[twopc.Vote]pb.Vote{
	twopc.VoteNone: pb.Vote_VOTE_UNSPECIFIED,
	twopc.VoteYes:  pb.Vote_VOTE_YES,
	twopc.VoteNo:   pb.Vote_VOTE_NO,
}

func txToPB(t *store.Tx) *pb.Transaction {
	out := &pb.Transaction{
		Id:         t.ID.String(),
		State:      txStateToPB[t.Tx.State],
		CreatedAt:  ts(t.CreatedAt),
		DecidedAt:  ts(t.Tx.DecidedAt),
		FinishedAt: ts(t.FinishedAt),
		Reason:     t.Tx.Reason,
		Version:    t.Version,
	}
	for _, p := range t.Tx.Participants {
		out.Participants = append(out.Participants, &pb.TransactionParticipant{
			Name: p.Name, Payload: p.Payload, Vote: voteToPB[p.Vote], Acked: p.Acked, LastError: p.LastError,
		})
	}
	return out
}

// BeginTransaction implements pb.TwoPCServiceServer.
func (s *TwoPCService) BeginTransaction(ctx context.Context, req *pb.BeginTransactionRequest) (*pb.BeginTransactionResponse, error) {
	var id uuid.UUID
	if req.GetTransactionId() != "" {
		var err error
		if id, err = parseSagaID("transaction_id", req.GetTransactionId()); err != nil {
			return nil, err
		}
	}
	timeout, err := duration("prepare_timeout", req.GetPrepareTimeout())
	if err != nil {
		return nil, err
	}
	br := engine.BeginRequest{ID: id, PrepareTimeout: timeout}
	for _, p := range req.GetParticipants() {
		br.Participants = append(br.Participants, twopc.Participant{Name: p.GetName(), Payload: p.GetPayload()})
	}
	t, created, err := s.Engine.BeginTransaction(ctx, br)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.BeginTransactionResponse{Transaction: txToPB(t), Created: created}, nil
}

// GetTransaction implements pb.TwoPCServiceServer.
func (s *TwoPCService) GetTransaction(ctx context.Context, req *pb.GetTransactionRequest) (*pb.GetTransactionResponse, error) {
	id, err := parseSagaID("transaction_id", req.GetTransactionId())
	if err != nil {
		return nil, err
	}
	t, err := s.Engine.GetTransaction(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetTransactionResponse{Transaction: txToPB(t)}, nil
}

// ListTransactions implements pb.TwoPCServiceServer.
func (s *TwoPCService) ListTransactions(ctx context.Context, req *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	f := store.TxFilter{Limit: size + 1}
	if st := req.GetState(); st != pb.TransactionState_TRANSACTION_STATE_UNSPECIFIED {
		for k, v := range txStateToPB {
			if v == st {
				f.State = k
			}
		}
		if f.State == "" {
			return nil, invalid("state", "unknown value %d", st)
		}
	}
	filter := filterHash(string(f.State))
	if tok := req.GetPageToken(); tok != "" {
		t, err := decodeToken(tok, listTransactions, filter)
		if err != nil {
			return nil, tokenError("ListTransactions")
		}
		f.AfterCreatedAt, f.AfterID = time.Unix(0, t.At), uuid.MustParse(t.ID)
	}
	txs, err := s.Engine.Store().ListTx(ctx, f)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListTransactionsResponse{}
	out.Transactions, out.NextPageToken = page(txs, size, txToPB,
		func(t *store.Tx) string { return rowToken(listTransactions, filter, t.CreatedAt, t.ID) })
	return out, nil
}

// WatchTransaction implements pb.TwoPCServiceServer.
func (s *TwoPCService) WatchTransaction(req *pb.WatchTransactionRequest, stream grpc.ServerStreamingServer[pb.WatchTransactionResponse]) error {
	id, err := parseSagaID("transaction_id", req.GetTransactionId())
	if err != nil {
		return err
	}
	w, stop := s.Engine.WatchTransaction(id)
	defer stop()
	return watch(stream.Context(), watchPoll(s.WatchPoll, s.Engine.Listening()), w, func(ctx context.Context) (*store.Tx, error) {
		return s.Engine.GetTransaction(ctx, id)
	}, func(t *store.Tx) (int64, bool) {
		return t.Version, t.Tx.State.Terminal()
	}, func(_ context.Context, t *store.Tx) error {
		return stream.Send(&pb.WatchTransactionResponse{Transaction: txToPB(t)})
	})
}
