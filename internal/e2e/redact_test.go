package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/testenv"
)

// rabbitAPIDo calls the RabbitMQ management API as the test's admin user.
func rabbitAPIDo(t *testing.T, method, path, body string) {
	t.Helper()
	api, err := url.Parse(rabbitAPI())
	require.NoError(t, err)
	user := api.User
	api.User = nil
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, api.String()+path, strings.NewReader(body))
	require.NoError(t, err)
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Less(t, resp.StatusCode, 300, "%s %s: %s %s", method, path, resp.Status, b)
}

// withPassword returns raw with user and password set.
func withPassword(t *testing.T, raw, user, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.User = url.UserPassword(user, password)
	return u.String()
}

// runCaptured runs a binary to its end (at most timeout) and returns what it printed.
func runCaptured(t *testing.T, timeout time.Duration, env []string, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, _ := cmd.CombinedOutput() // a non-zero exit is expected for the bad credentials
	return string(out)
}

// TestPasswordsNeverLogged runs the coordinator and participant-sim as processes with a password
// in both the database and the broker URL (PostgreSQL's trust authentication ignores it; the
// broker user is made for the test), at debug level with metrics and an unreachable trace
// collector, runs sagas, and also makes both fail on a wrong broker password and print --help
// with the URLs in the environment. participant-sim reads its URLs from files
// (--database-url-file, --amqp-url-file), the database's with the password as a query parameter
// too; the coordinator reads files that are wrong, or given with the flag they replace. No output
// may contain a password.
func TestPasswordsNeverLogged(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	password := "pw" + strings.TrimPrefix(testenv.Name("x"), "x") + "Secret"
	wrong := "pw" + strings.TrimPrefix(testenv.Name("x"), "x") + "Wrong"
	user := testenv.Name("u_")
	vhost := strings.TrimPrefix(mustParse(t, e.amqpURL).Path, "/")
	rabbitAPIDo(t, http.MethodPut, "/api/users/"+user, fmt.Sprintf(`{"password":%q,"tags":""}`, password))
	t.Cleanup(func() { rabbitAPIDo(t, http.MethodDelete, "/api/users/"+user, "") })
	rabbitAPIDo(t, http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/"+user, `{"configure":".*","write":".*","read":".*"}`)

	dbURL := withPassword(t, e.dbURL, "postgres", password)
	amqpURL := withPassword(t, e.amqpURL, user, password)
	e.dbURL, e.amqpURL = dbURL, amqpURL // the coordinator process takes them from e
	coord := e.startCoordinatorProcess("--log-level", "debug", "--metrics-listen", "127.0.0.1:0", "--otlp-endpoint", "127.0.0.1:1")
	e.client = e.dial(coord.addr)

	files := t.TempDir()
	writeFile := func(name, content string) string {
		p := filepath.Join(files, name)
		require.NoError(t, os.WriteFile(p, []byte(content+"\n"), 0o600))
		return p
	}
	simDBFile := writeFile("sim-database-url", withQueryPassword(t, dbURL, password))
	amqpFile := writeFile("amqp-url", amqpURL)
	sim := e.newSim("obs-a=noop,obs-b=noop")
	simCmd := exec.Command(simBinary(t), "--database-url-file", simDBFile, "--amqp-url-file", amqpFile, "--participants", sim.spec,
		"--schema-prefix", sim.prefix, "--db-max-conns", "4", "--log-level", "debug", "--metrics-listen", "127.0.0.1:0", "--otlp-endpoint", "127.0.0.1:1")
	simOut := &testenv.Buffer{}
	simCmd.Stdout, simCmd.Stderr = simOut, simOut
	require.NoError(t, simCmd.Start())
	simDone := make(chan struct{})
	go func() { _ = simCmd.Wait(); close(simDone) }()
	t.Cleanup(func() { _ = simCmd.Process.Kill(); <-simDone })
	eventually(t, 30*time.Second, func() (bool, string) {
		return strings.Contains(simOut.String(), `"msg":"participant-sim ready"`), "participant-sim not ready:\n" + simOut.String()
	})

	e.register(chain("obs", step("a", "obs-a"), step("b", "obs-b")))
	var ids []string
	for range 3 {
		ids = append(ids, e.start("obs", `{}`))
	}
	for _, id := range ids {
		e.waitStatus(id, 30*time.Second, pb.SagaStatus_SAGA_STATUS_COMPLETED)
	}

	badAMQP := withPassword(t, e.amqpURL, user, wrong)
	badAMQPFile := writeFile("bad-amqp-url", badAMQP)
	dbFile := writeFile("database-url", withQueryPassword(t, dbURL, password))
	outputs := map[string]string{
		"coordinator with URL files and a wrong broker password": runCaptured(t, 60*time.Second, nil, coordinatorBinary(t), "serve",
			"--database-url-file", dbFile, "--amqp-url-file", badAMQPFile, "--listen", "127.0.0.1:0", "--log-level", "debug"),
		"coordinator with --amqp-url and --amqp-url-file": runCaptured(t, 30*time.Second, nil, coordinatorBinary(t), "serve",
			"--database-url-file", dbFile, "--amqp-url", badAMQP, "--amqp-url-file", amqpFile),
		"coordinator migrate status with $SAGACOORD_DATABASE_URL_FILE": runCaptured(t, 30*time.Second, []string{"SAGACOORD_DATABASE_URL_FILE=" + dbFile}, coordinatorBinary(t), "migrate", "status"),
		"coordinator serve":                        coord.stderr.String(),
		"participant-sim":                          simOut.String(),
		"coordinator with a wrong broker password": runCaptured(t, 60*time.Second, nil, coordinatorBinary(t), "serve", "--database-url", dbURL, "--amqp-url", badAMQP, "--listen", "127.0.0.1:0", "--log-level", "debug"),
		"participant-sim with a wrong broker password": runCaptured(t, 60*time.Second, nil, simBinary(t), "--database-url", dbURL, "--amqp-url", badAMQP,
			"--participants", "obs-c=noop", "--schema-prefix", sim.prefix, "--log-level", "debug"),
		"coordinator with a malformed database URL": runCaptured(t, 60*time.Second, nil, coordinatorBinary(t), "serve", "--database-url", "postgres://postgres:"+wrong+"@127.0.0.1:notaport/test", "--amqp-url", amqpURL, "--log-level", "debug"),
		"coordinator serve --help":                  runCaptured(t, 30*time.Second, []string{"SAGACOORD_DATABASE_URL=" + dbURL, "SAGACOORD_AMQP_URL=" + amqpURL}, coordinatorBinary(t), "serve", "--help"),
		"coordinator migrate status":                runCaptured(t, 30*time.Second, []string{"SAGACOORD_DATABASE_URL=" + dbURL}, coordinatorBinary(t), "migrate", "status"),
		"participant-sim --help":                    runCaptured(t, 30*time.Second, []string{"SAGACOORD_DATABASE_URL=" + dbURL, "SAGACOORD_AMQP_URL=" + amqpURL}, simBinary(t), "--help"),
	}
	for what, out := range outputs {
		require.NotEmpty(t, out, what)
		require.NotContains(t, out, password, "%s printed the password:\n%s", what, out)
		require.NotContains(t, out, wrong, "%s printed the (wrong) password:\n%s", what, out)
		require.NotContains(t, out, url.QueryEscape(password), what)
	}
	// The URLs were logged, redacted: the check above looked where they are.
	require.Contains(t, outputs["coordinator serve"], "xxxxx@", "the coordinator logs its URLs, redacted")
	require.Contains(t, outputs["participant-sim"], "xxxxx@", "participant-sim logs its URLs, redacted")
	require.Contains(t, outputs["coordinator with a wrong broker password"], "coordinator:", "the coordinator failed and said why")
	require.Contains(t, outputs["coordinator with URL files and a wrong broker password"], "username or password not allowed", "the URL came from the file")
	require.Contains(t, outputs["coordinator with --amqp-url and --amqp-url-file"], "give one")
	require.Contains(t, outputs["coordinator migrate status with $SAGACOORD_DATABASE_URL_FILE"], "schema version", "the URL came from the file")
	t.Logf("wrong broker password, coordinator said: %s", tail(outputs["coordinator with a wrong broker password"], 2))
}

// withQueryPassword returns raw with a password query parameter too, the form pgx also reads.
func withQueryPassword(t *testing.T, raw, password string) string {
	t.Helper()
	u := mustParse(t, raw)
	q := u.Query()
	q.Set("password", password)
	u.RawQuery = q.Encode()
	return u.String()
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u
}
