package sandbox

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// tempDir is a directory the servers' system users can reach, removed when the test ends.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := MkdirTemp("sagacoord-sandbox-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func skipIfMissing(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, ErrMissing) {
		t.Skip(err)
	}
}

// The sandbox PostgreSQL takes verify-full connections with its CA and refuses every other.
func TestPostgresTakesOnlyVerifiedTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := tempDir(t)
	ca, err := NewCA(dir)
	require.NoError(t, err)
	start := time.Now()
	pg, err := StartPostgres(ctx, PostgresConfig{Dir: dir + "/postgres", CA: ca, Password: "pw-sandbox"})
	skipIfMissing(t, err)
	require.NoError(t, err)
	t.Cleanup(pg.Stop)
	t.Logf("PostgreSQL up in %s", time.Since(start).Round(time.Millisecond))

	conn, err := pgx.Connect(ctx, pg.URL("pw-sandbox", "postgres", Pair{}))
	require.NoError(t, err)
	var ssl bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl))
	require.True(t, ssl)
	require.NoError(t, conn.Close(ctx))

	plain := "postgres://postgres:pw-sandbox@127.0.0.1:" + strconv.Itoa(pg.Port) + "/postgres?sslmode=disable"
	_, err = pgx.Connect(ctx, plain)
	require.ErrorContains(t, err, "no encryption", "a connection without TLS is rejected by pg_hba.conf")
	other, err := NewCA(t.TempDir())
	require.NoError(t, err)
	_, err = pgx.Connect(ctx, plain[:len(plain)-len("disable")]+"verify-full&sslrootcert="+other.CertFile)
	require.ErrorContains(t, err, "certificate signed by unknown authority")
}

// The sandbox RabbitMQ has a TLS listener that asks for a client certificate, and no other.
func TestRabbitTakesOnlyTLSWithClientCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a RabbitMQ node")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := tempDir(t)
	ca, err := NewCA(dir)
	require.NoError(t, err)
	start := time.Now()
	r, err := StartRabbit(ctx, RabbitConfig{Dir: dir + "/rabbitmq", CA: ca, ClientCert: true,
		Definitions: Definitions{VHosts: []string{"v"}, Users: []User{{Name: "u", Password: "pw-u"}},
			Permissions: []Permission{{User: "u", VHost: "v", Configure: ".*", Write: ".*", Read: ".*"}}}})
	skipIfMissing(t, err)
	require.NoError(t, err)
	t.Cleanup(r.Stop)
	t.Logf("RabbitMQ up in %s", time.Since(start).Round(time.Millisecond))

	client, err := ca.Client(dir, "u", "u")
	require.NoError(t, err)
	conn, err := amqp.Dial(r.URL("u", "pw-u", "v", client))
	require.NoError(t, err, "the user of the definitions logs in to its vhost")
	require.NoError(t, conn.Close())

	_, err = amqp.Dial(r.URL("u", "pw-u", "v", Pair{}))
	require.Error(t, err, "a client without a certificate is refused")
	_, err = amqp.Dial("amqp://u:pw-u@127.0.0.1:" + strconv.Itoa(r.Port) + "/v")
	require.Error(t, err, "plain AMQP is refused on the TLS port")
	c, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)), &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12})
	require.ErrorContains(t, err, "certificate signed by unknown authority", "the node's certificate is the sandbox CA's")
	if c != nil {
		_ = c.Close()
	}
}
