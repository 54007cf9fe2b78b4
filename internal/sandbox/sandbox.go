// Package sandbox starts PostgreSQL and RabbitMQ instances of one's own, on a directory and free
// ports; it never touches the machine's shared services. Given a CA, they accept only TLS
// connections with certificates from it: for the tests of the TLS links and for `make demo-tls`
// (through `sagalab sandbox`). Without one, they take plain connections on 127.0.0.1: the private
// database and broker of the chaos scenarios (internal/chaos), which crash, restart and alarm them.
//
//   - certs.go: the CA and the certificates it issues (crypto/x509, no openssl).
//   - postgres.go: a PostgreSQL with ssl=on, password authentication and TLS only; without a CA,
//     plain with trust authentication.
//   - rabbit.go, definitions.go: a RabbitMQ node with a TLS listener alone (without a CA, a plain
//     one), optionally its management API, and the users and permissions it loads at boot;
//     layout.go: the permissions of docs/security.md's layout.
//   - command.go: `sagalab sandbox`, which runs both until interrupted.
//
// As root, the servers run as the postgres and rabbitmq users, which must be able to reach the
// directory: make it with MkdirTemp, not under a private home.
package sandbox

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// ErrMissing wraps the error of a start when the server's binaries are not installed; tests skip
// on it.
var ErrMissing = errors.New("sandbox: server binaries missing")

// DefaultPostgresBin is where the PostgreSQL 15 server binaries are on the team's machines.
const DefaultPostgresBin = "/usr/lib/postgresql/15/bin"

// MkdirTemp makes a directory in the system's temp directory that the servers' system users can
// reach (os.MkdirTemp's are private to their owner). The caller removes it.
func MkdirTemp(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", fmt.Errorf("sandbox: make a directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("sandbox: make a directory: %w", err)
	}
	return dir, nil
}

// FreePort returns a TCP port on 127.0.0.1 that nobody listens on right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("sandbox: find a free port: %w", err)
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

// handOver gives dir and everything in it to the system user name when we are root, and lets
// that user reach dir.
func handOver(dir, name string) error {
	uid, gid := asUser(nil, name)
	if uid < 0 {
		return nil
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
