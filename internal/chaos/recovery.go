package chaos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sagacoord/sagacoord/internal/sandbox"
)

// R1 is the recovery check of expect.recovered: each process named there came back after its
// last fault, is healthy, and did work after that fault's heal.
const R1 = "R1"

// Work counters (Prometheus names) that say a process did work: for a coordinator, step answers
// and timeouts handled and sagas and transactions finished; for participant-sim, commands
// decided. Each instance counts from zero.
var (
	coordinatorWork = []string{"sagacoord_step_duration_seconds_count", "sagacoord_sagas_completed_total",
		"sagacoord_sagas_compensated_total", "sagacoord_sagas_failed_total", "sagacoord_twopc_transactions_finished_total"}
	simWork = []string{"sagacoord_participant_commands_total"}
)

// workBaseline is a process's work counter right after a fault on it healed.
type workBaseline struct {
	instance int // the process's start number then
	value    float64
	at       float64 // seconds from the start of the workload
}

// metricsArgs gives a process named in expect.recovered a metrics listener of its own, which the
// recovery check reads; other processes get none.
func (r *run) metricsArgs(name string) ([]string, string, error) {
	if !slices.Contains(r.s.Expect.Recovered, name) {
		return nil, "", nil
	}
	port, err := sandbox.FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	return []string{"--metrics-listen", addr}, addr, nil
}

// noteHeal records the work counter of a process named in expect.recovered after a fault on it
// healed (or after it came back from a crash of its own). A fresh instance (started by the heal)
// counts from zero, all of it after the heal, so its baseline is 0 whatever it did before this
// call; a resumed one (SIGCONT) is read.
func (r *run) noteHeal(p *process, fresh bool) {
	if p == nil || p.metricsAddr == "" {
		return
	}
	instance, _, _ := p.instance()
	b := workBaseline{instance: instance, at: r.since(time.Now())}
	if !fresh {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		v, err := scrapeWork(ctx, p)
		if err != nil {
			r.event("recovery baseline of %s unavailable: %v", p.name, err)
			v = -1 // judged at the check: unless it restarts, R1 cannot tell
		}
		b.value = v
	}
	r.mu.Lock()
	if r.baselines == nil {
		r.baselines = map[string]workBaseline{}
	}
	r.baselines[p.name] = b
	r.mu.Unlock()
}

// checkRecovered checks R1 for every process of expect.recovered.
func (r *run) checkRecovered(ctx context.Context, v *verdict) {
	var ok []string
	for _, name := range r.s.Expect.Recovered {
		v.Checked++
		if msg, err := r.recovered(ctx, name); err != nil {
			v.fail(name, "%v", err)
		} else {
			ok = append(ok, name+": "+msg)
		}
	}
	v.Detail = strings.Join(ok, "; ")
}

// recovered says how process name recovered, or why it did not.
func (r *run) recovered(ctx context.Context, name string) (string, error) {
	p := r.procs[name]
	instance, running, paused := p.instance()
	if !running || paused {
		return "", fmt.Errorf("not running at the check (paused: %v)", paused)
	}
	r.mu.Lock()
	b, healed := r.baselines[name]
	r.mu.Unlock()
	if !healed {
		return "", fmt.Errorf("no fault on it was healed (or it never came back from one): nothing recovered")
	}
	health, err := r.health(ctx, p)
	if err != nil {
		return "", fmt.Errorf("not healthy: %v", err)
	}
	now, err := scrapeWork(ctx, p)
	if err != nil {
		return "", fmt.Errorf("its work counters: %v", err)
	}
	done := now
	if instance == b.instance && b.value >= 0 {
		done = now - b.value
	} else if instance == b.instance {
		return "", fmt.Errorf("its work counters could not be read at the heal (%.1fs) and it has not restarted since", b.at)
	}
	if done <= 0 {
		return "", fmt.Errorf("did no work after the heal at %.1fs (%s %v)", b.at, strings.Join(workNames(p), "+"), now)
	}
	return fmt.Sprintf("start %d, %s, %v unit(s) of work after the heal at %.1fs", instance, health, done, b.at), nil
}

// health asks a coordinator's gRPC health service, and checks that participant-sim's current
// instance logged that it is ready and answers on its metrics listener (all it exposes).
func (r *run) health(ctx context.Context, p *process) (string, error) {
	if p.role != "coordinator" {
		if !p.logContains(p.currentLogFrom(), "participant-sim ready") {
			return "", fmt.Errorf("its current instance never logged 'participant-sim ready'")
		}
		return "ready", nil
	}
	for i, c := range r.s.Topology.Coordinators {
		if c.Name != p.name {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(r.conns[i].ClientConn()).Check(cctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return "", fmt.Errorf("gRPC health check: %w", err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return "", fmt.Errorf("gRPC health is %s", resp.GetStatus())
		}
		return "SERVING", nil
	}
	return "", fmt.Errorf("%s is not a coordinator of the topology", p.name)
}

func workNames(p *process) []string {
	if p.role == "coordinator" {
		return coordinatorWork
	}
	return simWork
}

// scrapeWork reads p's metrics and sums its work counters.
func scrapeWork(ctx context.Context, p *process) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.metricsAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("metrics: %s", resp.Status)
	}
	return sumCounters(resp.Body, workNames(p))
}

// sumCounters sums the samples of the named metrics in a Prometheus text exposition.
func sumCounters(body io.Reader, names []string) (float64, error) {
	var sum float64
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		if !slices.Contains(names, name) {
			continue
		}
		rest := line[len(name):]
		if strings.HasPrefix(rest, "{") {
			rest = rest[strings.LastIndex(rest, "}")+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}
