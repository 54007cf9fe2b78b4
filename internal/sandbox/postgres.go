package sandbox

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// PostgresConfig configures a sandbox PostgreSQL.
type PostgresConfig struct {
	// Dir is created and holds the cluster (Dir/data), its certificates and its log. Required.
	Dir string
	// Bin holds initdb and pg_ctl. Default DefaultPostgresBin.
	Bin string
	// CA signs the server's certificate and, with ClientCert, the clients'. Nil makes a server
	// without TLS that trusts every connection: a private database, not a guarded one.
	CA *CA
	// Password is the password of the superuser postgres, the only user. Required with a CA;
	// unused without one.
	Password string
	// ClientCert requires every client to present a certificate signed by CA, besides the
	// password (pg_hba.conf's clientcert=verify-ca).
	ClientCert bool
	// MaxConnections is the server's max_connections. Default PostgreSQL's (100).
	MaxConnections int
}

// Postgres is a running sandbox PostgreSQL on 127.0.0.1. With a CA, TCP takes TLS only
// (pg_hba.conf rejects every TCP connection without it) and scram-sha-256 passwords; its Unix
// socket, in Dir, trusts the machine's users, as an administrator's way in. Without a CA, every
// connection is plain and trusted.
type Postgres struct {
	cfg  PostgresConfig
	Port int
}

// StartPostgres initialises a cluster in cfg.Dir and starts it on a free port.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	if cfg.Bin == "" {
		cfg.Bin = DefaultPostgresBin
	}
	for _, b := range []string{"initdb", "pg_ctl"} {
		if _, err := os.Stat(filepath.Join(cfg.Bin, b)); err != nil {
			return nil, fmt.Errorf("%w: a sandbox PostgreSQL needs %s (%v); install postgresql-15", ErrMissing, filepath.Join(cfg.Bin, b), err)
		}
	}
	if cfg.Dir == "" || (cfg.CA != nil && cfg.Password == "") {
		return nil, fmt.Errorf("sandbox PostgreSQL: Dir is required, and Password with a CA")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	p := &Postgres{cfg: cfg, Port: port}
	if err := p.prepare(ctx); err != nil {
		return nil, err
	}
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// prepare runs initdb; with a CA, it first writes the certificates and the password file, and
// then pg_hba.conf.
func (p *Postgres) prepare(ctx context.Context) error {
	dir := p.cfg.Dir
	if p.cfg.CA == nil {
		if err := handOver(dir, "postgres"); err != nil {
			return err
		}
		out, err := p.run(ctx, "initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
		if err != nil {
			return fmt.Errorf("sandbox PostgreSQL: initdb: %v: %s", err, out)
		}
		return nil
	}
	if _, err := p.cfg.CA.Server(dir, "server"); err != nil {
		return err
	}
	if err := copyFile(p.cfg.CA.CertFile, filepath.Join(dir, "ca.pem")); err != nil {
		return err
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.cfg.Password+"\n"), 0o600); err != nil {
		return err
	}
	if err := handOver(dir, "postgres"); err != nil {
		return err
	}
	out, err := p.run(ctx, "initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
	if err != nil {
		return fmt.Errorf("sandbox PostgreSQL: initdb: %v: %s", err, out)
	}
	_ = os.Remove(pwfile)
	auth := "scram-sha-256"
	if p.cfg.ClientCert {
		auth += " clientcert=verify-ca"
	}
	hba := "local all all trust\n" +
		"hostssl all all 127.0.0.1/32 " + auth + "\n" +
		"hostnossl all all all reject\n"
	hbaFile := filepath.Join(dir, "data", "pg_hba.conf")
	if err := os.WriteFile(hbaFile, []byte(hba), 0o600); err != nil {
		return err
	}
	return handOver(dir, "postgres")
}

func (p *Postgres) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(p.cfg.Bin, name), args...)
	asUser(cmd, "postgres")
	cmd.Dir = p.cfg.Dir
	return cmd.CombinedOutput()
}

// Start starts the server, initialised by StartPostgres, after Stop or Crash, and waits for it.
func (p *Postgres) Start(ctx context.Context) error {
	dir := p.cfg.Dir
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", p.Port, dir)
	if p.cfg.MaxConnections > 0 {
		opts += fmt.Sprintf(" -c max_connections=%d", p.cfg.MaxConnections)
	}
	if p.cfg.CA != nil {
		opts += fmt.Sprintf(" -c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s -c ssl_ca_file=%s",
			filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.pem"))
	}
	out, err := p.run(ctx, "pg_ctl", "-D", filepath.Join(dir, "data"), "-o", opts, "-l", filepath.Join(dir, "postgres.log"), "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("sandbox PostgreSQL: pg_ctl start: %v: %s (log: %s)", err, out, filepath.Join(dir, "postgres.log"))
	}
	return nil
}

// Stop stops the server (fast shutdown) and waits for it.
func (p *Postgres) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = p.run(ctx, "pg_ctl", "-D", filepath.Join(p.cfg.Dir, "data"), "-m", "fast", "-w", "stop")
}

// Crash stops the server without a checkpoint, as a crash would: Start then replays the WAL.
func (p *Postgres) Crash(ctx context.Context) error {
	out, err := p.run(ctx, "pg_ctl", "-D", filepath.Join(p.cfg.Dir, "data"), "-m", "immediate", "-w", "stop")
	if err != nil {
		return fmt.Errorf("sandbox PostgreSQL: pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

// URL returns the URL of database as user postgres with password (none when empty). With a CA,
// it verifies the server's certificate against it (sslmode=verify-full) and, when client is not
// zero, presents that certificate; without one, it asks for no TLS (sslmode=disable).
func (p *Postgres) URL(password, database string, client Pair) string {
	q := url.Values{"sslmode": {"disable"}}
	if p.cfg.CA != nil {
		q = url.Values{"sslmode": {"verify-full"}, "sslrootcert": {p.cfg.CA.CertFile}}
	}
	if client.CertFile != "" {
		q.Set("sslcert", client.CertFile)
		q.Set("sslkey", client.KeyFile)
	}
	user := url.UserPassword("postgres", password)
	if password == "" {
		user = url.User("postgres")
	}
	u := url.URL{Scheme: "postgres", User: user, Host: "127.0.0.1:" + strconv.Itoa(p.Port),
		Path: "/" + database, RawQuery: q.Encode()}
	return u.String()
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}
