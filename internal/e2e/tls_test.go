package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/sandbox"
	"github.com/sagacoord/sagacoord/internal/testenv"
)

// The broker users of TestEveryLinkOverTLS, with the permissions of docs/security.md's layout
// (sandbox.CoordinatorPermission and ParticipantPermission, which TestLeastPrivilegeLayout checks
// against the page).
const (
	tlsVHost       = "sagacoord"
	tlsCoordinator = "sagacoord-coordinator"
	tlsSim         = "participant-sim"
)

// tlsLab is a sandbox PostgreSQL and RabbitMQ that take only TLS with a client certificate, and
// the URL files of a coordinator and a participant-sim on them.
type tlsLab struct {
	pg                   *sandbox.Postgres
	mq                   *sandbox.Rabbit
	adminDB              string
	coordDB, coordMQ     string // files
	simDB, simMQ         string // files
	passwords            []string
	coordinatorPassword  string
	participantsPassword string
}

// startTLSLab starts the sandbox for participants, skipping the test where the servers are not
// installed.
func startTLSLab(t *testing.T, participants ...string) *tlsLab {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir, err := sandbox.MkdirTemp("sagacoord-e2etls-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ca, err := sandbox.NewCA(dir)
	require.NoError(t, err)
	lab := &tlsLab{coordinatorPassword: testenv.Name("pw"), participantsPassword: testenv.Name("pw")}
	pgPassword := testenv.Name("pw")
	lab.passwords = []string{pgPassword, lab.coordinatorPassword, lab.participantsPassword}

	lab.pg, err = sandbox.StartPostgres(ctx, sandbox.PostgresConfig{Dir: filepath.Join(dir, "postgres"), CA: ca, Password: pgPassword, ClientCert: true})
	if errors.Is(err, sandbox.ErrMissing) {
		t.Skip(err)
	}
	require.NoError(t, err)
	t.Cleanup(lab.pg.Stop)
	lab.mq, err = sandbox.StartRabbit(ctx, sandbox.RabbitConfig{Dir: filepath.Join(dir, "rabbitmq"), CA: ca, ClientCert: true, Definitions: lab.definitions(participants)})
	if errors.Is(err, sandbox.ErrMissing) {
		t.Skip(err)
	}
	require.NoError(t, err)
	t.Cleanup(lab.mq.Stop)

	pair := func(name, user string) sandbox.Pair {
		p, err := ca.Client(dir, name, user)
		require.NoError(t, err)
		return p
	}
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content+"\n"), 0o600))
		return p
	}
	lab.adminDB = lab.pg.URL(pgPassword, "postgres", pair("test-db", "postgres"))
	lab.coordDB = file("coordinator-database-url", lab.pg.URL(pgPassword, "postgres", pair("coordinator-db", "postgres")))
	lab.simDB = file("sim-database-url", lab.pg.URL(pgPassword, "postgres", pair("sim-db", "postgres")))
	lab.coordMQ = file("coordinator-amqp-url", lab.mq.URL(tlsCoordinator, lab.coordinatorPassword, tlsVHost, pair("coordinator-mq", tlsCoordinator)))
	lab.simMQ = file("sim-amqp-url", lab.mq.URL(tlsSim, lab.participantsPassword, tlsVHost, pair("sim-mq", tlsSim)))
	return lab
}

// definitions are the vhost and the users of the layout of docs/security.md: participant-sim,
// which runs every participant, reads all their queues.
func (lab *tlsLab) definitions(participants []string) sandbox.Definitions {
	return sandbox.Definitions{
		VHosts: []string{tlsVHost},
		Users:  []sandbox.User{{Name: tlsCoordinator, Password: lab.coordinatorPassword}, {Name: tlsSim, Password: lab.participantsPassword}},
		Permissions: []sandbox.Permission{
			sandbox.CoordinatorPermission(tlsCoordinator, tlsVHost),
			sandbox.ParticipantPermission(tlsSim, tlsVHost, participants...),
		},
	}
}

// brokerConnections lists the node's connections: user and whether they are TLS.
func (lab *tlsLab) brokerConnections(t *testing.T) []struct {
	User string `json:"user"`
	SSL  bool   `json:"ssl"`
} {
	t.Helper()
	out, err := lab.mq.Ctl(t.Context(), "list_connections", "user", "ssl", "--formatter", "json", "-q")
	require.NoError(t, err, "%s", out)
	if i := bytes.IndexByte(out, '['); i > 0 {
		out = out[i:]
	}
	var conns []struct {
		User string `json:"user"`
		SSL  bool   `json:"ssl"`
	}
	require.NoError(t, json.Unmarshal(out, &conns), "%s", out)
	return conns
}

// TestEveryLinkOverTLS runs a coordinator and participant-sim as processes on a sandbox
// PostgreSQL and RabbitMQ that take only TLS with client certificates: every URL comes from a
// file and verifies its server (sslmode=verify-full; amqps:// with the CA), the two broker users
// have the least-privilege permissions of docs/security.md, and participant-sim declares nothing
// (--skip-declare). A saga of two steps completes; the database and the broker see only TLS
// connections, the broker's by those two users; no output shows a password.
func TestEveryLinkOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL and a RabbitMQ node")
	}
	t.Parallel()
	began := time.Now()
	lab := startTLSLab(t, "tls-a", "tls-b")
	t.Logf("sandbox PostgreSQL and RabbitMQ up in %s", time.Since(began).Round(time.Millisecond))
	e := newEnvWith(t, envOpts{noCoordinator: true})
	coord := startCoordinatorArgs(t, "--database-url-file", lab.coordDB, "--amqp-url-file", lab.coordMQ)
	e.client = e.dial(coord.addr)
	e.register(chain("tls", step("a", "tls-a"), step("b", "tls-b"))) // declares both queues

	sim := exec.Command(simBinary(t), "--database-url-file", lab.simDB, "--amqp-url-file", lab.simMQ,
		"--participants", "tls-a=noop,tls-b=noop", "--skip-declare", "--db-max-conns", "4")
	simOut := &testenv.Buffer{}
	sim.Stdout = simOut
	simProc := startChild(t, "participant-sim", sim, func(p *childProcess) (bool, string) {
		return strings.Contains(p.stderr.String(), `"msg":"participant-sim ready"`), "participant-sim not ready:\n" + p.stderr.String()
	})

	t.Logf("coordinator and participant-sim ready after %s", time.Since(began).Round(time.Millisecond))
	var ids []string
	for range 3 {
		ids = append(ids, e.start("tls", `{}`))
	}
	for _, id := range ids {
		e.waitStatus(id, 60*time.Second, pb.SagaStatus_SAGA_STATUS_COMPLETED)
	}

	users := map[string]bool{}
	for _, c := range lab.brokerConnections(t) {
		require.True(t, c.SSL, "a broker connection by %s is not TLS", c.User)
		users[c.User] = true
	}
	require.Equal(t, map[string]bool{tlsCoordinator: true, tlsSim: true}, users, "the broker's connections are the coordinator's and participant-sim's")

	conn, err := pgx.Connect(t.Context(), lab.adminDB)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var plain, encrypted int
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE NOT ssl), count(*) FILTER (WHERE ssl)
		FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE backend_type = 'client backend'`).Scan(&plain, &encrypted))
	require.Zero(t, plain, "a database connection is not TLS")
	require.Greater(t, encrypted, 2, "the coordinator's and participant-sim's pools are connected")

	for what, out := range map[string]string{"coordinator": coord.stderr.String(), "participant-sim": simProc.stderr.String() + simOut.String()} {
		for _, pw := range lab.passwords {
			require.NotContains(t, out, pw, "%s printed a password", what)
		}
	}
}
