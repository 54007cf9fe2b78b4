package amqptransport

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/sandbox"
)

// TestTLSConfig checks how an amqps:// URL's query parameters and Config.TLS become the TLS of
// the connections, and that every mistake is reported with what to do.
func TestTLSConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := sandbox.NewCA(dir)
	require.NoError(t, err)
	client, err := ca.Client(dir, "client", "bank-a")
	require.NoError(t, err)
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o644))
	withQuery := func(base string, kv ...string) string {
		q := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return base + "?" + q.Encode()
	}
	const mq = "amqps://u:secret@mq.example:5671/v"

	cfg, err := Config{URL: "amqp://u:secret@mq.example/v"}.tlsConfig()
	require.NoError(t, err)
	require.Nil(t, cfg, "amqp:// is plain TCP")

	cfg, err = Config{URL: mq}.tlsConfig()
	require.NoError(t, err)
	require.Nil(t, cfg.RootCAs, "no cacertfile: the system's roots")
	require.Equal(t, "mq.example", cfg.ServerName, "the broker's certificate is checked against the URL's host")
	require.False(t, cfg.InsecureSkipVerify)
	require.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)

	cfg, err = Config{URL: withQuery(mq, "cacertfile", ca.CertFile, "certfile", client.CertFile, "keyfile", client.KeyFile, "server_name_indication", "broker.internal")}.tlsConfig()
	require.NoError(t, err)
	require.NotNil(t, cfg.RootCAs)
	require.Len(t, cfg.Certificates, 1)
	require.Equal(t, "broker.internal", cfg.ServerName)

	own := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS13}
	cfg, err = Config{URL: mq, TLS: own}.tlsConfig()
	require.NoError(t, err)
	require.Equal(t, "mq.example", cfg.ServerName)
	require.Equal(t, uint16(tls.VersionTLS13), cfg.MinVersion)
	require.Empty(t, own.ServerName, "Config.TLS is cloned, never changed")

	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"TLS parameters on amqp://", Config{URL: withQuery("amqp://u:secret@mq/v", "cacertfile", ca.CertFile)}, "use amqps://"},
		{"Config.TLS on amqp://", Config{URL: "amqp://u:secret@mq/v", TLS: own}, "use amqps://"},
		{"both", Config{URL: withQuery(mq, "cacertfile", ca.CertFile), TLS: own}, "not both"},
		{"missing CA file", Config{URL: withQuery(mq, "cacertfile", filepath.Join(dir, "missing.pem"))}, "no such file"},
		{"CA file without a certificate", Config{URL: withQuery(mq, "cacertfile", notPEM)}, "holds no PEM certificate"},
		{"certificate without key", Config{URL: withQuery(mq, "certfile", client.CertFile)}, "give both"},
		{"key that is no key", Config{URL: withQuery(mq, "certfile", client.CertFile, "keyfile", notPEM)}, notPEM},
	} {
		_, err := tc.cfg.tlsConfig()
		require.ErrorContains(t, err, tc.want, tc.name)
		require.NotContains(t, err.Error(), "secret", tc.name)
		require.ErrorContains(t, tc.cfg.WithDefaults().validate(), tc.want, "%s: New reports it before dialling", tc.name)
	}
}
