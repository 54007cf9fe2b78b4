package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	// CA signs the node's certificate and, with ClientCert, the clients'. Required.
	CA *CA
	// ClientCert makes the node refuse a client without a certificate signed by CA
	// (fail_if_no_peer_cert).
	ClientCert bool
	// Definitions are the vhosts, users and permissions the node boots with, besides its
	// administrator (Rabbit.AdminURL).
	Definitions Definitions
	// StartTimeout bounds the boot. Default 90s.
	StartTimeout time.Duration
}

// Rabbit is a running sandbox RabbitMQ node: a TLS listener on 127.0.0.1 and no plain one.
type Rabbit struct {
	cfg         RabbitConfig
	Node        string
	Port        int
	dist        int
	server, ctl string
	admin       Pair
	adminPass   string
	cmd         *exec.Cmd
	exited      chan struct{}
}

// StartRabbit boots a node in cfg.Dir on free ports and waits until its administrator can log
// in over TLS.
func StartRabbit(ctx context.Context, cfg RabbitConfig) (*Rabbit, error) {
	server, err := exec.LookPath("rabbitmq-server")
	if err != nil {
		return nil, fmt.Errorf("%w: a sandbox RabbitMQ needs rabbitmq-server on PATH (%v); apt-get install rabbitmq-server", ErrMissing, err)
	}
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		return nil, fmt.Errorf("%w: a sandbox RabbitMQ needs rabbitmqctl on PATH (%v)", ErrMissing, err)
	}
	if cfg.Dir == "" || cfg.CA == nil {
		return nil, fmt.Errorf("sandbox RabbitMQ: Dir and CA are required")
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 90 * time.Second
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	r := &Rabbit{cfg: cfg, Node: "sandbox-" + randomHex(6) + "@localhost", server: server, ctl: ctl, adminPass: randomHex(16)}
	if err := r.pickPorts(); err != nil {
		return nil, err
	}
	if err := r.writeConfig(); err != nil {
		return nil, err
	}
	if err := r.start(ctx); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// pickPorts picks the TLS port and the Erlang distribution port. AMQP port + 20000 is the default
// distribution port of any other node: keep clear of it.
func (r *Rabbit) pickPorts() error {
	for {
		var err error
		if r.Port, err = freePort(); err != nil {
			return err
		}
		if r.dist, err = freePort(); err != nil {
			return err
		}
		if r.Port+20000 != r.dist && r.Port < 45000 && r.Port != r.dist {
			return nil
		}
	}
}

// writeConfig writes the certificates, rabbitmq.conf and the definitions of the node.
func (r *Rabbit) writeConfig() error {
	dir := r.cfg.Dir
	server, err := r.cfg.CA.Server(dir, "server")
	if err != nil {
		return err
	}
	if r.admin, err = r.cfg.CA.Client(dir, "admin", "admin"); err != nil {
		return err
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := copyFile(r.cfg.CA.CertFile, ca); err != nil {
		return err
	}
	defs := r.cfg.Definitions.withAdmin("admin", r.adminPass)
	if err := defs.write(filepath.Join(dir, "definitions.json")); err != nil {
		return err
	}
	conf := fmt.Sprintf(`listeners.tcp = none
listeners.ssl.default = 127.0.0.1:%d
ssl_options.cacertfile = %s
ssl_options.certfile = %s
ssl_options.keyfile = %s
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = %t
loopback_users = none
load_definitions = %s
`, r.Port, ca, server.CertFile, server.KeyFile, r.cfg.ClientCert, filepath.Join(dir, "definitions.json"))
	for name, content := range map[string]string{"rabbitmq.conf": conf, "enabled_plugins": "[].\n", "rabbitmq-env.conf": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	// rabbitmq-server drops to the rabbitmq user when started as root.
	return handOver(dir, "rabbitmq")
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

func (r *Rabbit) start(ctx context.Context) error {
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
		conn, err := amqp.Dial(r.AdminURL())
		if err == nil {
			return conn.Close()
		}
		select {
		case <-r.exited:
			return fmt.Errorf("sandbox RabbitMQ: rabbitmq-server exited during boot; see %s and %s", logPath, filepath.Join(r.cfg.Dir, "log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sandbox RabbitMQ: node %s took no TLS connection within %s (last: %v); see %s", r.Node, r.cfg.StartTimeout, err, logPath)
		}
	}
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
	if b, err := os.ReadFile(filepath.Join(r.cfg.Dir, "beam.pid")); err == nil {
		if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if r.cmd.Process != nil {
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// URL returns the amqps:// URL of vhost for user with password, trusting the CA and, when client
// is not zero, presenting that certificate.
func (r *Rabbit) URL(user, password, vhost string, client Pair) string {
	q := url.Values{"cacertfile": {r.cfg.CA.CertFile}}
	if client.CertFile != "" {
		q.Set("certfile", client.CertFile)
		q.Set("keyfile", client.KeyFile)
	}
	u := url.URL{Scheme: "amqps", User: url.UserPassword(user, password), Host: "127.0.0.1:" + strconv.Itoa(r.Port),
		Path: "/" + vhost, RawPath: "/" + url.PathEscape(vhost), RawQuery: q.Encode()}
	return u.String()
}

// AdminURL returns the URL of the default vhost for the node's administrator, who may do
// anything on every vhost.
func (r *Rabbit) AdminURL() string { return r.URL("admin", r.adminPass, "", r.admin) }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
