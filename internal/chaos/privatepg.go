package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

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
