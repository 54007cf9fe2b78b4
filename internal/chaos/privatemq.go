package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

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
