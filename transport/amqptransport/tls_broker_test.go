package amqptransport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/sandbox"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/transporttest"
)

// tlsVHosts is how many vhosts the TLS node boots with, one per test that needs a broker of its
// own (the conformance suite's), so no test waits for rabbitmqctl.
const tlsVHosts = 24

// tlsBroker is the sandbox RabbitMQ node of this package's TLS tests: TLS only, client
// certificates required. The first test that needs it starts it; TestMain stops it.
var tlsBroker struct {
	once     sync.Once
	dir      string
	node     *sandbox.Rabbit
	ca       *sandbox.CA
	client   sandbox.Pair
	password string
	err      error

	mu     sync.Mutex
	vhosts []string // not yet handed out
}

// sandboxBroker returns the TLS node, starting it on first use; it skips the test where
// RabbitMQ is not installed.
func sandboxBroker(t *testing.T) *sandbox.Rabbit {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a RabbitMQ node")
	}
	b := &tlsBroker
	b.once.Do(func() { b.err = startSandboxBroker() })
	if errors.Is(b.err, sandbox.ErrMissing) {
		t.Skip(b.err)
	}
	require.NoError(t, b.err, "start the sandbox RabbitMQ")
	return b.node
}

func startSandboxBroker() error {
	b := &tlsBroker
	var err error
	if b.dir, err = sandbox.MkdirTemp("sagacoord-amqptls-"); err != nil {
		return err
	}
	if b.ca, err = sandbox.NewCA(b.dir); err != nil {
		return err
	}
	if b.client, err = b.ca.Client(b.dir, "client", "tls"); err != nil {
		return err
	}
	b.password = testenv.Name("pw")
	defs := sandbox.Definitions{Users: []sandbox.User{{Name: "tls", Password: b.password}}}
	for i := range tlsVHosts {
		v := fmt.Sprintf("tls-%d", i)
		defs.VHosts = append(defs.VHosts, v)
		defs.Permissions = append(defs.Permissions, sandbox.Permission{User: "tls", VHost: v, Configure: ".*", Write: ".*", Read: ".*"})
	}
	b.vhosts = defs.VHosts
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b.node, err = sandbox.StartRabbit(ctx, sandbox.RabbitConfig{Dir: b.dir + "/rabbitmq", CA: b.ca, ClientCert: true, Definitions: defs})
	return err
}

// stopSandboxBroker stops the TLS node if a test started it.
func stopSandboxBroker() {
	b := &tlsBroker
	if b.node != nil {
		b.node.Stop()
	}
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// tlsVHostURL hands out a vhost of the TLS node that no other test uses, as user tls with the
// client certificate.
func tlsVHostURL(t *testing.T) string {
	t.Helper()
	node := sandboxBroker(t)
	b := &tlsBroker
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.vhosts) == 0 {
		t.Fatalf("the TLS node has no vhost left: raise tlsVHosts (%d)", tlsVHosts)
	}
	v := b.vhosts[0]
	b.vhosts = b.vhosts[1:]
	return node.URL("tls", b.password, v, b.client)
}

// The conformance suite over amqps://, with the CA and the client certificate from the URL: every
// promise of the transport holds on a TLS link (the connection-loss test aside: the node has no
// management API to cut connections with).
func TestConformanceTLS(t *testing.T) {
	t.Parallel()
	sandboxBroker(t)
	var mu sync.Mutex
	vhosts := map[*testing.T]string{}
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		mu.Lock()
		u, ok := vhosts[t]
		if !ok {
			u = tlsVHostURL(t)
			vhosts[t] = u
		}
		mu.Unlock()
		return newTransport(t, Config{URL: u})
	})
}

// A TLS configuration given as Config.TLS, as a Go program would build it, connects as well as
// the URL's parameters do.
func TestTLSFromConfig(t *testing.T) {
	t.Parallel()
	raw := tlsVHostURL(t)
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.RawQuery = ""
	b := &tlsBroker
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(b.ca.CertFile)
	require.NoError(t, err)
	require.True(t, roots.AppendCertsFromPEM(pem))
	cert, err := tls.LoadX509KeyPair(b.client.CertFile, b.client.KeyFile)
	require.NoError(t, err)
	tr := newTransport(t, Config{URL: u.String(), TLS: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, tr.DeclareParticipant(ctx, "tls-config"))
	exists, err := tr.ParticipantExists(ctx, "tls-config")
	require.NoError(t, err)
	require.True(t, exists)
}

// A broker whose certificate the client cannot verify, or a client without the certificate the
// broker requires, fails New with an error that names the broker (never the password) and says
// why.
func TestTLSRefusals(t *testing.T) {
	t.Parallel()
	good := tlsVHostURL(t)
	b := &tlsBroker
	other, err := sandbox.NewCA(t.TempDir())
	require.NoError(t, err)
	set := func(kv ...string) string {
		u, err := url.Parse(good)
		require.NoError(t, err)
		q := u.Query()
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				q.Del(kv[i])
			} else {
				q.Set(kv[i], kv[i+1])
			}
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	for _, tc := range []struct{ name, url, want string }{
		{"a CA that did not sign the broker's certificate", set("cacertfile", other.CertFile), "certificate signed by unknown authority"},
		{"a server name the certificate does not carry", set("server_name_indication", "broker.example"), "broker.example"},
		// With TLS 1.3 the broker's refusal may come as an alert or as a closed connection.
		{"no client certificate", set("certfile", "", "keyfile", ""), "certificate"},
		{"plain AMQP on the TLS port", strings.Replace(set("cacertfile", "", "certfile", "", "keyfile", ""), "amqps://", "amqp://", 1), "amqps://"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		_, err := New(ctx, Config{URL: tc.url, ReconnectBackoffMin: time.Millisecond})
		cancel()
		require.Error(t, err, tc.name)
		msg := err.Error()
		require.Contains(t, msg, tc.want, tc.name)
		require.Contains(t, msg, fmt.Sprintf("127.0.0.1:%d", b.node.Port), "%s: the error names the broker", tc.name)
		require.False(t, strings.Contains(msg, b.password), "%s: the error shows the password: %s", tc.name, msg)
		t.Logf("%s: %v", tc.name, err)
	}
}
