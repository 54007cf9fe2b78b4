package conformance

import (
	"bufio"
	"context"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
)

// debianPython is the interpreter the Debian packages python3-pika and python3-psycopg2 install
// for; .ci/run installs them.
const debianPython = "/usr/bin/python3"

// TestPythonWorkerPasses runs the kit against examples/python-worker, a worker written from the
// protocol documents alone with pika and psycopg2: every case must pass.
func TestPythonWorkerPasses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python worker against the real services")
	}
	if out, err := exec.Command(debianPython, "-c", "import pika, psycopg2").CombinedOutput(); err != nil {
		t.Skipf("%s cannot import pika and psycopg2 (apt-get install -y python3-pika python3-psycopg2): %v: %s", debianPython, err, out)
	}
	u, err := url.Parse(testenv.Schema(t))
	require.NoError(t, err)
	schema := u.Query().Get("search_path")
	amqpURL := testenv.VHost(t)

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, debianPython, filepath.Join("..", "..", "examples", "python-worker", "worker.py"),
		checked, amqpURL, testenv.DatabaseURL(), schema)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel() // kills the worker, which runs until it is stopped
		<-done
	})
	ready := make(chan struct{})
	var logs strings.Builder
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "worker running") {
				close(ready)
			}
			logs.WriteString(sc.Text() + "\n")
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatalf("the Python worker ended before it ran:\n%s", logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("the Python worker did not start within 30s")
	}

	var out strings.Builder
	results, err := Run(context.Background(), Config{AMQPURL: amqpURL, Participant: checked}, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())
	for _, r := range results {
		require.True(t, r.Passed, "%s: %s", r.Name, r.Why)
	}
}
