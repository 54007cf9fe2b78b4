package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/auth/authtest"
)

// Every method of the API's service descriptors, and every method the server serves (health and
// reflection included), has an entry in methodRoles, and every entry is served: a new call
// cannot ship without a role.
func TestEveryMethodHasARole(t *testing.T) {
	t.Parallel()
	for _, file := range []protoreflect.FileDescriptor{pb.File_sagacoord_v1_saga_proto, pb.File_sagacoord_v1_twopc_proto} {
		services := file.Services()
		for i := range services.Len() {
			methods := services.Get(i).Methods()
			for j := range methods.Len() {
				m := methods.Get(j)
				full := "/" + string(services.Get(i).FullName()) + "/" + string(m.Name())
				_, ok := methodRoles[full]
				require.True(t, ok, "%s has no entry in methodRoles (internal/server/access.go)", full)
			}
		}
	}
	srv := NewGRPCServer(&SagaService{}, &TwoPCService{}, Options{Reflection: true, Credentials: credentialsFile(t)})
	served := map[string]bool{}
	for svc, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			served[full] = true
			_, ok := methodRoles[full]
			require.True(t, ok, "%s is served but has no entry in methodRoles (internal/server/access.go)", full)
		}
	}
	for m := range methodRoles {
		require.True(t, served[m], "methodRoles lists %s, which the server does not serve", m)
	}
}

func TestReflectionOnlyWhenAskedFor(t *testing.T) {
	t.Parallel()
	off := NewGRPCServer(&SagaService{}, &TwoPCService{}, Options{})
	require.NotContains(t, off.GetServiceInfo(), "grpc.reflection.v1.ServerReflection")
	require.Contains(t, off.GetServiceInfo(), "grpc.health.v1.Health")
	on := NewGRPCServer(&SagaService{}, &TwoPCService{}, Options{Reflection: true})
	require.Contains(t, on.GetServiceInfo(), "grpc.reflection.v1.ServerReflection")
}

func credentialsFile(t *testing.T) *auth.CredentialsFile {
	t.Helper()
	path := authtest.WriteFile(t, "creds.yaml", authtest.CredentialsYAML([]authtest.Token{
		{Name: "dash", Secret: "reader-token", Roles: []string{"reader"}},
		{Name: "ci-bot", Secret: "submitter-token", Roles: []string{"submitter"}},
		{Name: "ops-bob", Secret: "operator-token", Roles: []string{"operator"}},
	}, []authtest.Cert{{CommonName: "ops-alice", Roles: []string{"operator"}}}))
	f, err := auth.LoadCredentialsFile(path, nil)
	require.NoError(t, err)
	return f
}

// withToken is the context of a call that carries an authorization header.
func withToken(header string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", header))
}

// withCertificate is the context of a call over TLS with a verified client certificate.
func withCertificate(commonName string) context.Context {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: commonName}}
	info := credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 4000}, AuthInfo: info})
}

func TestGuardAdmitsByRole(t *testing.T) {
	t.Parallel()
	g := &guard{creds: credentialsFile(t), log: discard()}
	for _, tt := range []struct {
		name   string
		ctx    context.Context
		method string
		code   codes.Code
		msg    string // in the status message
		who    string // the identity in the context when admitted
	}{
		{"no credentials", context.Background(), pb.SagaService_GetSaga_FullMethodName, codes.Unauthenticated, "the call has no credentials", ""},
		{"wrong token", withToken("Bearer guess"), pb.SagaService_GetSaga_FullMethodName, codes.Unauthenticated, "not in the coordinator's credentials file", ""},
		{"not bearer", withToken("Basic cmVhZGVyLXRva2Vu"), pb.SagaService_GetSaga_FullMethodName, codes.Unauthenticated, `"Bearer TOKEN"`, ""},
		{"reader reads", withToken("Bearer reader-token"), pb.SagaService_WatchSaga_FullMethodName, codes.OK, "", "dash"},
		{"scheme in any case", withToken("bearer reader-token"), pb.TwoPCService_GetTransaction_FullMethodName, codes.OK, "", "dash"},
		{"reader starts", withToken("Bearer reader-token"), pb.SagaService_StartSaga_FullMethodName, codes.PermissionDenied, "StartSaga needs role submitter (or operator); dash has reader", ""},
		{"submitter starts", withToken("Bearer submitter-token"), pb.SagaService_StartSaga_FullMethodName, codes.OK, "", "ci-bot"},
		{"submitter aborts", withToken("Bearer submitter-token"), pb.SagaService_AbortSaga_FullMethodName, codes.PermissionDenied, "AbortSaga needs role operator; ci-bot has submitter", ""},
		{"operator retries", withToken("Bearer operator-token"), pb.SagaService_RetrySaga_FullMethodName, codes.OK, "", "ops-bob"},
		{"certificate", withCertificate("ops-alice"), pb.SagaService_AbortSaga_FullMethodName, codes.OK, "", "ops-alice"},
		{"unlisted certificate", withCertificate("eve"), pb.SagaService_GetSaga_FullMethodName, codes.PermissionDenied, "GetSaga needs role reader (or submitter, or operator); eve has no role", ""},
		{"health is open", context.Background(), healthpb.Health_Check_FullMethodName, codes.OK, "", ""},
		{"unknown method", withToken("Bearer operator-token"), "/sagacoord.v1.SagaService/Drop", codes.PermissionDenied, "has no role in the coordinator's table", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, err := g.admit(tt.ctx, tt.method)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			if tt.code != codes.OK {
				require.Contains(t, status.Convert(err).Message(), tt.msg)
				return
			}
			id, ok := auth.FromContext(ctx)
			require.Equal(t, tt.who != "", ok)
			require.Equal(t, tt.who, id.Name)
		})
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
