package server_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/server"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/memstore"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/outbox"
	"github.com/sagacoord/sagacoord/transport/memtransport"
)

// api is the gRPC API over an engine with an in-memory store and broker, and no workers: sagas
// stay RUNNING.
type api struct {
	t     *testing.T
	ctx   context.Context
	sagas pb.SagaServiceClient
	txs   pb.TwoPCServiceClient
	logs  *testenv.Buffer
	addr  string
}

// apiOpts configures newAPI.
type apiOpts struct {
	limits server.Limits
	// wrap replaces the engine's store (to inject faults).
	wrap func(store.Store) store.Store
}

// identityHeader stands in for authentication: the interceptor below makes its value the
// caller's identity.
const identityHeader = "x-test-identity"

func identify(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(identityHeader); len(v) > 0 {
		return auth.WithIdentity(ctx, auth.Identity{Name: v[0], Roles: []auth.Role{auth.RoleOperator}})
	}
	return ctx
}

type identifiedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s identifiedStream) Context() context.Context { return s.ctx }

func authOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(identify(ctx), req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, identifiedStream{ss, identify(ss.Context())})
		}),
	}
}

func newAPI(t *testing.T, o apiOpts) *api {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	a := &api{t: t, ctx: ctx, logs: &testenv.Buffer{}}
	log := slog.New(slog.NewTextHandler(a.logs, nil))
	var st store.Store = memstore.New(memstore.Config{})
	if o.wrap != nil {
		st = o.wrap(st)
	}
	tr := memtransport.New(memtransport.NewBroker())
	t.Cleanup(func() { _ = tr.Close() })
	relay := outbox.NewRelay(st.Outbox(), tr, outbox.Config{PollInterval: 10 * time.Millisecond})
	require.NoError(t, relay.Start(ctx))
	t.Cleanup(relay.Stop)
	e, err := engine.New(engine.Config{Store: st, Transport: tr, Relay: relay, Retention: -1, MaxActiveSagas: -1, Logger: log})
	require.NoError(t, err)
	require.NoError(t, e.Start(ctx))
	t.Cleanup(e.Stop)
	srv := server.NewGRPCServer(&server.SagaService{Engine: e, Logger: log}, &server.TwoPCService{Engine: e, Logger: log},
		server.Options{GRPC: authOptions(), Limiter: server.NewLimiter(o.limits), Logger: log})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	a.addr = lis.Addr().String()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	a.sagas, a.txs = pb.NewSagaServiceClient(conn), pb.NewTwoPCServiceClient(conn)
	return a
}

// as returns a context whose calls come from identity who.
func (a *api) as(who string) context.Context {
	return metadata.AppendToOutgoingContext(a.ctx, identityHeader, who)
}

// register registers a one-step definition of participant p.
func (a *api) register(name string) {
	a.t.Helper()
	_, err := a.sagas.RegisterDefinition(a.ctx, &pb.RegisterDefinitionRequest{Definition: &pb.SagaDefinition{
		Name: name, Steps: []*pb.StepDefinition{{Name: "a", Participant: "p", Action: "do"}},
	}})
	require.NoError(a.t, err)
}

// requireCode requires a gRPC error with the code and a message containing every fragment.
func requireCode(t *testing.T, err error, code codes.Code, fragments ...string) {
	t.Helper()
	require.Error(t, err)
	st := status.Convert(err)
	require.Equal(t, code, st.Code(), "message: %s", st.Message())
	for _, f := range fragments {
		require.Contains(t, st.Message(), f)
	}
}
