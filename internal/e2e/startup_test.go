package e2e_test

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/testenv"
)

// TestCoordinatorStartedBeforeItsDatabaseAndBrokerServesOnceTheyAnswer: a coordinator process
// started while nothing answers at its database's and broker's addresses listens at once, reports
// NOT_SERVING, refuses API calls with Unavailable, retries, and serves once both answer; a saga
// then completes. The addresses are ports of the test where a forwarder to the real services
// opens later: first the database's, then the broker's.
func TestCoordinatorStartedBeforeItsDatabaseAndBrokerServesOnceTheyAnswer(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	e.startParticipant(participantOpts{name: "orders"})
	db, broker := testenv.ServiceLater(t, e.dbURL), testenv.ServiceLater(t, e.amqpURL)
	addr := testenv.FreeAddr(t)

	cmd := exec.Command(coordinatorBinary(t), "serve", "--listen", addr, "--migrate", "--log-level", "info",
		"--db-max-conns", strconv.Itoa(coordinatorConns), "--database-url", db.URL, "--amqp-url", broker.URL)
	stdout := &testenv.Buffer{}
	cmd.Stdout = stdout
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	health := healthpb.NewHealthClient(conn)
	p := startChild(t, "coordinator", cmd, func(p *childProcess) (bool, string) {
		resp, err := health.Check(e.ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return false, "health does not answer yet: " + err.Error()
		}
		require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus(), "nothing answers at the database's address")
		return true, ""
	})
	e.client = pb.NewSagaServiceClient(conn)
	_, err = e.client.ListSagas(e.ctx, &pb.ListSagasRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "a call before the coordinator reached its database: %v", err)
	require.Contains(t, status.Convert(err).Message(), "starting")
	require.NotContains(t, stdout.String(), "listening on", "the line scripts wait for comes once the API serves")

	db.Up(t)
	eventually(t, 30*time.Second, func() (bool, string) {
		log := p.stderr.String()
		return strings.Contains(log, "RabbitMQ"), "no retry for the broker in the log yet:\n" + tail(log, 5)
	})
	broker.Up(t)

	watch, err := health.Watch(e.ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	for {
		resp, err := watch.Recv()
		require.NoError(t, err, "health watch")
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		return strings.Contains(stdout.String(), "coordinator listening on "+addr), "stdout: " + stdout.String()
	})
	e.register(chain("order", step("create", "orders")))
	e.waitStatus(e.start("order", `{}`), 30*time.Second, pb.SagaStatus_SAGA_STATUS_COMPLETED)
}
