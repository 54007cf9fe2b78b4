package server

import (
	"context"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// Readiness is whether the API serves. A coordinator listens before it has reached its database
// and broker: until Serve, health reports NOT_SERVING and every call of the saga and 2PC services
// fails with Unavailable, which clients retry; after Shutdown, health reports NOT_SERVING again
// while in-flight calls finish.
type Readiness struct {
	hs      *health.Server
	serving atomic.Bool
}

// NewReadiness returns a Readiness that does not serve yet.
func NewReadiness() *Readiness {
	r := &Readiness{hs: health.NewServer()}
	r.set(healthpb.HealthCheckResponse_NOT_SERVING)
	return r
}

// Serve lets calls in and reports SERVING. Whatever the services need must be set before.
func (r *Readiness) Serve() {
	r.serving.Store(true)
	r.set(healthpb.HealthCheckResponse_SERVING)
}

// Shutdown reports NOT_SERVING for good, so that load balancers stop sending calls.
func (r *Readiness) Shutdown() { r.hs.Shutdown() }

func (r *Readiness) set(s healthpb.HealthCheckResponse_ServingStatus) {
	for _, name := range []string{"", pb.SagaService_ServiceDesc.ServiceName, pb.TwoPCService_ServiceDesc.ServiceName} {
		r.hs.SetServingStatus(name, s)
	}
}

// errNotReady is what a call gets before Serve.
var errNotReady = status.Error(codes.Unavailable,
	"the coordinator is starting: it has not reached its database and broker yet; retry shortly")

// gated reports whether method belongs to a service that waits for Serve: the saga and 2PC
// services do; health and reflection answer at once.
func gated(method string) bool {
	for _, name := range []string{pb.SagaService_ServiceDesc.ServiceName, pb.TwoPCService_ServiceDesc.ServiceName} {
		if strings.HasPrefix(method, "/"+name+"/") {
			return true
		}
	}
	return false
}

func (r *Readiness) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if !r.serving.Load() && gated(info.FullMethod) {
				return nil, errNotReady
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if !r.serving.Load() && gated(info.FullMethod) {
				return errNotReady
			}
			return h(srv, ss)
		}),
	}
}
