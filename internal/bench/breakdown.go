package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// Breakdown says where a saga's cost goes, each figure per saga completed in the window, so that
// the next person sees it without a profiler.
type Breakdown struct {
	// Transactions of each database (pg_stat_database: "coordinator", "participants"), reads
	// included.
	Transactions map[string]float64 `json:"pg_transactions"`
	// Statements and Commits each process sent (its pgx counter, read from its /metrics):
	// "coordinator", "participants". Absent for a process without a metrics URL.
	Statements map[string]float64 `json:"statements,omitempty"`
	Commits    map[string]float64 `json:"commits,omitempty"`
	// WALSyncs and WALBytes are PostgreSQL's WAL flushes and bytes, the whole cluster.
	WALSyncs float64 `json:"wal_syncs"`
	WALBytes float64 `json:"wal_bytes"`
	// ContextSwitches and CPUMillis are by process group (see processGroup).
	ContextSwitches map[string]float64 `json:"context_switches,omitempty"`
	CPUMillis       map[string]float64 `json:"cpu_ms,omitempty"`
	// Broker counts of the coordinator's vhost from the start of the load until the sagas
	// drained, per saga finished in that time; nil when the management API does not answer.
	Broker *BrokerCounts `json:"broker,omitempty"`
}

// BrokerCounts are RabbitMQ's message counters of one vhost.
type BrokerCounts struct {
	Published float64 `json:"published"`
	Confirmed float64 `json:"confirmed"`
	Delivered float64 `json:"delivered"`
	Acked     float64 `json:"acked"`
}

// counters is one reading of the counters the breakdown compares across the window.
type counters struct {
	transactions map[string]int64 // by database role
	statements   map[string]int64 // by process, from /metrics
	commits      map[string]int64
	walSyncs     int64
	walBytes     int64
}

// readCounters reads the databases' transactions, the WAL counters and the processes' metrics.
func (d *driver) readCounters(ctx context.Context) (counters, error) {
	c := counters{transactions: map[string]int64{}, statements: map[string]int64{}, commits: map[string]int64{}}
	rows, err := d.pool.Query(ctx, `SELECT CASE WHEN datname = current_database() THEN 'coordinator' ELSE 'participants' END, xact_commit
		FROM pg_stat_database WHERE datname = current_database() OR datname = $1`, d.cfg.ParticipantDatabase)
	if err != nil {
		return c, fmt.Errorf("bench: read pg_stat_database: %w", err)
	}
	for rows.Next() {
		var (
			role string
			n    int64
		)
		if err := rows.Scan(&role, &n); err != nil {
			return c, err
		}
		c.transactions[role] = n
	}
	if err := rows.Err(); err != nil {
		return c, err
	}
	if err := d.pool.QueryRow(ctx, `SELECT wal_sync, wal_bytes::bigint FROM pg_stat_wal`).Scan(&c.walSyncs, &c.walBytes); err != nil {
		return c, fmt.Errorf("bench: read pg_stat_wal: %w", err)
	}
	for name, url := range d.cfg.MetricsURLs {
		s, m, err := scrapeDBCounts(ctx, url)
		if err != nil {
			return c, fmt.Errorf("bench: metrics of %s at %s: %w", name, url, err)
		}
		c.statements[name], c.commits[name] = s, m
	}
	return c, nil
}

// scrapeDBCounts reads sagacoord_db_statements_total and sagacoord_db_commits_total from a
// Prometheus text endpoint, summed over their series.
func scrapeDBCounts(ctx context.Context, url string) (statements, commits int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, perr := strconv.ParseFloat(f[len(f)-1], 64)
		if perr != nil {
			continue
		}
		switch name {
		case "sagacoord_db_statements_total":
			statements += int64(v)
		case "sagacoord_db_commits_total":
			commits += int64(v)
		}
	}
	return statements, commits, sc.Err()
}

// breakdown turns two readings taken around a window into figures per completed saga.
func breakdown(before, after snapshot, completed int64) *Breakdown {
	if completed <= 0 {
		return nil
	}
	per := func(d int64) float64 { return float64(d) / float64(completed) }
	b := &Breakdown{
		Transactions: map[string]float64{}, Statements: map[string]float64{}, Commits: map[string]float64{},
		WALSyncs: per(after.counters.walSyncs - before.counters.walSyncs),
		WALBytes: per(after.counters.walBytes - before.counters.walBytes),
	}
	for k, v := range after.counters.transactions {
		b.Transactions[k] = per(v - before.counters.transactions[k])
	}
	for k, v := range after.counters.statements {
		b.Statements[k] = per(v - before.counters.statements[k])
		b.Commits[k] = per(after.counters.commits[k] - before.counters.commits[k])
	}
	b.ContextSwitches = switchesByGroup(before.machineCPU, after.machineCPU, completed)
	return b
}

// taskSwitches sums the voluntary and involuntary context switches of every thread of a process.
func taskSwitches(pid string) int64 {
	tasks, err := os.ReadDir("/proc/" + pid + "/task")
	if err != nil {
		return 0
	}
	var n int64
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/" + pid + "/task/" + t.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
	}
	return n
}

// switchesByGroup turns two machineCPU readings into context switches per saga by group.
func switchesByGroup(before, after map[string]procCPU, completed int64) map[string]float64 {
	return byGroupDelta(before, after, float64(completed), func(p procCPU) float64 { return float64(p.switches) })
}
