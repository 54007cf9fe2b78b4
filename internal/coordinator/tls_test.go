package coordinator

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/sandbox"
	"github.com/sagacoord/sagacoord/internal/testenv"
)

// TestOpenPoolOverVerifiedTLS opens the coordinator's pool on a sandbox PostgreSQL that takes
// only TLS with a client certificate: with sslmode=verify-full, the CA and the certificate in
// the URL every connection is encrypted, the notification listener's too; a wrong CA, a missing
// client certificate or sslmode=disable are refused with an error that names the database
// without its password.
func TestOpenPoolOverVerifiedTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := sandbox.MkdirTemp("sagacoord-pgtls-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ca, err := sandbox.NewCA(dir)
	require.NoError(t, err)
	client, err := ca.Client(dir, "client", "postgres")
	require.NoError(t, err)
	password := testenv.Name("pw")
	pg, err := sandbox.StartPostgres(ctx, sandbox.PostgresConfig{Dir: dir + "/postgres", CA: ca, Password: password, ClientCert: true})
	if errors.Is(err, sandbox.ErrMissing) {
		t.Skip(err)
	}
	require.NoError(t, err)
	t.Cleanup(pg.Stop)

	good := pg.URL(password, "postgres", client)
	pool, err := OpenPool(ctx, good, 4)
	require.NoError(t, err)
	defer pool.Close()
	var plain int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
		WHERE backend_type = 'client backend' AND NOT ssl`).Scan(&plain))
	require.Zero(t, plain, "every client connection is encrypted")
	var version string
	require.NoError(t, pool.QueryRow(ctx, `SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&version))
	require.Contains(t, version, "TLS")

	other, err := sandbox.NewCA(t.TempDir())
	require.NoError(t, err)
	for _, tc := range []struct{ name, url, want string }{
		{"a CA that did not sign the server's certificate", strings.Replace(good, "sslrootcert="+url.QueryEscape(ca.CertFile), "sslrootcert="+url.QueryEscape(other.CertFile), 1), "certificate signed by unknown authority"},
		{"no client certificate", pg.URL(password, "postgres", sandbox.Pair{}), "certificate"},
		{"no TLS", strings.Replace(good, "sslmode=verify-full", "sslmode=disable", 1), "no encryption"},
	} {
		require.NotEqual(t, good, tc.url, tc.name)
		_, err := OpenPool(ctx, tc.url, 1)
		require.Error(t, err, tc.name)
		require.Contains(t, err.Error(), tc.want, tc.name)
		require.Contains(t, err.Error(), "postgres://postgres:xxxxx@127.0.0.1", "%s: the error names the database", tc.name)
		require.NotContains(t, err.Error(), password, tc.name)
		t.Logf("%s: %v", tc.name, err)
	}
}
