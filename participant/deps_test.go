package participant_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// forbiddenDeps are the packages the SDK must never link: the OpenTelemetry SDK, exporters and
// instrumentations, the OTLP protobufs, gRPC and Prometheus. Which of them a worker runs is the
// application's choice; the SDK takes its providers through Config and needs only the API.
var forbiddenDeps = []string{
	"go.opentelemetry.io/otel/sdk",
	"go.opentelemetry.io/otel/exporters",
	"go.opentelemetry.io/contrib",
	"go.opentelemetry.io/proto/otlp",
	"google.golang.org/grpc",
	"github.com/prometheus",
}

// TestSDKLinksNoExporter keeps the promise of Config.TracerProvider and Config.MeterProvider: a
// worker importing the SDK links none of forbiddenDeps. A failure names each package through which
// forbidden ones come in, with the import chain that leads to it.
func TestSDKLinksNoExporter(t *testing.T) {
	goCmd := goCommand(t)
	for _, chain := range linkedForbidden(t, goCmd, ".") {
		t.Errorf("the participant SDK links %s (and what it imports), through %s", chain[len(chain)-1], strings.Join(chain, " -> "))
	}
}

// TestLinkedForbiddenSeesOffenders checks the check on the process setup, which imports the
// OpenTelemetry SDK, an exporter and Prometheus itself: finding none there would mean the check is
// broken and TestSDKLinksNoExporter passes for nothing.
func TestLinkedForbiddenSeesOffenders(t *testing.T) {
	goCmd := goCommand(t)
	const setup = "github.com/sagacoord/sagacoord/internal/telemetry/otelsetup"
	found := map[string][]string{}
	for _, chain := range linkedForbidden(t, goCmd, "../internal/telemetry/otelsetup") {
		found[chain[len(chain)-1]] = chain
	}
	for _, want := range []string{"go.opentelemetry.io/otel/sdk/trace", "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc", "github.com/prometheus/client_golang/prometheus"} {
		chain := found[want]
		require.NotEmpty(t, chain, "%s is linked by the setup", want)
		require.Equal(t, setup, chain[0], "%s: the chain starts at the setup", want)
	}
}

// goCommand returns the go command, or skips: the check lists the SDK's dependencies with it.
func goCommand(t *testing.T) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("cannot list the SDK's dependencies: the go command is not on PATH (%v)", err)
	}
	return goCmd
}

// linkedForbidden returns the import chains, from pkg, of the forbidden packages that pkg links
// directly through an allowed one: the places where forbidden code comes in. What those import is
// forbidden too, but not listed again.
func linkedForbidden(t *testing.T, goCmd, pkg string) [][]string {
	t.Helper()
	cmd := exec.Command(goCmd, "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", pkg)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	imports := map[string][]string{}
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		imports[fields[0]] = fields[1:]
		order = append(order, fields[0])
	}
	// go list -deps prints pkg itself last.
	chains := importChains(order[len(order)-1], imports)
	var bad [][]string
	for _, p := range order {
		if c := chains[p]; isForbidden(p) && len(c) > 1 && !isForbidden(c[len(c)-2]) {
			bad = append(bad, c)
		}
	}
	return bad
}

// importChains returns, for every package reachable from root, the shortest chain of imports
// from root to it (a breadth-first search).
func importChains(root string, imports map[string][]string) map[string][]string {
	chains := map[string][]string{root: {root}}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, q := range imports[p] {
			if _, seen := chains[q]; !seen {
				chains[q] = append(append([]string(nil), chains[p]...), q)
				queue = append(queue, q)
			}
		}
	}
	return chains
}

func isForbidden(pkg string) bool {
	for _, f := range forbiddenDeps {
		if pkg == f || strings.HasPrefix(pkg, f+"/") {
			return true
		}
	}
	return false
}
