package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

func (d *driver) latency(ctx context.Context, t0, t1 time.Time, res *Result) error {
	rows, err := d.pool.Query(ctx, `SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM sagas
		WHERE definition_name = 'bench-3step' AND finished_at >= $1 AND finished_at < $2`, t0, t1)
	if err != nil {
		return fmt.Errorf("bench: read latencies: %w", err)
	}
	defer rows.Close()
	var ms []float64
	for rows.Next() {
		var v float64
		if err := rows.Scan(&v); err != nil {
			return err
		}
		ms = append(ms, v)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	sort.Float64s(ms)
	res.Completed = int64(len(ms))
	q := func(p float64) float64 {
		if len(ms) == 0 {
			return 0
		}
		return ms[min(len(ms)-1, int(p*float64(len(ms))))]
	}
	res.LatencyP50Millis, res.LatencyP95Millis, res.LatencyP99Millis = q(0.50), q(0.95), q(0.99)
	if len(ms) > 0 {
		res.LatencyMaxMillis = ms[len(ms)-1]
	}
	return nil
}

// drain waits until no benchmark saga created since t0 is in flight, or timeout; it returns how many
// are not terminal then, FAILED ones included.
func (d *driver) drain(ctx context.Context, t0 time.Time, timeout time.Duration) (int64, error) {
	deadline := time.Now().Add(timeout)
	for {
		inFlight, failed, err := d.openSagas(ctx, t0)
		if err != nil {
			return 0, err
		}
		if inFlight == 0 || time.Now().After(deadline) {
			return inFlight + failed, nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return inFlight + failed, err
		}
	}
}

// openSagas counts the benchmark's sagas created since t0 that are not terminal: those still in
// flight, and those FAILED, which wait for an operator and will not move on their own.
func (d *driver) openSagas(ctx context.Context, t0 time.Time) (inFlight, failed int64, err error) {
	err = d.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status <> 'FAILED'), count(*) FILTER (WHERE status = 'FAILED')
		FROM sagas WHERE definition_name = 'bench-3step' AND created_at >= $1 AND finished_at IS NULL`, t0).Scan(&inFlight, &failed)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: count open sagas: %w", err)
	}
	return inFlight, failed, nil
}

type snapshot struct {
	commits  int64
	counters counters
	// machineCPU is the CPU seconds of every process on the machine, by processGroup.
	machineCPU map[string]procCPU
	cpuSeconds float64
	rssMB      float64
	peakMB     float64
}

func (d *driver) snapshot(ctx context.Context) (snapshot, error) {
	s := snapshot{}
	// Make this backend's own counters current; others flush at least once a second when busy.
	if _, err := d.pool.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		return s, fmt.Errorf("bench: flush statistics: %w", err)
	}
	if err := d.pool.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&s.commits); err != nil {
		return s, fmt.Errorf("bench: read pg_stat_database: %w", err)
	}
	var err error
	if s.counters, err = d.readCounters(ctx); err != nil {
		return s, err
	}
	s.machineCPU = machineCPU()
	for _, pid := range d.cfg.CoordinatorPIDs {
		cpu, rss, peak := procStats(pid)
		s.cpuSeconds += cpu
		s.rssMB += rss
		s.peakMB += peak
	}
	return s, nil
}

// brokerPerSaga divides the broker's counts since the load started by the benchmark's sagas that
// finished since then. The sagas have drained, so nothing more is published; the counts are read
// once the publish count has stayed unchanged for StatsSettle, because the management API updates
// them only once per statistics interval. Taken over the window alone, the count was up to one
// interval stale at each end, and the ratio read 4.9 to 6.1 for a saga that publishes exactly 6
// messages.
func (d *driver) brokerPerSaga(ctx context.Context, atStart brokerRaw, loadStart time.Time) (*BrokerCounts, error) {
	var finished int64
	if err := d.pool.QueryRow(ctx, `SELECT count(*) FROM sagas WHERE definition_name = 'bench-3step' AND created_at >= $1 AND finished_at IS NOT NULL`,
		loadStart).Scan(&finished); err != nil {
		return nil, fmt.Errorf("bench: count finished sagas: %w", err)
	}
	fmt.Fprintf(d.cfg.Log, "waiting for the broker's message count to settle\n")
	last, ok := d.brokerCounts(ctx)
	since := time.Now()
	for deadline := time.Now().Add(5 * d.cfg.StatsSettle); ok && time.Since(since) < d.cfg.StatsSettle && time.Now().Before(deadline); {
		if err := sleep(ctx, d.cfg.StatsSettle/12); err != nil {
			return nil, err
		}
		var n brokerRaw
		if n, ok = d.brokerCounts(ctx); ok && n != last {
			last, since = n, time.Now()
		}
	}
	if !ok || finished == 0 {
		return nil, nil
	}
	per := func(a, b int64) float64 { return float64(a-b) / float64(finished) }
	return &BrokerCounts{
		Published: per(last.publish, atStart.publish), Confirmed: per(last.confirm, atStart.confirm),
		Delivered: per(last.deliver, atStart.deliver), Acked: per(last.ack, atStart.ack),
	}, nil
}

// brokerRaw are the message counters of the coordinator's vhost.
type brokerRaw struct{ publish, confirm, deliver, ack int64 }

// brokerCounts reads the message counters of the coordinator's vhost from the management API;
// false when unavailable.
func (d *driver) brokerCounts(ctx context.Context) (brokerRaw, bool) {
	vhost := "/"
	if u, err := url.Parse(d.cfg.AMQPURL); err == nil && len(u.Path) > 1 {
		vhost = strings.TrimPrefix(u.Path, "/")
	}
	api, err := url.Parse(d.cfg.RabbitAPI)
	if err != nil {
		return brokerRaw{}, false
	}
	user := api.User
	api.User = nil
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.String()+"/api/vhosts/"+url.PathEscape(vhost), nil)
	if err != nil {
		return brokerRaw{}, false
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return brokerRaw{}, false
	}
	defer resp.Body.Close()
	var v struct {
		MessageStats struct {
			Publish    int64 `json:"publish"`
			Confirm    int64 `json:"confirm"`
			DeliverGet int64 `json:"deliver_get"`
			Ack        int64 `json:"ack"`
		} `json:"message_stats"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
		return brokerRaw{}, false
	}
	m := v.MessageStats
	return brokerRaw{publish: m.Publish, confirm: m.Confirm, deliver: m.DeliverGet, ack: m.Ack}, true
}

// redactURL returns raw with its password hidden.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
