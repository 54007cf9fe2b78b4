package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrSkipped marks a scenario that cannot run on this machine (a private instance's binaries are
// missing); the report says why and the run does not count as failed.
var ErrSkipped = errors.New("skipped")

// freePort returns a TCP port on 127.0.0.1 that nobody listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// asUser makes cmd run as the named system user when we are root (initdb refuses to run as
// root); it returns the user's uid and gid, or -1 when nothing changes.
func asUser(cmd *exec.Cmd, name string) (int, int) {
	if os.Geteuid() != 0 {
		return -1, -1
	}
	u, err := user.Lookup(name)
	if err != nil {
		return -1, -1
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if cmd != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	return uid, gid
}

func chownTree(dir string, uid, gid int) error {
	if uid < 0 {
		return nil
	}
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// --- private PostgreSQL ---

// DefaultPostgresBin is where the PostgreSQL 15 server binaries are on the team's machines.
const DefaultPostgresBin = "/usr/lib/postgresql/15/bin"

// privatePostgres is a PostgreSQL instance of one scenario, on a temp dir and a free port.
type privatePostgres struct {
	bin, dir string
	port     int
}

func startPrivatePostgres(ctx context.Context, bin, parent string) (*privatePostgres, error) {
	for _, b := range []string{"initdb", "pg_ctl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%w: private PostgreSQL needs %s (not found: %v); install postgresql-15 or pass --postgres-bin", ErrSkipped, filepath.Join(bin, b), err)
		}
	}
	dir := filepath.Join(parent, "postgres")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &privatePostgres{bin: bin, dir: dir, port: port}
	if uid, gid := asUser(nil, "postgres"); uid >= 0 {
		if err := chownTree(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if out, err := p.run(ctx, "initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *privatePostgres) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, name), args...)
	asUser(cmd, "postgres")
	cmd.Dir = p.dir
	return cmd.CombinedOutput()
}

func (p *privatePostgres) start(ctx context.Context) error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off", p.port, p.dir)
	out, err := p.run(ctx, "pg_ctl", "-D", filepath.Join(p.dir, "data"), "-o", opts, "-l", filepath.Join(p.dir, "postgres.log"), "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start: %v: %s", err, out)
	}
	return nil
}

// crash stops the server without a checkpoint, as a crash would (recovery replays the WAL).
func (p *privatePostgres) crash(ctx context.Context) error {
	out, err := p.run(ctx, "pg_ctl", "-D", filepath.Join(p.dir, "data"), "-m", "immediate", "-w", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

func (p *privatePostgres) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = p.run(ctx, "pg_ctl", "-D", filepath.Join(p.dir, "data"), "-m", "fast", "-w", "stop")
}

func (p *privatePostgres) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// --- private RabbitMQ ---

// privateRabbit is a RabbitMQ node of one scenario: its own node name, ports, and mnesia and log
// directories, with no plugins. rabbitmq-server drops to the rabbitmq user when started as
// root, so the directory is handed to that user.
type privateRabbit struct {
	dir, node    string
	port, dist   int
	mgmtPort     int
	mgmt         management
	server, ctl  string
	cmd          *exec.Cmd
	exited       chan struct{}
	startTimeout time.Duration
}

func startPrivateRabbit(ctx context.Context, parent, runID string) (*privateRabbit, error) {
	server, err := exec.LookPath("rabbitmq-server")
	if err != nil {
		return nil, fmt.Errorf("%w: private RabbitMQ needs rabbitmq-server on PATH (%v); apt-get install rabbitmq-server", ErrSkipped, err)
	}
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		return nil, fmt.Errorf("%w: private RabbitMQ needs rabbitmqctl on PATH (%v)", ErrSkipped, err)
	}
	dir := filepath.Join(parent, "rabbitmq")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &privateRabbit{dir: dir, node: "chaos-" + runID + "@localhost", server: server, ctl: ctl, startTimeout: 90 * time.Second}
	for {
		if r.port, err = freePort(); err != nil {
			return nil, err
		}
		if r.dist, err = freePort(); err != nil {
			return nil, err
		}
		if r.mgmtPort, err = freePort(); err != nil {
			return nil, err
		}
		// RabbitMQ's CLI tools find a node's distribution port on its own, but AMQP port +
		// 20000 is the default distribution port of any other node: keep clear of it.
		if r.port+20000 != r.dist && r.port < 45000 && r.mgmtPort != r.dist && r.mgmtPort != r.port {
			break
		}
	}
	// The management plugin on a port of its own: its API reads queue depths in milliseconds,
	// where rabbitmqctl takes seconds.
	conf := fmt.Sprintf("listeners.tcp.local = 127.0.0.1:%d\nloopback_users = none\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %d\n", r.port, r.mgmtPort)
	for name, content := range map[string]string{"rabbitmq.conf": conf, "enabled_plugins": "[rabbitmq_management].\n", "rabbitmq-env.conf": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	if uid, gid := asUser(nil, "rabbitmq"); uid >= 0 {
		if err := chownTree(dir, uid, gid); err != nil {
			return nil, err
		}
		_ = os.Chmod(parent, 0o755)
	}
	if err := r.start(ctx); err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

func (r *privateRabbit) env() []string {
	return append(os.Environ(),
		"RABBITMQ_NODENAME="+r.node,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(r.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(r.dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(r.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(r.dir, "log"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(r.dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(r.dir, "enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(r.dir, "rabbitmq-env.conf"),
		"RABBITMQ_PID_FILE="+filepath.Join(r.dir, "beam.pid"),
		"ERL_EPMD_ADDRESS=127.0.0.1",
	)
}

func (r *privateRabbit) start(ctx context.Context) error {
	out, err := os.OpenFile(filepath.Join(r.dir, "server.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.server)
	cmd.Env = r.env()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start rabbitmq-server: %w", err)
	}
	r.cmd = cmd
	r.exited = make(chan struct{})
	go func(ch chan struct{}) { _ = cmd.Wait(); out.Close(); close(ch) }(r.exited)
	deadline := time.Now().Add(r.startTimeout)
	for {
		conn, err := amqp.Dial(r.url("/"))
		if err == nil {
			_ = conn.Close()
			var overview map[string]any
			if err = r.api().do(ctx, http.MethodGet, "/api/overview", "", &overview); err == nil {
				return nil
			}
		}
		select {
		case <-r.exited:
			return fmt.Errorf("rabbitmq-server exited during start; see %s", filepath.Join(r.dir, "server.out"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("private RabbitMQ node %s did not accept AMQP connections within %s; see %s", r.node, r.startTimeout, r.dir)
		}
	}
}

func (r *privateRabbit) beamPID() int {
	b, err := os.ReadFile(filepath.Join(r.dir, "beam.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// crash SIGKILLs the broker's Erlang VM: no clean shutdown, as a crash.
func (r *privateRabbit) crash() error {
	pid := r.beamPID()
	if pid <= 0 {
		return errors.New("private RabbitMQ: no beam pid file")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill beam %d: %w", pid, err)
	}
	if r.cmd != nil && r.cmd.Process != nil {
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func (r *privateRabbit) ctlRun(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.ctl, append([]string{"-n", r.node}, args...)...)
	cmd.Env = r.env()
	return cmd.CombinedOutput()
}

func (r *privateRabbit) memoryAlarm(ctx context.Context, on bool) error {
	v := "0.4"
	if on {
		v = "0.0000001"
	}
	out, err := r.ctlRun(ctx, "set_vm_memory_high_watermark", v)
	if err != nil {
		return fmt.Errorf("rabbitmqctl set_vm_memory_high_watermark %s: %v: %s", v, err, out)
	}
	return nil
}

func (r *privateRabbit) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r.cmd == nil {
		return
	}
	select {
	case <-r.exited:
	default:
		_, _ = r.ctlRun(ctx, "stop")
		select {
		case <-r.exited:
		case <-time.After(15 * time.Second):
		}
	}
	if pid := r.beamPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	r.mgmt.close()
	if r.cmd.Process != nil {
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (r *privateRabbit) url(vhost string) string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/%s", r.port, url.PathEscape(vhost))
}

// api is the node's management API.
func (r *privateRabbit) api() management {
	if r.mgmt.client == nil {
		r.mgmt = newManagement(fmt.Sprintf("http://guest:guest@127.0.0.1:%d", r.mgmtPort))
	}
	return r.mgmt
}

// queueStats lists the queues of vhost with their ready and unacknowledged messages, from the
// management API or, if it does not answer, rabbitmqctl.
func (r *privateRabbit) queueStats(ctx context.Context, vhost string) ([]QueueStat, error) {
	if qs, err := r.api().queueStats(ctx, vhost); err == nil {
		return qs, nil
	}
	out, err := r.ctlRun(ctx, "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged", "--formatter", "json", "-q")
	if err != nil {
		return nil, fmt.Errorf("rabbitmqctl list_queues: %v: %s", err, out)
	}
	// The CLI may print notices before the JSON.
	if i := bytes.IndexByte(out, '['); i > 0 {
		out = out[i:]
	}
	var qs []QueueStat
	if err := json.Unmarshal(out, &qs); err != nil {
		return nil, fmt.Errorf("rabbitmqctl list_queues: %v: %s", err, out)
	}
	return qs, nil
}

// QueueStat is one queue's depth.
type QueueStat struct {
	Name    string `json:"name"`
	Ready   int    `json:"messages_ready"`
	Unacked int    `json:"messages_unacknowledged"`
}

// --- shared services ---

// management is a RabbitMQ management API. Its client is the run's own, so the run can close
// its idle connections when it ends.
type management struct {
	base   string
	client *http.Client
}

func newManagement(base string) management {
	return management{base: base, client: &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}}
}

// close drops the client's idle connections.
func (m management) close() {
	if m.client != nil {
		m.client.CloseIdleConnections()
	}
}

func (m management) do(ctx context.Context, method, path, body string, out any) error {
	u, err := url.Parse(m.base)
	if err != nil {
		return err
	}
	userinfo := u.User
	u.User = nil
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(u.String(), "/")+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	if userinfo != nil {
		pw, _ := userinfo.Password()
		req.SetBasicAuth(userinfo.Username(), pw)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (m management) createVHost(ctx context.Context, vhost string) error {
	if err := m.do(ctx, http.MethodPut, "/api/vhosts/"+url.PathEscape(vhost), "", nil); err != nil {
		return fmt.Errorf("create vhost %s with the management API %s (is the rabbitmq_management plugin on? `make services` enables it): %w", vhost, redactURL(m.base), err)
	}
	return m.do(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/guest", `{"configure":".*","write":".*","read":".*"}`, nil)
}

func (m management) deleteVHost(ctx context.Context, vhost string) error {
	return m.do(ctx, http.MethodDelete, "/api/vhosts/"+url.PathEscape(vhost), "", nil)
}

func (m management) queueStats(ctx context.Context, vhost string) ([]QueueStat, error) {
	var qs []QueueStat
	err := m.do(ctx, http.MethodGet, "/api/queues/"+url.PathEscape(vhost)+"?columns=name,messages_ready,messages_unacknowledged", "", &qs)
	return qs, err
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// withParams returns a database URL with query parameters set (search_path, application_name).
func withParams(raw string, kv ...string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// withHost returns a URL with its host:port replaced (to route it through a proxy).
func withHost(raw, hostport string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.Host = hostport
	return u.String()
}

// hostPort returns a URL's host:port, with the scheme's default port when it has none.
func hostPort(raw string, defPort string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), defPort), nil
	}
	return u.Host, nil
}

func createSchema(ctx context.Context, dbURL, schema string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL %s: %w (is it running? `make services`)", redactURL(dbURL), err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize())
	return err
}

// dropSchemas drops the scenario's schemas: the coordinator's and every participant's (which
// share its name as a prefix).
func dropSchemas(ctx context.Context, dbURL, prefix string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT nspname FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname, $1 || '_')`, prefix)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{n}.Sanitize()+" CASCADE"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// --- binaries ---

// testHooksDir is where, under the binaries' directory, the coordinator built with -tags
// testhooks is (make build-testhooks). Coordinators whose flags name a test hook (--test-*) run it;
// the others run the coordinator that ships, which has no such flags.
const testHooksDir = "testhooks"

// locateBinaries returns the directory holding coordinator and participant-sim, and with hooks
// testhooks/coordinator: binDir when given, else a fresh `go build` of the module this runs in
// (into a temp dir under work), else ./bin.
func locateBinaries(ctx context.Context, binDir, work string, hooks bool) (string, error) {
	need := []string{"coordinator", "participant-sim"}
	if hooks {
		need = append(need, filepath.Join(testHooksDir, "coordinator"))
	}
	check := func(dir string) error {
		for _, b := range need {
			if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() {
				return fmt.Errorf("%s not found in %s (run `make build build-testhooks`, or pass --bin)", b, dir)
			}
		}
		return nil
	}
	if binDir != "" {
		return binDir, check(binDir)
	}
	root, err := moduleRoot()
	if err == nil {
		if gobin, err := exec.LookPath("go"); err == nil {
			out := filepath.Join(work, "bin")
			if err := goBuild(ctx, gobin, root, out, hooks); err != nil {
				return "", err
			}
			return out, check(out)
		}
		if check(filepath.Join(root, "bin")) == nil {
			return filepath.Join(root, "bin"), nil
		}
	}
	return "bin", check("bin")
}

// goBuild builds the coordinator and participant-sim of the module at root into out, and with
// hooks the test build of the coordinator into out/testhooks.
func goBuild(ctx context.Context, gobin, root, out string, hooks bool) error {
	builds := [][]string{{"build", "-o", out + "/", "./cmd/coordinator", "./cmd/participant-sim"}}
	if hooks {
		builds = append(builds, []string{"build", "-tags", "testhooks", "-o", filepath.Join(out, testHooksDir) + "/", "./cmd/coordinator"})
	}
	for _, args := range builds {
		cmd := exec.CommandContext(ctx, gobin, args...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), err, b)
		}
	}
	return nil
}

// moduleRoot finds the sagacoord module's root above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/sagacoord/sagacoord\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the sagacoord module")
		}
		dir = parent
	}
}
