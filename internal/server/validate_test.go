package server_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// deep is a JSON value nested depth levels.
func deep(depth int) []byte {
	return []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
}

// Finding: input nested 10,000 deep was accepted and then dead-lettered by every worker. StartSaga
// and BeginTransaction refuse what the workers' decoders refuse.
func TestStartRefusesWhatWorkersRefuse(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{})
	a.register("one")
	_, err := a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one", Input: deep(10_000)})
	requireCode(t, err, codes.InvalidArgument, "input: is nested 10000 levels deep; the limit is 64")
	_, err = a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one", Input: []byte("\"\xff\"")})
	requireCode(t, err, codes.InvalidArgument, "input", "UTF-8")
	_, err = a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one", Input: deep(64)})
	require.NoError(t, err, "64 levels are allowed")

	part := func(payload string) *pb.BeginTransactionRequest {
		return &pb.BeginTransactionRequest{Participants: []*pb.TransactionParticipant{{Name: "p", Payload: []byte(payload)}}}
	}
	_, err = a.txs.BeginTransaction(a.ctx, part(string(deep(65))))
	requireCode(t, err, codes.InvalidArgument, "participants[0].payload: is nested 65 levels deep")
	_, err = a.txs.BeginTransaction(a.ctx, part(`{"a":"\u0000"}`))
	requireCode(t, err, codes.InvalidArgument, "participants[0].payload", `\u0000`)
	_, err = a.txs.BeginTransaction(a.ctx, part("\"\xfe\""))
	requireCode(t, err, codes.InvalidArgument, "participants[0].payload", "UTF-8")
}

// Finding: a NUL character in a name, a filter or a reason reached PostgreSQL and came back as
// Internal with its error. Each is InvalidArgument naming the field.
func TestNULIsInvalidArgumentNamingTheField(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{})
	a.register("one")
	r, err := a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one"})
	require.NoError(t, err)
	_, err = a.sagas.GetDefinition(a.ctx, &pb.GetDefinitionRequest{Name: "o\x00ne"})
	requireCode(t, err, codes.InvalidArgument, "name:")
	_, err = a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "o\x00ne"})
	requireCode(t, err, codes.InvalidArgument, "definition:")
	_, err = a.sagas.ListSagas(a.ctx, &pb.ListSagasRequest{Definition: "o\x00ne"})
	requireCode(t, err, codes.InvalidArgument, "definition:")
	_, err = a.sagas.AbortSaga(a.ctx, &pb.AbortSagaRequest{SagaId: r.GetSaga().GetId(), Reason: "no\x00"})
	requireCode(t, err, codes.InvalidArgument, "reason: contains a NUL character")
	_, err = a.txs.BeginTransaction(a.ctx, &pb.BeginTransactionRequest{Participants: []*pb.TransactionParticipant{{Name: "p\x00"}}})
	requireCode(t, err, codes.InvalidArgument, "participants[0].name")
	_, err = a.sagas.RegisterDefinition(a.ctx, &pb.RegisterDefinitionRequest{Definition: &pb.SagaDefinition{
		Name: "two", Steps: []*pb.StepDefinition{{Name: "a", Participant: "p", Action: "d\x00o"}}}})
	requireCode(t, err, codes.InvalidArgument, "steps[0].action")
}

// rawCodec sends a request's bytes as they are, as a client in another language may.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }
func (rawCodec) Name() string                       { return "proto" }

// Finding: invalid UTF-8 in a string field was Internal ("failed to unmarshal"), naming nothing.
// It is InvalidArgument naming the field.
func TestInvalidUTF8IsInvalidArgumentNamingTheField(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{})
	a.register("one")
	conn := a.rawConn()
	// corrupt marshals m and replaces the bytes of marker with invalid UTF-8.
	corrupt := func(m proto.Message, marker string) []byte {
		b, err := proto.Marshal(m)
		require.NoError(t, err)
		require.True(t, bytes.Contains(b, []byte(marker)))
		return bytes.Replace(b, []byte(marker), bytes.Repeat([]byte{0xff}, len(marker)), 1)
	}
	for _, tc := range []struct {
		method string
		req    []byte
		field  string
	}{
		{"/sagacoord.v1.SagaService/GetDefinition", corrupt(&pb.GetDefinitionRequest{Name: "MARK"}, "MARK"), "name: is not valid UTF-8"},
		{"/sagacoord.v1.SagaService/ListSagas", corrupt(&pb.ListSagasRequest{Definition: "MARK"}, "MARK"), "definition: is not valid UTF-8"},
		{"/sagacoord.v1.SagaService/AbortSaga", corrupt(&pb.AbortSagaRequest{SagaId: uuid.NewString(), Reason: "MARK"}, "MARK"), "reason: is not valid UTF-8"},
		{"/sagacoord.v1.SagaService/RegisterDefinition", corrupt(&pb.RegisterDefinitionRequest{Definition: &pb.SagaDefinition{
			Name: "two", Steps: []*pb.StepDefinition{{Name: "a", Participant: "p", Action: "x"}, {Name: "b", Participant: "MARK", Action: "y"}}}}, "MARK"),
			"definition.steps[1].participant: is not valid UTF-8"},
		{"/sagacoord.v1.TwoPCService/BeginTransaction", corrupt(&pb.BeginTransactionRequest{Participants: []*pb.TransactionParticipant{{Name: "MARK"}}}, "MARK"),
			"participants[0].name: is not valid UTF-8"},
	} {
		var out pb.GetDefinitionResponse
		err := conn.Invoke(a.ctx, tc.method, tc.req, &out)
		requireCode(t, err, codes.InvalidArgument, tc.field)
	}
	// A stream's request too.
	stream, err := conn.NewStream(a.ctx, &grpc.StreamDesc{ServerStreams: true}, "/sagacoord.v1.SagaService/WatchSaga")
	require.NoError(t, err)
	require.NoError(t, stream.SendMsg(corrupt(&pb.WatchSagaRequest{SagaId: "MARK"}, "MARK")))
	require.NoError(t, stream.CloseSend())
	requireCode(t, stream.RecvMsg(&pb.WatchSagaResponse{}), codes.InvalidArgument, "saga_id: is not valid UTF-8")
}

// rawConn is a connection that sends requests as raw bytes.
func (a *api) rawConn() *grpc.ClientConn {
	conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	require.NoError(a.t, err)
	a.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Finding: durations that protobuf calls invalid were reinterpreted; StartSaga's deadline had no
// bound; version -1 meant the latest in GetDefinition and was an error in StartSaga.
func TestDurationsAndVersionsHaveOneRule(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{})
	a.register("one")
	mixed := &durationpb.Duration{Seconds: 1, Nanos: -5}
	tooManyNanos := &durationpb.Duration{Nanos: 2e9}
	_, err := a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one", Deadline: mixed})
	requireCode(t, err, codes.InvalidArgument, "deadline: seconds 1 and nanos -5 are not a valid duration")
	_, err = a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one", Deadline: tooManyNanos})
	requireCode(t, err, codes.InvalidArgument, "deadline:")
	_, err = a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one", Deadline: durationpb.New(721 * time.Hour)})
	requireCode(t, err, codes.InvalidArgument, "deadline:", "720h")
	_, err = a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one", Deadline: durationpb.New(720 * time.Hour)})
	require.NoError(t, err)
	_, err = a.txs.BeginTransaction(a.ctx, &pb.BeginTransactionRequest{PrepareTimeout: mixed,
		Participants: []*pb.TransactionParticipant{{Name: "p"}}})
	requireCode(t, err, codes.InvalidArgument, "prepare_timeout:")
	def := func(step *pb.StepDefinition) *pb.RegisterDefinitionRequest {
		step.Name, step.Participant, step.Action = "a", "p", "do"
		return &pb.RegisterDefinitionRequest{Definition: &pb.SagaDefinition{Name: "two", Steps: []*pb.StepDefinition{step}}}
	}
	_, err = a.sagas.RegisterDefinition(a.ctx, def(&pb.StepDefinition{Timeout: tooManyNanos}))
	requireCode(t, err, codes.InvalidArgument, "steps[0].timeout:")
	_, err = a.sagas.RegisterDefinition(a.ctx, def(&pb.StepDefinition{Retry: &pb.RetryPolicy{MaxBackoff: mixed}}))
	requireCode(t, err, codes.InvalidArgument, "steps[0].retry.max_backoff:")
	_, err = a.sagas.RegisterDefinition(a.ctx, def(&pb.StepDefinition{CompensationRetry: &pb.RetryPolicy{InitialBackoff: mixed}}))
	requireCode(t, err, codes.InvalidArgument, "steps[0].compensation_retry.initial_backoff:")

	_, err = a.sagas.GetDefinition(a.ctx, &pb.GetDefinitionRequest{Name: "one", Version: -1})
	requireCode(t, err, codes.InvalidArgument, "version:")
	_, err = a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one", DefinitionVersion: -1})
	requireCode(t, err, codes.InvalidArgument, "definition_version:")
	got, err := a.sagas.GetDefinition(a.ctx, &pb.GetDefinitionRequest{Name: "one"})
	require.NoError(t, err, "0 is the latest")
	require.EqualValues(t, 1, got.GetDefinition().GetVersion())
}
