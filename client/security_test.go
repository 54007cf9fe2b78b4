package client_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sagacoord/sagacoord/client"
	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/auth/authtest"
)

// serveTLS runs the saga service over TLS (the coordinator's certificate files, verifying client
// certificates of ca when given) and answers each call with who made it: the bearer token or the
// client certificate's common name, in the error message.
func serveTLS(t *testing.T, ca *authtest.CA) string {
	t.Helper()
	cert, key := ca.Issue(t, authtest.Leaf{CommonName: "coordinator"})
	cfg, err := auth.ServerTLS(auth.TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	who := func(ctx context.Context, _ any, _ *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		name := strings.Join(md.Get("authorization"), ",")
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
				name += "cert=" + info.State.VerifiedChains[0][0].Subject.CommonName
			}
		}
		return nil, status.Error(codes.PermissionDenied, name)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(who))
	sagacoordv1.RegisterSagaServiceServer(srv, sagaServer{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// caller makes one call and returns what the server saw of the caller.
func caller(t *testing.T, c *client.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := c.Saga.ListDefinitions(ctx, &sagacoordv1.ListDefinitionsRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("call: %v, want the server's answer", err)
	}
	return status.Convert(err).Message()
}

func TestTLSWithTokenOrClientCertificate(t *testing.T) {
	ca := authtest.NewCA(t, "ca")
	addr := serveTLS(t, ca)
	sec, err := client.WithTLS(client.TLS{CAFile: ca.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := authtest.WriteFile(t, "token", "  s3cret\n")
	token, err := client.ReadTokenFile(tokenFile)
	if err != nil || token != "s3cret" {
		t.Fatalf("ReadTokenFile = %q, %v; want the token without whitespace", token, err)
	}
	c, err := client.New(addr, sec, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := caller(t, c); got != "Bearer s3cret" {
		t.Errorf("the server saw %q, want the bearer token", got)
	}

	certFile, keyFile := ca.Issue(t, authtest.Leaf{CommonName: "ops-alice", Client: true})
	mtls, err := client.WithTLS(client.TLS{CAFile: ca.CertFile, CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	m, err := client.New(addr, mtls)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := caller(t, m); got != "cert=ops-alice" {
		t.Errorf("the server saw %q, want the client certificate", got)
	}
}

// A token never travels in plaintext, and a file that cannot be used is named.
func TestSecurityOptionsRefuseMistakes(t *testing.T) {
	if _, err := client.New("127.0.0.1:1", client.WithToken("s3cret")); err == nil || !strings.Contains(err.Error(), "transport level security") {
		t.Errorf("a token without TLS: New = %v, want a refusal", err)
	}
	for _, tt := range []struct {
		tls  client.TLS
		want string
	}{
		{client.TLS{CAFile: "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		{client.TLS{CAFile: authtest.WriteFile(t, "ca.pem", "junk")}, "no PEM certificate"},
		{client.TLS{CertFile: "c.pem"}, "both its certificate file and its key file"},
		{client.TLS{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}, "/nonexistent/c.pem"},
	} {
		if _, err := client.WithTLS(tt.tls); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("WithTLS(%+v) = %v, want an error with %q", tt.tls, err, tt.want)
		}
	}
	if _, err := client.ReadTokenFile(authtest.WriteFile(t, "empty", "\n")); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("an empty token file: %v", err)
	}
}
