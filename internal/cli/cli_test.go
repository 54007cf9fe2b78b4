package cli

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNow is the clock of every test run, for the elapsed time of running steps.
var testNow = time.Date(2025, 6, 1, 10, 0, 10, 0, time.UTC)

// fakeSaga is a SagaService with canned behaviour: each test sets the handlers it needs, and the
// others answer Unimplemented. It records the requests it got.
type fakeSaga struct {
	sagacoordv1.UnimplementedSagaServiceServer

	register func(*sagacoordv1.RegisterDefinitionRequest) (*sagacoordv1.RegisterDefinitionResponse, error)
	getDef   func(*sagacoordv1.GetDefinitionRequest) (*sagacoordv1.GetDefinitionResponse, error)
	listDefs func(*sagacoordv1.ListDefinitionsRequest) (*sagacoordv1.ListDefinitionsResponse, error)
	start    func(*sagacoordv1.StartSagaRequest) (*sagacoordv1.StartSagaResponse, error)
	get      func(context.Context, *sagacoordv1.GetSagaRequest) (*sagacoordv1.GetSagaResponse, error)
	list     func(*sagacoordv1.ListSagasRequest) (*sagacoordv1.ListSagasResponse, error)
	abort    func(*sagacoordv1.AbortSagaRequest) (*sagacoordv1.AbortSagaResponse, error)
	retry    func(*sagacoordv1.RetrySagaRequest) (*sagacoordv1.RetrySagaResponse, error)
	watch    func(*sagacoordv1.WatchSagaRequest, grpc.ServerStreamingServer[sagacoordv1.WatchSagaResponse]) error

	mu   sync.Mutex
	reqs []any
}

func (f *fakeSaga) record(r any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
}

func (f *fakeSaga) requests() []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]any(nil), f.reqs...)
}

func (f *fakeSaga) RegisterDefinition(ctx context.Context, r *sagacoordv1.RegisterDefinitionRequest) (*sagacoordv1.RegisterDefinitionResponse, error) {
	f.record(r)
	if f.register == nil {
		return f.UnimplementedSagaServiceServer.RegisterDefinition(ctx, r)
	}
	return f.register(r)
}

func (f *fakeSaga) GetDefinition(ctx context.Context, r *sagacoordv1.GetDefinitionRequest) (*sagacoordv1.GetDefinitionResponse, error) {
	f.record(r)
	if f.getDef == nil {
		return f.UnimplementedSagaServiceServer.GetDefinition(ctx, r)
	}
	return f.getDef(r)
}

func (f *fakeSaga) ListDefinitions(ctx context.Context, r *sagacoordv1.ListDefinitionsRequest) (*sagacoordv1.ListDefinitionsResponse, error) {
	f.record(r)
	if f.listDefs == nil {
		return f.UnimplementedSagaServiceServer.ListDefinitions(ctx, r)
	}
	return f.listDefs(r)
}

func (f *fakeSaga) StartSaga(ctx context.Context, r *sagacoordv1.StartSagaRequest) (*sagacoordv1.StartSagaResponse, error) {
	f.record(r)
	if f.start == nil {
		return f.UnimplementedSagaServiceServer.StartSaga(ctx, r)
	}
	return f.start(r)
}

func (f *fakeSaga) GetSaga(ctx context.Context, r *sagacoordv1.GetSagaRequest) (*sagacoordv1.GetSagaResponse, error) {
	f.record(r)
	if f.get == nil {
		return f.UnimplementedSagaServiceServer.GetSaga(ctx, r)
	}
	return f.get(ctx, r)
}

func (f *fakeSaga) ListSagas(ctx context.Context, r *sagacoordv1.ListSagasRequest) (*sagacoordv1.ListSagasResponse, error) {
	f.record(r)
	if f.list == nil {
		return f.UnimplementedSagaServiceServer.ListSagas(ctx, r)
	}
	return f.list(r)
}

func (f *fakeSaga) AbortSaga(ctx context.Context, r *sagacoordv1.AbortSagaRequest) (*sagacoordv1.AbortSagaResponse, error) {
	f.record(r)
	if f.abort == nil {
		return f.UnimplementedSagaServiceServer.AbortSaga(ctx, r)
	}
	return f.abort(r)
}

func (f *fakeSaga) RetrySaga(ctx context.Context, r *sagacoordv1.RetrySagaRequest) (*sagacoordv1.RetrySagaResponse, error) {
	f.record(r)
	if f.retry == nil {
		return f.UnimplementedSagaServiceServer.RetrySaga(ctx, r)
	}
	return f.retry(r)
}

func (f *fakeSaga) WatchSaga(r *sagacoordv1.WatchSagaRequest, s grpc.ServerStreamingServer[sagacoordv1.WatchSagaResponse]) error {
	f.record(r)
	if f.watch == nil {
		return f.UnimplementedSagaServiceServer.WatchSaga(r, s)
	}
	return f.watch(r, s)
}

// fakeTx is a TwoPCService with canned behaviour, like fakeSaga.
type fakeTx struct {
	sagacoordv1.UnimplementedTwoPCServiceServer

	begin func(*sagacoordv1.BeginTransactionRequest) (*sagacoordv1.BeginTransactionResponse, error)
	get   func(*sagacoordv1.GetTransactionRequest) (*sagacoordv1.GetTransactionResponse, error)
	list  func(*sagacoordv1.ListTransactionsRequest) (*sagacoordv1.ListTransactionsResponse, error)
	watch func(*sagacoordv1.WatchTransactionRequest, grpc.ServerStreamingServer[sagacoordv1.WatchTransactionResponse]) error
}

func (f *fakeTx) BeginTransaction(ctx context.Context, r *sagacoordv1.BeginTransactionRequest) (*sagacoordv1.BeginTransactionResponse, error) {
	if f.begin == nil {
		return f.UnimplementedTwoPCServiceServer.BeginTransaction(ctx, r)
	}
	return f.begin(r)
}

func (f *fakeTx) GetTransaction(ctx context.Context, r *sagacoordv1.GetTransactionRequest) (*sagacoordv1.GetTransactionResponse, error) {
	if f.get == nil {
		return f.UnimplementedTwoPCServiceServer.GetTransaction(ctx, r)
	}
	return f.get(r)
}

func (f *fakeTx) ListTransactions(ctx context.Context, r *sagacoordv1.ListTransactionsRequest) (*sagacoordv1.ListTransactionsResponse, error) {
	if f.list == nil {
		return f.UnimplementedTwoPCServiceServer.ListTransactions(ctx, r)
	}
	return f.list(r)
}

func (f *fakeTx) WatchTransaction(r *sagacoordv1.WatchTransactionRequest, s grpc.ServerStreamingServer[sagacoordv1.WatchTransactionResponse]) error {
	if f.watch == nil {
		return f.UnimplementedTwoPCServiceServer.WatchTransaction(r, s)
	}
	return f.watch(r, s)
}

// serve starts a gRPC server on a loopback port with the given services (nil: not registered)
// and returns its address. The server stops when the test ends.
func serve(t *testing.T, saga sagacoordv1.SagaServiceServer, tx sagacoordv1.TwoPCServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	if saga != nil {
		sagacoordv1.RegisterSagaServiceServer(srv, saga)
	}
	if tx != nil {
		sagacoordv1.RegisterTwoPCServiceServer(srv, tx)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

// result is what one sagactl run printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

// runOpts tune one run.
type runOpts struct {
	ctx   context.Context
	stdin string
	env   map[string]string
}

// sagactl runs the CLI in-process against addr (empty: no --addr flag).
func sagactl(t *testing.T, addr string, args ...string) result {
	t.Helper()
	return sagactlWith(t, runOpts{}, addr, args...)
}

func sagactlWith(t *testing.T, o runOpts, addr string, args ...string) result {
	t.Helper()
	ctx := o.ctx
	if ctx == nil {
		ctx = t.Context()
	}
	if addr != "" {
		args = append([]string{"--addr", addr}, args...)
	}
	var stdout, stderr testenv.Buffer
	code := Run(ctx, args, Options{
		Stdin:  strings.NewReader(o.stdin),
		Stdout: &stdout,
		Stderr: &stderr,
		Getenv: func(k string) string { return o.env[k] },
		Now:    func() time.Time { return testNow },
	})
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// requireExit fails with the run's output when the exit code is not want.
func requireExit(t *testing.T, want int, r result) {
	t.Helper()
	require.Equal(t, want, r.code, "exit code\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
}

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func unmarshalProtoJSON(b []byte, m proto.Message) error {
	return protojson.Unmarshal(b, m)
}
