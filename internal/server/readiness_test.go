package server_test

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/server"
)

// TestReadinessGatesTheAPIAndDrivesHealth: before Serve, health says NOT_SERVING and the saga and
// 2PC services answer Unavailable with a message that says why, without an error id (nothing is
// hidden); after Serve both serve; after Shutdown health says NOT_SERVING again. The services
// have no engine: a call that got past the gate would panic instead of answering.
func TestReadinessGatesTheAPIAndDrivesHealth(t *testing.T) {
	t.Parallel()
	ready := server.NewReadiness()
	sagas := &server.SagaService{}
	srv := server.NewGRPCServer(sagas, &server.TwoPCService{}, server.Options{Readiness: ready})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ctx := context.Background()
	health := healthpb.NewHealthClient(conn)
	requireHealth := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", "sagacoord.v1.SagaService", "sagacoord.v1.TwoPCService"} {
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			require.NoError(t, err, "health of %q", svc)
			require.Equal(t, want, resp.GetStatus(), "health of %q", svc)
		}
	}

	requireHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	_, err = pb.NewSagaServiceClient(conn).GetSaga(ctx, &pb.GetSagaRequest{SagaId: "not-checked"})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "has not reached its database and broker")
	require.NotContains(t, status.Convert(err).Message(), "error id")
	_, err = pb.NewTwoPCServiceClient(conn).GetTransaction(ctx, &pb.GetTransactionRequest{TransactionId: "not-checked"})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	stream, err := pb.NewSagaServiceClient(conn).WatchSaga(ctx, &pb.WatchSagaRequest{SagaId: "not-checked"})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	ready.Serve()
	requireHealth(healthpb.HealthCheckResponse_SERVING)
	_, err = pb.NewSagaServiceClient(conn).GetSaga(ctx, &pb.GetSagaRequest{SagaId: "not-a-uuid"})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "past the gate, the service checks the request: %v", err)

	ready.Shutdown()
	requireHealth(healthpb.HealthCheckResponse_NOT_SERVING)
}
