// Package server implements the gRPC API (sagacoord.v1) on top of the engine.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/engine"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// MaxMessageBytes bounds a gRPC request; the engine's own limits are lower.
const MaxMessageBytes = 4 << 20

// SagaService implements pb.SagaServiceServer.
type SagaService struct {
	pb.UnimplementedSagaServiceServer
	Engine *engine.Engine
	Logger *slog.Logger
	// WatchPoll is how often WatchSaga looks for changes. Default 50ms.
	WatchPoll time.Duration
}

// Options configure NewGRPCServer.
type Options struct {
	// Credentials, when set, authenticate every call but health's and check its method's role
	// (guard.go); nil lets every call in, its caller "anonymous".
	Credentials *auth.CredentialsFile
	// Limiter, when set, rate-limits each caller and caps watch streams (limits.go). It runs
	// after the guard, which identifies the caller it counts by.
	Limiter *Limiter
	// Reflection registers gRPC server reflection. Default off.
	Reflection bool
	// Logger receives refused calls and the causes of hidden errors. Default: discard.
	Logger *slog.Logger
	// GRPC are further server options: TLS credentials, a stats handler for telemetry.
	GRPC []grpc.ServerOption
	// Readiness, when set, keeps the saga and 2PC services Unavailable and health NOT_SERVING
	// until its Serve (readiness.go); nil serves at once.
	Readiness *Readiness
}

// NewGRPCServer returns a gRPC server with the saga and 2PC services, health, and reflection when
// asked for. Interceptors run in this order: error hiding and the UTF-8 check (errors.go,
// codec.go), the guard, the limiter; before all of them, readiness (readiness.go).
func NewGRPCServer(svc *SagaService, tx *TwoPCService, o Options) *grpc.Server {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ready := o.Readiness
	if ready == nil {
		ready = NewReadiness()
		ready.Serve()
	}
	// Readiness first: its Unavailable says only that the coordinator is starting, so nothing
	// behind it needs hiding.
	opts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageBytes)}, ready.serverOptions()...)
	opts = append(opts, errorInterceptors(log, newUTF8Codec())...)
	opts = append(opts, o.GRPC...)
	if o.Credentials != nil {
		g := &guard{creds: o.Credentials, log: log}
		opts = append(opts, grpc.ChainUnaryInterceptor(g.unary), grpc.ChainStreamInterceptor(g.stream))
	}
	if o.Limiter != nil {
		opts = append(opts, o.Limiter.ServerOptions()...)
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterSagaServiceServer(srv, svc)
	pb.RegisterTwoPCServiceServer(srv, tx)
	healthpb.RegisterHealthServer(srv, ready.hs)
	if o.Reflection {
		reflection.Register(srv)
	}
	return srv
}

// toStatus maps engine errors to gRPC codes (docs/api.md lists them): a cancelled or timed-out
// call keeps Canceled or DeadlineExceeded, a network error is Unavailable, and any other error
// becomes Internal with its message, which hideInternals keeps from the client.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var code codes.Code
	switch {
	case errors.Is(err, engine.ErrInvalidArgument):
		code = codes.InvalidArgument
	case errors.Is(err, store.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, engine.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, engine.ErrFailedPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, engine.ErrResourceExhausted):
		code = codes.ResourceExhausted
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, store.ErrInvalidData):
		return status.Error(codes.InvalidArgument, "request: holds a value the database cannot store (a NUL character or invalid UTF-8)")
	case errors.As(err, new(net.Error)):
		code = codes.Unavailable
	default:
		code = codes.Internal
	}
	msg := err.Error()
	for _, prefix := range []string{engine.ErrInvalidArgument.Error() + ": ", engine.ErrFailedPrecondition.Error() + ": ", engine.ErrResourceExhausted.Error() + ": ", engine.ErrAlreadyExists.Error() + ": "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return status.Error(code, msg)
}

func invalid(field, format string, args ...any) error {
	return status.Error(codes.InvalidArgument, field+": "+fmt.Sprintf(format, args...))
}

func parseSagaID(field, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, invalid(field, "%s is not a UUID", quote(s))
	}
	return id, nil
}

// RegisterDefinition implements pb.SagaServiceServer.
func (s *SagaService) RegisterDefinition(ctx context.Context, req *pb.RegisterDefinitionRequest) (*pb.RegisterDefinitionResponse, error) {
	if req.GetDefinition() == nil {
		return nil, invalid("definition", "must be set")
	}
	d, err := definitionFromPB(req.GetDefinition())
	if err != nil {
		return nil, err
	}
	def, created, err := s.Engine.RegisterDefinition(ctx, d)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.RegisterDefinitionResponse{Definition: definitionToPB(def), Created: created}, nil
}

// GetDefinition implements pb.SagaServiceServer.
func (s *SagaService) GetDefinition(ctx context.Context, req *pb.GetDefinitionRequest) (*pb.GetDefinitionResponse, error) {
	if err := checkName("name", req.GetName()); err != nil {
		return nil, err
	}
	if req.GetVersion() < 0 {
		return nil, invalid("version", "is %d; it must be 0 (the latest) or a version", req.GetVersion())
	}
	def, err := s.Engine.Store().GetDefinition(ctx, req.GetName(), int(req.GetVersion()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetDefinitionResponse{Definition: definitionToPB(def)}, nil
}

// ListDefinitions implements pb.SagaServiceServer.
func (s *SagaService) ListDefinitions(ctx context.Context, req *pb.ListDefinitionsRequest) (*pb.ListDefinitionsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	f := store.DefinitionFilter{Limit: size + 1}
	if tok := req.GetPageToken(); tok != "" {
		t, err := decodeToken(tok, listDefinitions, "")
		if err != nil {
			return nil, tokenError("ListDefinitions")
		}
		f.AfterName = t.Name
	}
	defs, err := s.Engine.Store().ListDefinitions(ctx, f)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListDefinitionsResponse{}
	out.Definitions, out.NextPageToken = page(defs, size, definitionToPB,
		func(d saga.Definition) string { return pageToken{Kind: listDefinitions, Name: d.Name}.encode() })
	return out, nil
}

// StartSaga implements pb.SagaServiceServer.
func (s *SagaService) StartSaga(ctx context.Context, req *pb.StartSagaRequest) (*pb.StartSagaResponse, error) {
	var id uuid.UUID
	if req.GetSagaId() != "" {
		var err error
		if id, err = parseSagaID("saga_id", req.GetSagaId()); err != nil {
			return nil, err
		}
	}
	deadline, err := duration("deadline", req.GetDeadline())
	if err != nil {
		return nil, err
	}
	sg, created, err := s.Engine.StartSaga(ctx, engine.StartRequest{
		ID:                id,
		Definition:        req.GetDefinition(),
		DefinitionVersion: int(req.GetDefinitionVersion()),
		Input:             req.GetInput(),
		Deadline:          deadline,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.StartSagaResponse{Saga: s.sagaPB(ctx, sg), Created: created}, nil
}

func (s *SagaService) sagaPB(ctx context.Context, sg *store.Saga) *pb.Saga {
	def, err := s.Engine.Definition(ctx, sg.DefinitionName, sg.DefinitionVersion)
	if err != nil {
		return sagaToPB(sg, nil)
	}
	return sagaToPB(sg, def)
}

// GetSaga implements pb.SagaServiceServer.
func (s *SagaService) GetSaga(ctx context.Context, req *pb.GetSagaRequest) (*pb.GetSagaResponse, error) {
	id, err := parseSagaID("saga_id", req.GetSagaId())
	if err != nil {
		return nil, err
	}
	sg, err := s.Engine.GetSaga(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetSagaResponse{Saga: s.sagaPB(ctx, sg)}, nil
}

// ListSagas implements pb.SagaServiceServer.
func (s *SagaService) ListSagas(ctx context.Context, req *pb.ListSagasRequest) (*pb.ListSagasResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	f := store.ListFilter{Definition: req.GetDefinition(), Limit: size + 1}
	if f.Definition != "" {
		if err := checkName("definition", f.Definition); err != nil {
			return nil, err
		}
	}
	if req.GetStatus() != pb.SagaStatus_SAGA_STATUS_UNSPECIFIED {
		if f.Status = sagaStatusFromPB(req.GetStatus()); f.Status == "" {
			return nil, invalid("status", "unknown value %d", req.GetStatus())
		}
	}
	filter := filterHash(string(f.Status), f.Definition)
	if tok := req.GetPageToken(); tok != "" {
		t, err := decodeToken(tok, listSagas, filter)
		if err != nil {
			return nil, tokenError("ListSagas")
		}
		f.AfterCreatedAt, f.AfterID = time.Unix(0, t.At), uuid.MustParse(t.ID)
	}
	sagas, err := s.Engine.Store().ListSagas(ctx, f)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListSagasResponse{}
	out.Sagas, out.NextPageToken = page(sagas, size, func(sg *store.Saga) *pb.Saga { return sagaToPB(sg, nil) },
		func(sg *store.Saga) string { return rowToken(listSagas, filter, sg.CreatedAt, sg.ID) })
	return out, nil
}

// AbortSaga implements pb.SagaServiceServer.
func (s *SagaService) AbortSaga(ctx context.Context, req *pb.AbortSagaRequest) (*pb.AbortSagaResponse, error) {
	id, err := parseSagaID("saga_id", req.GetSagaId())
	if err != nil {
		return nil, err
	}
	if err := checkText("reason", req.GetReason()); err != nil {
		return nil, err
	}
	sg, err := s.Engine.AbortSaga(ctx, id, req.GetReason())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.AbortSagaResponse{Saga: s.sagaPB(ctx, sg)}, nil
}

// RetrySaga implements pb.SagaServiceServer.
func (s *SagaService) RetrySaga(ctx context.Context, req *pb.RetrySagaRequest) (*pb.RetrySagaResponse, error) {
	id, err := parseSagaID("saga_id", req.GetSagaId())
	if err != nil {
		return nil, err
	}
	sg, err := s.Engine.RetrySaga(ctx, id, req.GetReason())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.RetrySagaResponse{Saga: s.sagaPB(ctx, sg)}, nil
}

// WatchSaga implements pb.SagaServiceServer. It sends the saga whenever its version changes and
// returns after sending a terminal state.
func (s *SagaService) WatchSaga(req *pb.WatchSagaRequest, stream grpc.ServerStreamingServer[pb.WatchSagaResponse]) error {
	id, err := parseSagaID("saga_id", req.GetSagaId())
	if err != nil {
		return err
	}
	w, stop := s.Engine.WatchSaga(id)
	defer stop()
	return watch(stream.Context(), watchPoll(s.WatchPoll, s.Engine.Listening()), w, func(ctx context.Context) (*store.Saga, error) {
		return s.Engine.GetSaga(ctx, id)
	}, func(sg *store.Saga) (int64, bool) {
		return sg.Version, sg.State.Status.Terminal()
	}, func(ctx context.Context, sg *store.Saga) error {
		return stream.Send(&pb.WatchSagaResponse{Saga: s.sagaPB(ctx, sg)})
	})
}
