package client_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sagacoord/sagacoord/client"
	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

type sagaServer struct {
	sagacoordv1.UnimplementedSagaServiceServer
}

func (sagaServer) ListDefinitions(context.Context, *sagacoordv1.ListDefinitionsRequest) (*sagacoordv1.ListDefinitionsResponse, error) {
	return &sagacoordv1.ListDefinitionsResponse{Definitions: []*sagacoordv1.SagaDefinition{{Name: "transfer", Version: 3}}}, nil
}

type txServer struct {
	sagacoordv1.UnimplementedTwoPCServiceServer
}

func (txServer) GetTransaction(_ context.Context, r *sagacoordv1.GetTransactionRequest) (*sagacoordv1.GetTransactionResponse, error) {
	return &sagacoordv1.GetTransactionResponse{Transaction: &sagacoordv1.Transaction{Id: r.GetTransactionId()}}, nil
}

// serve runs both services on a loopback port until the test ends.
func serve(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	sagacoordv1.RegisterSagaServiceServer(srv, sagaServer{})
	sagacoordv1.RegisterTwoPCServiceServer(srv, txServer{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

func TestBothServicesOverOneConnection(t *testing.T) {
	var calls atomic.Int32
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	c, err := client.New(serve(t), count)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	defs, err := c.Saga.ListDefinitions(ctx, &sagacoordv1.ListDefinitionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := defs.GetDefinitions(); len(got) != 1 || got[0].GetName() != "transfer" || got[0].GetVersion() != 3 {
		t.Errorf("ListDefinitions = %v, want transfer version 3", got)
	}
	tx, err := c.TwoPC.GetTransaction(ctx, &sagacoordv1.GetTransactionRequest{TransactionId: "t-1"})
	if err != nil {
		t.Fatal(err)
	}
	if tx.GetTransaction().GetId() != "t-1" {
		t.Errorf("GetTransaction answered %v", tx.GetTransaction())
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the interceptor given to New saw %d calls, want 2", n)
	}
}

// New does not connect; a coordinator that is not there fails the first call with Unavailable.
func TestUnreachableFailsTheCallNotNew(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(addr)
	if err != nil {
		t.Fatalf("New(%s) = %v; it must not dial", addr, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = c.Saga.ListDefinitions(ctx, &sagacoordv1.ListDefinitionsRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call to a closed port: %v, want Unavailable", err)
	}
}
