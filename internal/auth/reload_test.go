package auth

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/auth/authtest"
)

// replace swaps the file at path for one with content, as a careful rotation does: written
// beside it, then renamed over it.
func replace(t *testing.T, path string, content []byte) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, content, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// logBuffer collects log lines for a test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func TestCredentialsFileIsReloadedWhenItChanges(t *testing.T) {
	t.Parallel()
	path := authtest.WriteFile(t, "creds.yaml", authtest.CredentialsYAML([]authtest.Token{{Name: "old", Secret: "old-secret", Roles: []string{"reader"}}}, nil))
	logs := &logBuffer{}
	f, err := LoadCredentialsFile(path, slog.New(slog.NewTextHandler(logs, nil)))
	require.NoError(t, err)
	f.every = 0 // look at the file at every call
	f.next.Store(0)
	_, ok := f.Current().Token("old-secret")
	require.True(t, ok)

	replace(t, path, []byte(authtest.CredentialsYAML([]authtest.Token{{Name: "new", Secret: "new-secret", Roles: []string{"operator"}}}, nil)))
	id, ok := f.Current().Token("new-secret")
	require.True(t, ok, "a token added to the file is known without a restart")
	require.Equal(t, "new", id.Name)
	_, ok = f.Current().Token("old-secret")
	require.False(t, ok, "a token removed from the file is revoked")

	replace(t, path, []byte("tokens: [oops\n"))
	for range 3 {
		_, ok = f.Current().Token("new-secret")
		require.True(t, ok, "a broken file leaves the last good credentials in force")
	}
	require.Equal(t, 1, logs.count("credentials file changed but cannot be used"), "the problem is logged once:\n%s", logs.b.String())
	require.Equal(t, 1, logs.count(path+":1: not valid YAML"), "the log names the file and line")
	require.Zero(t, logs.count("new-secret"), "no token is logged")
}

// A rotated certificate is served from the next handshake on, without a restart; files that do
// not load leave the previous certificate in use.
func TestServerCertificateIsReloadedWhenItsFilesChange(t *testing.T) {
	t.Parallel()
	ca := authtest.NewCA(t, "test")
	c1, k1 := ca.Issue(t, authtest.Leaf{CommonName: "server-1"})
	c2, k2 := ca.Issue(t, authtest.Leaf{CommonName: "server-2"})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	replace(t, certFile, read(t, c1))
	replace(t, keyFile, read(t, k1))
	logs := &logBuffer{}
	cfg, err := ServerTLS(TLSFiles{CertFile: certFile, KeyFile: keyFile}, slog.New(slog.NewTextHandler(logs, nil)))
	require.NoError(t, err)
	addr := serveTLS(t, cfg)
	require.Equal(t, "server-1", servedName(t, addr, ca))

	replace(t, certFile, read(t, c2))
	replace(t, keyFile, read(t, k2))
	require.Equal(t, "server-2", servedName(t, addr, ca), "the rotated certificate is served")
	require.Equal(t, 1, logs.count("TLS certificate reloaded"))

	replace(t, keyFile, read(t, k1)) // half a rotation: the key does not match the certificate
	require.Equal(t, "server-2", servedName(t, addr, ca))
	require.Equal(t, "server-2", servedName(t, addr, ca))
	require.Equal(t, 1, logs.count("do not load; serving the previous certificate"), "logged once:\n%s", logs.b.String())
}

func TestServerTLSErrorsNameTheFile(t *testing.T) {
	t.Parallel()
	ca := authtest.NewCA(t, "test")
	cert, key := ca.Issue(t, authtest.Leaf{CommonName: "server"})
	_, otherKey := ca.Issue(t, authtest.Leaf{CommonName: "other"})
	notPEM := authtest.WriteFile(t, "ca.pem", "not a certificate")
	for _, tt := range []struct {
		files TLSFiles
		want  string
	}{
		{TLSFiles{CertFile: "/nonexistent/tls.crt", KeyFile: key}, "/nonexistent/tls.crt"},
		{TLSFiles{CertFile: cert, KeyFile: otherKey}, "private key does not match public key"},
		{TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: notPEM}, notPEM + ": no PEM certificate"},
		{TLSFiles{CertFile: cert, KeyFile: key, RequireClientCert: true}, "with a client CA"},
	} {
		_, err := ServerTLS(tt.files, nil)
		require.ErrorContains(t, err, tt.want)
	}
}

// serveTLS accepts connections and completes their handshakes until the test ends.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = lis.Close(); wg.Wait() })
	return lis.Addr().String()
}

// servedName dials addr and returns the common name of the certificate it serves.
func servedName(t *testing.T, addr string, ca *authtest.CA) string {
	t.Helper()
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(read(t, ca.CertFile)))
	conn, err := tls.DialWithDialer(&net.Dialer{}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	require.NoError(t, err)
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}
