package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/sagacoord/sagacoord/client"
	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/auth/authtest"
	"github.com/sagacoord/sagacoord/internal/cli"
	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/internal/telemetry/traceexport"
	"github.com/sagacoord/sagacoord/protocol"
)

// The identities of the secured coordinators: a token per role, and a client certificate.
var (
	readerToken    = authtest.Token{Name: "dash", Secret: "reader-secret-0123456789", Roles: []string{"reader"}}
	submitterToken = authtest.Token{Name: "ci-bot", Secret: "submitter-secret-0123456789", Roles: []string{"submitter"}}
	operatorToken  = authtest.Token{Name: "ops-bob", Secret: "operator-secret-0123456789", Roles: []string{"operator"}}
	operatorCert   = authtest.Cert{CommonName: "ops-alice", Roles: []string{"operator"}}
)

// secured is a coordinator with TLS (its certificate in files the test may rotate), client
// certificates of ca and the credentials file of the identities above.
type secured struct {
	t                           *testing.T
	ca                          *authtest.CA
	coord                       *coordinator.Coordinator
	certFile, keyFile, credFile string
}

// startSecured starts an in-process coordinator with TLS and credentials on the test's database
// and vhost; adjust changes its configuration further.
func (e *env) startSecured(adjust func(*coordinator.Config)) *secured {
	t := e.t
	s := &secured{t: t, ca: authtest.NewCA(t, "sagacoord-test")}
	dir := t.TempDir()
	s.certFile, s.keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	s.rotate("coordinator-1")
	s.credFile = authtest.WriteFile(t, "credentials.yaml", authtest.CredentialsYAML(
		[]authtest.Token{readerToken, submitterToken, operatorToken}, []authtest.Cert{operatorCert}))
	s.coord = e.runCoordinator(func(c *coordinator.Config) {
		c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile, c.CredentialsFile = s.certFile, s.keyFile, s.ca.CertFile, s.credFile
		if adjust != nil {
			adjust(c)
		}
	})
	return s
}

// rotate puts a new server certificate with this common name in place, as a careful rotation
// does: written beside the old files, then renamed over them.
func (s *secured) rotate(commonName string) {
	t := s.t
	cert, key := s.ca.Issue(t, authtest.Leaf{CommonName: commonName})
	for src, dst := range map[string]string{cert: s.certFile, key: s.keyFile} {
		b, err := os.ReadFile(src)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(dst+".new", b, 0o600))
		require.NoError(t, os.Rename(dst+".new", dst))
	}
}

// clientAs dials the secured coordinator over TLS, with opts (a token, a client certificate).
func (e *env) clientAs(s *secured, tlsFiles client.TLS, opts ...grpc.DialOption) *client.Conn {
	e.t.Helper()
	tlsFiles.CAFile = s.ca.CertFile
	sec, err := client.WithTLS(tlsFiles)
	require.NoError(e.t, err)
	c, err := client.New(s.coord.Addr(), append([]grpc.DialOption{sec}, opts...)...)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

func (e *env) withToken(s *secured, tk authtest.Token) *client.Conn {
	return e.clientAs(s, client.TLS{}, client.WithToken(tk.Secret))
}

// TestRolesAndRefusals: each role may do its calls and no more; a call without credentials or
// with a wrong token is Unauthenticated, a missing role PermissionDenied naming the role; an
// operator's abort is in the saga's audit trail with the operator's name and reason, as GetSaga
// and sagactl show it; health answers without credentials; reflection is off.
func TestRolesAndRefusals(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	s := e.startSecured(nil)
	reader, submitter, operator := e.withToken(s, readerToken), e.withToken(s, submitterToken), e.withToken(s, operatorToken)
	e.client = operator.Saga
	release := e.newGate()
	e.startParticipant(participantOpts{name: "pa", behave: func(ctx context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		if cmd.Kind == protocol.KindAction {
			return nil, release.wait(ctx)
		}
		return nil, nil
	}})

	reg, err := submitter.Saga.RegisterDefinition(e.ctx, &pb.RegisterDefinitionRequest{Definition: chain("guarded", slowStep("a", "pa"))})
	require.NoError(t, err)
	require.Equal(t, "ci-bot", reg.GetDefinition().GetRegisteredBy())
	got, err := reader.Saga.GetDefinition(e.ctx, &pb.GetDefinitionRequest{Name: "guarded"})
	require.NoError(t, err, "a reader reads definitions")
	require.Equal(t, "ci-bot", got.GetDefinition().GetRegisteredBy())

	start := &pb.StartSagaRequest{SagaId: "0b1c2d3e-0000-4000-8000-000000000001", Definition: "guarded", Input: []byte(`{}`)}
	_, err = e.clientAs(s, client.TLS{}).Saga.GetSaga(e.ctx, &pb.GetSagaRequest{SagaId: start.SagaId})
	requireCode(t, err, codes.Unauthenticated, "the call has no credentials")
	_, err = e.withToken(s, authtest.Token{Secret: "guessed"}).Saga.GetSaga(e.ctx, &pb.GetSagaRequest{SagaId: start.SagaId})
	requireCode(t, err, codes.Unauthenticated, "bearer token is not in the coordinator's credentials file")
	_, err = reader.Saga.StartSaga(e.ctx, start)
	requireCode(t, err, codes.PermissionDenied, "StartSaga needs role submitter", "dash has reader")
	_, err = submitter.Saga.StartSaga(e.ctx, start)
	require.NoError(t, err, "a submitter starts sagas")
	e.waitFor(start.SagaId, 30*time.Second, "step a running", func(sg *pb.Saga) bool {
		return stepOf(t, sg, "a").GetStatus() == pb.StepStatus_STEP_STATUS_RUNNING
	})
	_, err = submitter.Saga.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: start.SagaId, Reason: "not mine to abort"})
	requireCode(t, err, codes.PermissionDenied, "AbortSaga needs role operator", "ci-bot has submitter")
	_, err = reader.TwoPC.BeginTransaction(e.ctx, &pb.BeginTransactionRequest{})
	requireCode(t, err, codes.PermissionDenied, "BeginTransaction needs role submitter")

	_, err = operator.Saga.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: start.SagaId, Reason: "customer cancelled"})
	require.NoError(t, err)
	release.open()
	sg := e.waitStatus(start.SagaId, 30*time.Second, pb.SagaStatus_SAGA_STATUS_COMPENSATED)
	require.Len(t, sg.GetAudit(), 1)
	entry := sg.GetAudit()[0]
	require.Equal(t, []string{"abort", "ops-bob", "customer cancelled"}, []string{entry.GetAction(), entry.GetBy(), entry.GetReason()})
	require.WithinDuration(t, time.Now(), entry.GetAt().AsTime(), time.Minute, "the entry has the time of the abort")

	out := runSagactl(t, s, "saga", "get", start.SagaId)
	require.Regexp(t, `(?m)^AUDIT AT\s+ACTION\s+BY\s+REASON\n\S+\s+abort\s+ops-bob\s+customer cancelled$`, out)

	health, err := healthpb.NewHealthClient(e.clientAs(s, client.TLS{}).ClientConn()).Check(e.ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "health needs no credentials")
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, health.GetStatus())
	requireReflection(t, operator.ClientConn(), codes.Unimplemented)
}

// runSagactl runs sagactl in-process against the secured coordinator as the operator's token,
// and returns what it printed.
func runSagactl(t *testing.T, s *secured, args ...string) string {
	t.Helper()
	tokenFile := authtest.WriteFile(t, "token", operatorToken.Secret+"\n")
	var stdout, stderr strings.Builder
	code := cli.Run(t.Context(), append([]string{"--addr", s.coord.Addr(), "--tls-ca", s.ca.CertFile, "--token-file", tokenFile}, args...),
		cli.Options{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
	require.Equal(t, cli.ExitOK, code, "sagactl %v: %s", args, stderr.String())
	return stdout.String()
}

// requireReflection lists the services through server reflection and requires the code want.
func requireReflection(t *testing.T, cc grpc.ClientConnInterface, want codes.Code) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	// A server that ends the stream at once (reflection off) may do so before the request is
	// sent: Send then returns io.EOF, and Recv gives the stream's status, as gRPC documents.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); !errors.Is(err, io.EOF) {
		require.NoError(t, err)
	}
	resp, err := stream.Recv()
	require.Equal(t, want, status.Code(err), "reflection: %v", err)
	if want == codes.OK {
		var names []string
		for _, svc := range resp.GetListServicesResponse().GetService() {
			names = append(names, svc.GetName())
		}
		require.Contains(t, names, "sagacoord.v1.SagaService")
	}
}

// TestClientCertificateIdentity: a verified client certificate's common name is the caller, with
// the roles the credentials file gives it; a certificate the file does not list has none; with
// --tls-require-client-cert a connection without a certificate is refused, token or not.
func TestClientCertificateIdentity(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	s := e.startSecured(nil)
	aliceCert, aliceKey := s.ca.Issue(t, authtest.Leaf{CommonName: operatorCert.CommonName, Client: true})
	alice := e.clientAs(s, client.TLS{CertFile: aliceCert, KeyFile: aliceKey})
	reg, err := alice.Saga.RegisterDefinition(e.ctx, &pb.RegisterDefinitionRequest{Definition: chain("by-cert", step("a", "pa"))})
	require.NoError(t, err)
	require.Equal(t, "ops-alice", reg.GetDefinition().GetRegisteredBy(), "the certificate's common name is the caller")

	eveCert, eveKey := s.ca.Issue(t, authtest.Leaf{CommonName: "eve", Client: true})
	_, err = e.clientAs(s, client.TLS{CertFile: eveCert, KeyFile: eveKey}).Saga.ListDefinitions(e.ctx, &pb.ListDefinitionsRequest{})
	requireCode(t, err, codes.PermissionDenied, "ListDefinitions needs role reader", "eve has no role")
	// A token, when the call has one, is the caller rather than the certificate.
	both := e.clientAs(s, client.TLS{CertFile: eveCert, KeyFile: eveKey}, client.WithToken(readerToken.Secret))
	_, err = both.Saga.ListDefinitions(e.ctx, &pb.ListDefinitionsRequest{})
	require.NoError(t, err)

	strict := e.startSecured(func(c *coordinator.Config) { c.TLSRequireClientCert = true })
	_, err = e.withToken(strict, readerToken).Saga.ListDefinitions(e.ctx, &pb.ListDefinitionsRequest{})
	requireCode(t, err, codes.Unavailable)
	strictCert, strictKey := strict.ca.Issue(t, authtest.Leaf{CommonName: operatorCert.CommonName, Client: true})
	_, err = e.clientAs(strict, client.TLS{CertFile: strictCert, KeyFile: strictKey}).Saga.ListDefinitions(e.ctx, &pb.ListDefinitionsRequest{})
	require.NoError(t, err)
}

// TestRotationWithoutRestart: a new server certificate is served to new connections once its
// files are replaced, while the old connection keeps working; a token added to the credentials
// file is accepted, and a removed one refused, without a restart.
func TestRotationWithoutRestart(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	s := e.startSecured(nil)
	first := e.withToken(s, operatorToken)
	require.Equal(t, "coordinator-1", servedCertificate(t, first))

	s.rotate("coordinator-2")
	require.Equal(t, "coordinator-2", servedCertificate(t, e.withToken(s, operatorToken)), "a new connection gets the new certificate")
	require.Equal(t, "coordinator-1", servedCertificate(t, first), "the open connection goes on")

	newcomer := authtest.Token{Name: "newcomer", Secret: "newcomer-secret-0123456789", Roles: []string{"reader"}}
	creds := authtest.CredentialsYAML([]authtest.Token{newcomer, submitterToken}, nil)
	require.NoError(t, os.WriteFile(s.credFile+".new", []byte(creds), 0o600))
	require.NoError(t, os.Rename(s.credFile+".new", s.credFile))
	c := e.withToken(s, newcomer)
	eventually(t, 10*time.Second, func() (bool, string) {
		_, err := c.Saga.ListDefinitions(e.ctx, &pb.ListDefinitionsRequest{})
		return err == nil, "the new token is not accepted yet: " + status.Convert(err).Message()
	})
	_, err := first.Saga.ListDefinitions(e.ctx, &pb.ListDefinitionsRequest{})
	requireCode(t, err, codes.Unauthenticated, "not in the coordinator's credentials file")
}

// servedCertificate makes a call and returns the common name of the certificate the
// coordinator presented on its connection.
func servedCertificate(t *testing.T, c *client.Conn) string {
	t.Helper()
	var p peer.Peer
	_, err := c.Saga.ListDefinitions(t.Context(), &pb.ListDefinitionsRequest{}, grpc.Peer(&p))
	require.NoError(t, err)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	require.True(t, ok, "the connection is TLS")
	return info.State.PeerCertificates[0].Subject.CommonName
}

// TestReflectionOnlyWithTheFlag: server reflection is off by default and on with --reflection.
func TestReflectionOnlyWithTheFlag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	requireReflection(t, e.dialConn(e.coord.Addr()), codes.Unimplemented)
	on := e.runCoordinator(func(c *coordinator.Config) { c.Reflection = true })
	requireReflection(t, e.dialConn(on.Addr()), codes.OK)
}

// TestOpenAddressNeedsTLSOrInsecure: the coordinator refuses to serve an address that is not
// loopback without TLS and credentials, says what to set, and serves it with --insecure.
func TestOpenAddressNeedsTLSOrInsecure(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	out := runCaptured(t, 60*time.Second, nil, coordinatorBinary(t), "serve", "--database-url", e.dbURL, "--amqp-url", e.amqpURL, "--listen", "0.0.0.0:0")
	require.Contains(t, out, "coordinator: listen address 0.0.0.0:0 is not a loopback address")
	require.Contains(t, out, "set --tls-cert, --tls-key and --credentials-file")
	require.Contains(t, out, "or pass --insecure")
	require.NotContains(t, out, "coordinator listening")

	open := e.startCoordinatorProcess("--listen", "0.0.0.0:0", "--insecure")
	require.Contains(t, open.stderr.String(), "the API is served without credentials on an address that is not loopback")
	_, port, err := net.SplitHostPort(open.addr)
	require.NoError(t, err)
	e.client = e.dial("127.0.0.1:" + port)
	_, err = e.client.ListDefinitions(e.ctx, &pb.ListDefinitionsRequest{})
	require.NoError(t, err, "--insecure serves the open address")
}

// dialConn returns a plaintext connection to the coordinator at addr, closed when the test ends.
func (e *env) dialConn(addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestCallerIsOnTheCallSpan: the server span of an authenticated call carries the caller as
// enduser.id.
func TestCallerIsOnTheCallSpan(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := traceexport.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e := newEnvWith(t, envOpts{noCoordinator: true})
	s := e.startSecured(func(c *coordinator.Config) { c.TracerProvider = tp })
	_, err := e.withToken(s, submitterToken).Saga.RegisterDefinition(e.ctx, &pb.RegisterDefinitionRequest{Definition: chain("traced", step("a", "pa"))})
	require.NoError(t, err)
	eventually(t, 10*time.Second, func() (bool, string) {
		for _, span := range exp.GetSpans().Snapshots() {
			if span.Name() == "sagacoord.v1.SagaService/RegisterDefinition" {
				return attr(span, telemetry.AttrEndUserID) == "ci-bot", "enduser.id is " + attr(span, telemetry.AttrEndUserID)
			}
		}
		return false, "no RegisterDefinition span yet"
	})
}
