// Package client connects a Go program to a sagacoord coordinator. New returns a Conn holding
// the generated clients of the coordinator's gRPC API, sagacoord.v1: SagaService (definitions
// and sagas) and TwoPCService (two-phase-commit transactions), from package
// github.com/sagacoord/sagacoord/gen/sagacoord/v1. The requests, responses and their meaning are
// documented in proto/sagacoord/v1, the error codes in docs/api.md.
//
// # Stability
//
// This package is the supported way for Go programs to call a coordinator. Its API (New, Conn,
// Conn's fields and methods) only grows: nothing is removed or changes meaning without a new
// major version of the module. The service clients are protoc-gen-go's code for
// proto/sagacoord/v1 and grow with it (new calls, new fields); a change that would break a caller
// goes into a new proto package, sagacoord.v2, with a field of its own here, and v1 stays as it
// is.
package client

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// Conn is one connection to a coordinator and the clients of its services. It is safe for
// concurrent use; Close it when done.
type Conn struct {
	// Saga registers saga definitions and starts, inspects and steers sagas.
	Saga sagacoordv1.SagaServiceClient
	// TwoPC begins and inspects two-phase-commit transactions.
	TwoPC sagacoordv1.TwoPCServiceClient

	cc *grpc.ClientConn
}

// New returns a connection to the coordinator at addr ("host:port", or any target that
// grpc.NewClient accepts). It does not connect: the first call does, and fails with
// codes.Unavailable while the coordinator cannot be reached. The connection is plaintext; opts
// come after that default, so WithTLS (or grpc.WithTransportCredentials) among them replaces it,
// WithToken adds a bearer token, and interceptors or stats handlers (tracing) are added there too:
//
//	sec, err := client.WithTLS(client.TLS{CAFile: "ca.pem"})
//	...
//	conn, err := client.New("coordinator.example.com:7233", sec, client.WithToken(token))
func New(addr string, opts ...grpc.DialOption) (*Conn, error) {
	all := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr, all...)
	if err != nil {
		return nil, err
	}
	return &Conn{
		Saga:  sagacoordv1.NewSagaServiceClient(cc),
		TwoPC: sagacoordv1.NewTwoPCServiceClient(cc),
		cc:    cc,
	}, nil
}

// ClientConn returns the underlying gRPC connection, for its state (GetState) or to reach it
// with other generated clients.
func (c *Conn) ClientConn() *grpc.ClientConn { return c.cc }

// Close closes the connection; calls in flight end with codes.Canceled.
func (c *Conn) Close() error { return c.cc.Close() }
