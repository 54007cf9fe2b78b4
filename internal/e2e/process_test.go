package e2e_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
)

// The coordinator binary is built once per test binary, on first use, into a directory that
// TestMain removes. It is the test build (-tags testhooks): tests start it with --test-* flags.
var build struct {
	once sync.Once
	dir  string
	path string
	err  error
	out  []byte
}

func coordinatorBinary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "sagacoord-e2e-")
		if build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "coordinator")
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			goTool = "go"
		}
		cmd := exec.Command(goTool, "build", "-tags", "testhooks", "-o", build.path, "github.com/sagacoord/sagacoord/cmd/coordinator")
		build.out, build.err = cmd.CombinedOutput()
	})
	require.NoError(t, build.err, "go build ./cmd/coordinator: %s", build.out)
	return build.path
}

func removeBuilds() {
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
}

// childProcess is a sagacoord binary running as a child process of the test.
type childProcess struct {
	name   string
	cmd    *exec.Cmd
	stderr *testenv.Buffer
	exited chan struct{}
	err    error // from Wait, once exited is closed
}

// startChild starts cmd, with its stderr captured, and waits until ready reports true. The
// process is killed when the test ends if it still runs, and the tail of its log is printed when
// the test failed.
func startChild(t *testing.T, name string, cmd *exec.Cmd, ready func(p *childProcess) (bool, string)) *childProcess {
	t.Helper()
	p := &childProcess{name: name, cmd: cmd, stderr: &testenv.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	require.NoError(t, cmd.Start())
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s process %d log (tail):\n%s", name, cmd.Process.Pid, tail(p.stderr.String(), 40))
		}
	})
	eventually(t, 30*time.Second, func() (bool, string) {
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it was ready: %v\n%s", name, p.err, p.stderr.String())
		default:
		}
		return ready(p)
	})
	return p
}

// kill sends SIGKILL and waits for the process to end.
func (p *childProcess) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	p.awaitExit(t, 10*time.Second)
}

// awaitExit waits for the process to end and requires that SIGKILL ended it.
func (p *childProcess) awaitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("%s process %d still runs after %s", p.name, p.cmd.Process.Pid, timeout)
	}
	var ee *exec.ExitError
	require.True(t, errors.As(p.err, &ee), "process ended with %v, want killed", p.err)
	ws, ok := ee.Sys().(syscall.WaitStatus)
	require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "process ended with %v, want SIGKILL", p.err)
}

// coordinatorProcess is a coordinator running as a child process.
type coordinatorProcess struct {
	*childProcess
	addr string
}

// startCoordinatorProcess runs `coordinator serve` on the test's database and vhost and waits
// until it listens. It is killed when the test ends if it still runs, and its log is printed
// when the test failed.
func (e *env) startCoordinatorProcess(extra ...string) *coordinatorProcess {
	e.t.Helper()
	return startCoordinatorArgs(e.t, append([]string{"--database-url", e.dbURL, "--amqp-url", e.amqpURL}, extra...)...)
}

// startCoordinatorArgs runs `coordinator serve` with args, on a free port and with migrations,
// and waits until it listens.
func startCoordinatorArgs(t *testing.T, args ...string) *coordinatorProcess {
	t.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--migrate", "--log-level", "info", "--db-max-conns", strconv.Itoa(coordinatorConns)}, args...)
	cmd := exec.Command(coordinatorBinary(t), args...)
	stdout := &testenv.Buffer{}
	cmd.Stdout = stdout
	c := &coordinatorProcess{}
	c.childProcess = startChild(t, "coordinator", cmd, func(p *childProcess) (bool, string) {
		for _, line := range strings.Split(stdout.String(), "\n") {
			if a, ok := strings.CutPrefix(line, "coordinator listening on "); ok {
				c.addr = a
				return true, ""
			}
		}
		return false, "coordinator process does not listen yet:\n" + p.stderr.String()
	})
	return c
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
