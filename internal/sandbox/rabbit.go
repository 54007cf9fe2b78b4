package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitConfig configures a sandbox RabbitMQ node.
type RabbitConfig struct {
	// Dir is created and holds the node's configuration, certificates, data and logs. Required.
	Dir string
	// Node is the node's name. Default sandbox-<random hex>@localhost.
	Node string
	// CA signs the node's certificate and, with ClientCert, the clients'. Nil makes a plain AMQP
	// listener instead of the TLS one, and the administrator RabbitMQ's usual guest/guest.
	CA *CA
	// ClientCert makes the node refuse a client without a certificate signed by CA
	// (fail_if_no_peer_cert).
	ClientCert bool
	// Management enables the management plugin, plain HTTP on 127.0.0.1 and a port of its own
	// (Rabbit.ManagementURL); a start then also waits until its API answers.
	Management bool
	// Definitions are the vhosts, users and permissions the node boots with, besides its
	// administrator (Rabbit.AdminURL).
	Definitions Definitions
	// StartTimeout bounds the boot. Default 90s.
	StartTimeout time.Duration
}

// Rabbit is a running sandbox RabbitMQ node on 127.0.0.1: with a CA, a TLS listener and no plain
// one; without, a plain listener alone.
type Rabbit struct {
	cfg  RabbitConfig
	Node string
	Port int
	// ManagementPort is the port of the management API, 0 without RabbitConfig.Management.
	ManagementPort       int
	dist                 int
	server, ctl          string
	admin                Pair
	adminUser, adminPass string
	cmd                  *exec.Cmd
	exited               chan struct{}
}

// StartRabbit boots a node in cfg.Dir on free ports and waits until its administrator can log
// in (and, with Management, its API answers).
func StartRabbit(ctx context.Context, cfg RabbitConfig) (*Rabbit, error) {
	server, err := exec.LookPath("rabbitmq-server")
	if err != nil {
		return nil, fmt.Errorf("%w: a sandbox RabbitMQ needs rabbitmq-server on PATH (%v); apt-get install rabbitmq-server", ErrMissing, err)
	}
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		return nil, fmt.Errorf("%w: a sandbox RabbitMQ needs rabbitmqctl on PATH (%v)", ErrMissing, err)
	}
	if cfg.Dir == "" {
		return nil, fmt.Errorf("sandbox RabbitMQ: Dir is required")
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 90 * time.Second
	}
	if cfg.Node == "" {
		cfg.Node = "sandbox-" + randomHex(6) + "@localhost"
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	r := &Rabbit{cfg: cfg, Node: cfg.Node, server: server, ctl: ctl, adminUser: "admin", adminPass: randomHex(16)}
	if cfg.CA == nil {
		r.adminUser, r.adminPass = "guest", "guest"
	}
	if err := r.pickPorts(); err != nil {
		return nil, err
	}
	if err := r.writeConfig(); err != nil {
		return nil, err
	}
	if err := r.Start(ctx); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// pickPorts picks the AMQP port, the Erlang distribution port and, with Management, the API's.
// AMQP port + 20000 is the default distribution port of any other node: keep clear of it.
func (r *Rabbit) pickPorts() error {
	for {
		var err error
		if r.Port, err = FreePort(); err != nil {
			return err
		}
		if r.dist, err = FreePort(); err != nil {
			return err
		}
		if r.cfg.Management {
			if r.ManagementPort, err = FreePort(); err != nil {
				return err
			}
		}
		apart := r.ManagementPort != r.dist && r.ManagementPort != r.Port
		if r.Port+20000 != r.dist && r.Port < 45000 && r.Port != r.dist && apart {
			return nil
		}
	}
}

// writeConfig writes the certificates, rabbitmq.conf, the plugins and the definitions of the node.
func (r *Rabbit) writeConfig() error {
	dir := r.cfg.Dir
	conf, err := r.listener()
	if err != nil {
		return err
	}
	defs := r.cfg.Definitions.withAdmin(r.adminUser, r.adminPass)
	if err := defs.write(filepath.Join(dir, "definitions.json")); err != nil {
		return err
	}
	conf += "loopback_users = none\nload_definitions = " + filepath.Join(dir, "definitions.json") + "\n"
	plugins := "[].\n"
	if r.cfg.Management {
		conf += fmt.Sprintf("management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %d\n", r.ManagementPort)
		plugins = "[rabbitmq_management].\n"
	}
	for name, content := range map[string]string{"rabbitmq.conf": conf, "enabled_plugins": plugins, "rabbitmq-env.conf": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	// rabbitmq-server drops to the rabbitmq user when started as root.
	return handOver(dir, "rabbitmq")
}

// listener returns the lines of rabbitmq.conf for the node's listener: plain without a CA; else
// TLS alone, with the certificates it writes.
func (r *Rabbit) listener() (string, error) {
	if r.cfg.CA == nil {
		return fmt.Sprintf("listeners.tcp.local = 127.0.0.1:%d\n", r.Port), nil
	}
	dir := r.cfg.Dir
	server, err := r.cfg.CA.Server(dir, "server")
	if err != nil {
		return "", err
	}
	if r.admin, err = r.cfg.CA.Client(dir, "admin", "admin"); err != nil {
		return "", err
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := copyFile(r.cfg.CA.CertFile, ca); err != nil {
		return "", err
	}
	return fmt.Sprintf(`listeners.tcp = none
listeners.ssl.default = 127.0.0.1:%d
ssl_options.cacertfile = %s
ssl_options.certfile = %s
ssl_options.keyfile = %s
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = %t
`, r.Port, ca, server.CertFile, server.KeyFile, r.cfg.ClientCert), nil
}

func (r *Rabbit) env() []string {
	return append(os.Environ(),
		"RABBITMQ_NODENAME="+r.Node,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(r.Port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(r.dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(r.cfg.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(r.cfg.Dir, "log"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(r.cfg.Dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(r.cfg.Dir, "enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(r.cfg.Dir, "rabbitmq-env.conf"),
		"RABBITMQ_PID_FILE="+filepath.Join(r.cfg.Dir, "beam.pid"),
		"ERL_EPMD_ADDRESS=127.0.0.1",
	)
}

// Start boots the node, made by StartRabbit, again after Kill, and waits as StartRabbit does.
func (r *Rabbit) Start(ctx context.Context) error {
	logPath := filepath.Join(r.cfg.Dir, "server.out")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.server)
	cmd.Env = r.env()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("sandbox RabbitMQ: start rabbitmq-server: %w", err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func(ch chan struct{}) { _ = cmd.Wait(); out.Close(); close(ch) }(r.exited)
	deadline := time.Now().Add(r.cfg.StartTimeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := r.ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("sandbox RabbitMQ: rabbitmq-server exited during boot; see %s and %s", logPath, filepath.Join(r.cfg.Dir, "log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sandbox RabbitMQ: node %s was not ready within %s (last: %v); see %s", r.Node, r.cfg.StartTimeout, err, logPath)
		}
	}
}

// ready reports whether the administrator logs in over AMQP and, with Management, reads the API's
// overview.
func (r *Rabbit) ready(ctx context.Context) error {
	conn, err := amqp.Dial(r.AdminURL())
	if err != nil {
		return err
	}
	_ = conn.Close()
	if !r.cfg.Management {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(r.ManagementPort)+"/api/overview", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(r.adminUser, r.adminPass)
	// A client of its own that keeps no connection: nothing outlives the start.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("management API: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("management API: GET /api/overview: %s", resp.Status)
	}
	return nil
}

// Ctl runs rabbitmqctl against the node.
func (r *Rabbit) Ctl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.ctl, append([]string{"-n", r.Node}, args...)...)
	cmd.Env = r.env()
	return cmd.CombinedOutput()
}

// Stop stops the node and waits for it; after a timeout it kills it.
func (r *Rabbit) Stop() {
	if r.cmd == nil {
		return
	}
	select {
	case <-r.exited:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = r.Ctl(ctx, "stop")
		cancel()
		select {
		case <-r.exited:
		case <-time.After(15 * time.Second):
		}
	}
	if pid := r.beamPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if r.cmd.Process != nil {
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Kill SIGKILLs the node's Erlang VM, with no clean shutdown, as a crash, and waits until it is
// gone; Start boots the node again on its data.
func (r *Rabbit) Kill() error {
	pid := r.beamPID()
	if pid <= 0 {
		return errors.New("sandbox RabbitMQ: no beam pid file")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("sandbox RabbitMQ: kill beam %d: %w", pid, err)
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

// beamPID is the pid of the node's Erlang VM, from its pid file; 0 if there is none.
func (r *Rabbit) beamPID() int {
	b, err := os.ReadFile(filepath.Join(r.cfg.Dir, "beam.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(string(bytes.TrimSpace(b)))
	return pid
}

// URL returns the URL of vhost for user with password: with a CA, amqps:// trusting it and, when
// client is not zero, presenting that certificate; without one, amqp://.
func (r *Rabbit) URL(user, password, vhost string, client Pair) string {
	scheme, q := "amqp", url.Values{}
	if r.cfg.CA != nil {
		scheme, q = "amqps", url.Values{"cacertfile": {r.cfg.CA.CertFile}}
	}
	if client.CertFile != "" {
		q.Set("certfile", client.CertFile)
		q.Set("keyfile", client.KeyFile)
	}
	u := url.URL{Scheme: scheme, User: url.UserPassword(user, password), Host: "127.0.0.1:" + strconv.Itoa(r.Port),
		Path: "/" + vhost, RawPath: "/" + url.PathEscape(vhost), RawQuery: q.Encode()}
	return u.String()
}

// AdminURL returns the URL of the default vhost for the node's administrator, who may do
// anything on every vhost.
func (r *Rabbit) AdminURL() string { return r.URL(r.adminUser, r.adminPass, "", r.admin) }

// ManagementURL returns the base URL of the management API with the administrator's credentials,
// or "" without RabbitConfig.Management.
func (r *Rabbit) ManagementURL() string {
	if r.ManagementPort == 0 {
		return ""
	}
	u := url.URL{Scheme: "http", User: url.UserPassword(r.adminUser, r.adminPass), Host: "127.0.0.1:" + strconv.Itoa(r.ManagementPort)}
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
