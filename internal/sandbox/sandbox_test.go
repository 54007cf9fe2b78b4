package sandbox

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
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

// serverTest skips t with -short, since it starts what, and else runs it in parallel; it returns
// a context that ends with t or after limit.
func serverTest(t *testing.T, what string, limit time.Duration) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("starts " + what)
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	return ctx
}

func skipIfMissing(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, ErrMissing) {
		t.Skip(err)
	}
}

// The sandbox PostgreSQL takes verify-full connections with its CA and refuses every other.
func TestPostgresTakesOnlyVerifiedTLS(t *testing.T) {
	ctx := serverTest(t, "a PostgreSQL", 2*time.Minute)
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
	ctx := serverTest(t, "a RabbitMQ node", 2*time.Minute)
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

// Without a CA, the sandbox PostgreSQL takes plain trusted connections, and comes back from a
// crash on its data: what the chaos scenarios' postgres_restart does to it.
func TestPlainPostgresComesBackFromACrash(t *testing.T) {
	ctx := serverTest(t, "a PostgreSQL", 2*time.Minute)
	pg, err := StartPostgres(ctx, PostgresConfig{Dir: tempDir(t) + "/postgres", MaxConnections: 300})
	skipIfMissing(t, err)
	require.NoError(t, err)
	t.Cleanup(pg.Stop)
	url := pg.URL("", "postgres", Pair{})
	require.Equal(t, "postgres://postgres@127.0.0.1:"+strconv.Itoa(pg.Port)+"/postgres?sslmode=disable", url)

	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	var maxConns string
	require.NoError(t, conn.QueryRow(ctx, `SHOW max_connections`).Scan(&maxConns))
	require.Equal(t, "300", maxConns)
	_, err = conn.Exec(ctx, `CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)`)
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, pg.Crash(ctx))
	_, err = pgx.Connect(ctx, url)
	require.Error(t, err, "the server is down after a crash")
	require.NoError(t, pg.Start(ctx))
	conn, err = pgx.Connect(ctx, url)
	require.NoError(t, err)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT n FROM kept`).Scan(&n))
	require.Equal(t, 7, n, "the WAL is replayed")
	require.NoError(t, conn.Close(ctx))
}

// Without a CA, the sandbox RabbitMQ takes plain AMQP as guest, answers its management API, and
// boots again after its VM is killed: what the chaos scenarios' rabbitmq_restart does to it.
func TestPlainRabbitComesBackFromAKill(t *testing.T) {
	ctx := serverTest(t, "a RabbitMQ node", 3*time.Minute)
	r, err := StartRabbit(ctx, RabbitConfig{Dir: tempDir(t) + "/rabbitmq", Node: "sandbox-plain-test@localhost", Management: true})
	skipIfMissing(t, err)
	require.NoError(t, err)
	t.Cleanup(r.Stop)
	require.Equal(t, "amqp://guest:guest@127.0.0.1:"+strconv.Itoa(r.Port)+"/", r.AdminURL())
	require.Equal(t, "http://guest:guest@127.0.0.1:"+strconv.Itoa(r.ManagementPort), r.ManagementURL())

	overview := func() int {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(r.ManagementPort)+"/api/overview", nil)
		require.NoError(t, err)
		req.SetBasicAuth("guest", "guest")
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, overview())

	require.NoError(t, r.Kill())
	_, err = amqp.Dial(r.AdminURL())
	require.Error(t, err, "the node is down after a kill")
	require.NoError(t, r.Start(ctx))
	conn, err := amqp.Dial(r.AdminURL())
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	require.Equal(t, http.StatusOK, overview())
	out, err := r.Ctl(ctx, "status")
	require.NoError(t, err, "rabbitmqctl reaches the node: %s", out)
}
