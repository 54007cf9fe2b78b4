package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/auth/authtest"
)

// tlsServer serves a fake SagaService over TLS with the certificate certFile/keyFile; with
// clientCA set it requires client certificates signed by it. Calls must carry the bearer token
// want, when it is set.
func tlsServer(t *testing.T, certFile, keyFile string, clientCA *authtest.CA, want string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCA != nil {
		pem, err := os.ReadFile(clientCA.CertFile)
		require.NoError(t, err)
		cfg.ClientCAs = x509.NewCertPool()
		require.True(t, cfg.ClientCAs.AppendCertsFromPEM(pem))
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	check := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if want != "" && strings.Join(md.Get("authorization"), ",") != "Bearer "+want {
			return nil, status.Error(codes.Unauthenticated, "wrong token")
		}
		return h(ctx, req)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(check))
	sagacoordv1.RegisterSagaServiceServer(srv, &fakeSaga{listDefs: func(*sagacoordv1.ListDefinitionsRequest) (*sagacoordv1.ListDefinitionsResponse, error) {
		return &sagacoordv1.ListDefinitionsResponse{}, nil
	}})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// Each way a TLS connection fails is told in a sentence that says what to check.
func TestTLSFailuresSayWhatToCheck(t *testing.T) {
	t.Parallel()
	ca, other := authtest.NewCA(t, "coordinator-ca"), authtest.NewCA(t, "other-ca")
	cert, key := ca.Issue(t, authtest.Leaf{CommonName: "coordinator"})
	named, namedKey := ca.Issue(t, authtest.Leaf{CommonName: "coordinator", DNSNames: []string{"coordinator.test"}})
	expired, expiredKey := ca.Issue(t, authtest.Leaf{CommonName: "coordinator", Expired: true})
	client, clientKey := ca.Issue(t, authtest.Leaf{CommonName: "ops-alice", Client: true})
	strange, strangeKey := other.Issue(t, authtest.Leaf{CommonName: "ops-eve", Client: true})
	old, oldKey := ca.Issue(t, authtest.Leaf{CommonName: "ops-old", Client: true, Expired: true})
	plain := serve(t, &fakeSaga{}, nil)
	secured := tlsServer(t, cert, key, nil, "")
	byName := tlsServer(t, named, namedKey, nil, "")
	stale := tlsServer(t, expired, expiredKey, nil, "")
	mutual := tlsServer(t, cert, key, ca, "")
	_, mutualPort, _ := net.SplitHostPort(mutual)
	_, byNamePort, _ := net.SplitHostPort(byName)

	for _, tt := range []struct {
		name, addr string
		flags      []string
		want       string
	}{
		{"unknown authority", secured, []string{"--tls"}, "signed by an authority this machine does not trust: give the CA certificate that signed it with --tls-ca"},
		{"another CA", secured, []string{"--tls-ca", other.CertFile}, "not signed by a CA of --tls-ca " + other.CertFile},
		{"name mismatch", "localhost:" + byNamePort, []string{"--tls-ca", ca.CertFile}, "valid for coordinator.test, not for localhost that was dialled: use one of its names in --addr, or give it with --tls-server-name"},
		{"no IP in the certificate", byName, []string{"--tls-ca", ca.CertFile}, "holds no name for the address dialled"},
		{"expired", stale, []string{"--tls-ca", ca.CertFile}, "the coordinator's certificate has expired or is not valid yet (current time"},
		{"no client certificate", mutual, []string{"--tls-ca", ca.CertFile}, "the coordinator requires a client certificate: give one with --tls-cert and --tls-key"},
		// The coordinator's reason arrives when the client reads before it writes; the sentence
		// names the client certificate either way.
		{"client certificate of another CA", mutual, []string{"--tls-ca", ca.CertFile, "--tls-cert", strange, "--tls-key", strangeKey}, "the coordinator refused the client certificate --tls-cert: "},
		{"expired client certificate", "localhost:" + mutualPort, []string{"--tls-ca", ca.CertFile, "--tls-cert", old, "--tls-key", oldKey}, "the coordinator refused the client certificate --tls-cert: "},
		{"TLS to a plaintext coordinator", plain, []string{"--tls-ca", ca.CertFile}, "does not speak TLS on this address"},
		{"plaintext to a TLS coordinator", secured, nil, "if it serves TLS, connect with --tls-ca"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := sagactl(t, tt.addr, append(tt.flags, "definition", "list")...)
			requireExit(t, ExitServer, r)
			require.Contains(t, r.stderr, "sagactl: definition list: cannot connect to coordinator at "+tt.addr+": ")
			require.Contains(t, r.stderr, tt.want)
		})
	}

	r := sagactl(t, "localhost:"+byNamePort, "--tls-ca", ca.CertFile, "--tls-server-name", "coordinator.test", "definition", "list")
	requireExit(t, ExitOK, r)
	r = sagactl(t, mutual, "--tls-ca", ca.CertFile, "--tls-cert", client, "--tls-key", clientKey, "definition", "list")
	requireExit(t, ExitOK, r)
}

// --token-file sends the token over TLS only; the flags come from the environment too.
func TestTokenFile(t *testing.T) {
	t.Parallel()
	ca := authtest.NewCA(t, "ca")
	cert, key := ca.Issue(t, authtest.Leaf{CommonName: "coordinator"})
	addr := tlsServer(t, cert, key, nil, "s3cret")
	tokenFile := authtest.WriteFile(t, "token", "s3cret\n")

	r := sagactl(t, addr, "--tls-ca", ca.CertFile, "--token-file", tokenFile, "definition", "list")
	requireExit(t, ExitOK, r)
	r = sagactlWith(t, runOpts{env: map[string]string{TLSCAEnv: ca.CertFile, TokenFileEnv: tokenFile}}, addr, "definition", "list")
	requireExit(t, ExitOK, r)

	r = sagactl(t, addr, "--tls-ca", ca.CertFile, "definition", "list")
	requireExit(t, ExitServer, r)
	require.Contains(t, r.stderr, "Unauthenticated: wrong token")

	r = sagactl(t, addr, "--token-file", tokenFile, "definition", "list")
	requireExit(t, ExitUsage, r)
	require.Contains(t, r.stderr, "--token-file needs TLS")

	for _, tt := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--tls-ca", ca.CertFile, "--token-file", authtest.WriteFile(t, "empty", " \n")}, "is empty"},
		{[]string{"--tls-ca", ca.CertFile, "--token-file", "/nonexistent/token"}, "/nonexistent/token"},
		{[]string{"--tls-ca", "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		{[]string{"--tls-ca", ca.CertFile, "--tls-cert", cert}, "needs both its certificate file and its key file"},
	} {
		r = sagactl(t, addr, append(tt.flags, "definition", "list")...)
		requireExit(t, ExitUsage, r)
		require.Contains(t, r.stderr, tt.want)
		require.NotContains(t, r.stderr, "s3cret")
	}
}
