// Package bench measures a running sagacoord system: it starts 3-step sagas over no-op
// participants (which still use the barrier) at a target rate (open loop) or concurrency (closed
// loop) and reports throughput, start-to-terminal latency, PostgreSQL commits and broker messages
// per saga, the coordinator's CPU and memory, and, in the same run, the raw baselines of the same
// services (confirmed persistent publishes per second, single-row inserts per second), so that
// ratios come from one run on a noisy machine.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// Config configures a run.
type Config struct {
	// Client reaches the coordinator. Required.
	Client pb.SagaServiceClient
	// DatabaseURL is the coordinator's database (with its search_path). Required: latency and
	// commits are read from it.
	DatabaseURL string
	// AMQPURL is the broker (with the coordinator's vhost), for the publish baseline.
	AMQPURL string
	// RabbitAPI is the management API base URL with credentials, for message counts. Default
	// http://guest:guest@127.0.0.1:15672.
	RabbitAPI string
	// Duration of the measured window. Default 10s.
	Duration time.Duration
	// Warmup runs before the window and is not measured. Default 2s.
	Warmup time.Duration
	// Rate, when positive, starts this many sagas per second (open loop); otherwise
	// Concurrency sagas are kept in flight (closed loop, default 64).
	Rate        float64
	Concurrency int
	// MaxInFlight bounds open-loop sagas in flight; beyond it starts are counted as shed.
	// Default 20000.
	MaxInFlight int
	// PrefillFinished, when positive, first runs one benchmark saga to completion and then copies
	// it as this many finished sagas (finished within the last 48 hours, so that retention keeps
	// them), to measure throughput with large tables.
	PrefillFinished int64
	// Burst, when positive, replaces the timed window: start this many sagas as fast as the
	// coordinator accepts them (Concurrency start calls at a time), then wait for all of them
	// to finish. It measures the coordinator with many sagas in flight.
	Burst int64
	// StepTimeout is each step's timeout in the benchmark definition. It counts from dispatch,
	// so it must exceed the time a command waits in its queue. Default 30s.
	StepTimeout time.Duration
	// Participants are the three no-op participants. Default bench-a, bench-b, bench-c.
	Participants []string
	// CoordinatorPIDs are measured for CPU and RSS (optional).
	CoordinatorPIDs []int
	// Baselines runs the raw publish and insert baselines after the saga run.
	Baselines bool
	// StatsSettle is how long the management API's publish count must stay unchanged, once the
	// sagas have drained, before messages per saga is taken from it. The broker updates the
	// count once per statistics interval (5s by default). Default 6s.
	StatsSettle time.Duration
	// Log receives progress lines (optional).
	Log io.Writer
}

func (c Config) withDefaults() Config {
	if c.RabbitAPI == "" {
		c.RabbitAPI = "http://guest:guest@127.0.0.1:15672"
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.StepTimeout == 0 {
		c.StepTimeout = 30 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
	}
	if c.Rate <= 0 && c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 20000
	}
	if len(c.Participants) == 0 {
		c.Participants = []string{"bench-a", "bench-b", "bench-c"}
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.StatsSettle == 0 {
		c.StatsSettle = 6 * time.Second
	}
	return c
}

// Result is one run's figures. JSON field names are stable.
type Result struct {
	Mode            string  `json:"mode"`
	TargetRate      float64 `json:"target_rate,omitempty"`
	Concurrency     int     `json:"concurrency,omitempty"`
	DurationSeconds float64 `json:"duration_seconds"`
	Started         int64   `json:"started"`
	StartErrors     int64   `json:"start_errors"`
	Shed            int64   `json:"shed"`
	// Completed counts sagas that reached a terminal state inside the window.
	Completed        int64   `json:"completed"`
	SagasPerSecond   float64 `json:"sagas_per_second"`
	LatencyP50Millis float64 `json:"latency_p50_ms"`
	LatencyP95Millis float64 `json:"latency_p95_ms"`
	LatencyP99Millis float64 `json:"latency_p99_ms"`
	LatencyMaxMillis float64 `json:"latency_max_ms"`
	// Unfinished counts sagas started in the window and not terminal DrainTimeout after it.
	Unfinished     int64   `json:"unfinished"`
	DrainSeconds   float64 `json:"drain_seconds"`
	CommitsPerSaga float64 `json:"pg_commits_per_saga"`
	// MessagesPerSaga is the broker's publishes from the start of the load until the sagas
	// drained, divided by the benchmark's sagas that finished in that time; null when the
	// management API does not answer (see Warnings).
	MessagesPerSaga *float64 `json:"messages_per_saga"`
	CoordinatorCPU  float64  `json:"coordinator_cpu_cores,omitempty"`
	// CPUByProcess is the CPU of every process on the machine over the window, in cores, by
	// group: postgres (every backend and helper), rabbitmq (the Erlang VM), coordinator,
	// participant-sim, sagalab (the load generator), sagactl, other; and total. From /proc, so on Linux only, and only
	// meaningful when the services run on this machine, as with scripts/bench.sh.
	CPUByProcess map[string]float64 `json:"cpu_cores_by_process,omitempty"`
	// CPUMillisPerSaga is the whole machine's CPU per completed saga, in milliseconds.
	CPUMillisPerSaga  float64 `json:"cpu_ms_per_saga,omitempty"`
	CoordinatorRSSMB  float64 `json:"coordinator_rss_mb,omitempty"`
	CoordinatorPeakMB float64 `json:"coordinator_peak_rss_mb,omitempty"`
	BaselinePublish   float64 `json:"baseline_publish_per_second,omitempty"`
	BaselineInserts   float64 `json:"baseline_inserts_per_second,omitempty"`
	// BrokerEfficiency is sagas/s x messages per saga / baseline publish rate.
	BrokerEfficiency float64 `json:"broker_efficiency,omitempty"`
	// SagaRows is the number of rows in the sagas table when the window began (the planner's
	// estimate), and PrefillSeconds how long --prefill-finished took.
	SagaRows       int64   `json:"saga_rows"`
	PrefillSeconds float64 `json:"prefill_seconds,omitempty"`
	// Burst mode: sagas started, the most open at once, seconds to start them all and to
	// finish them all (from the first start). Completed counts those that completed (the others
	// compensated, or are FAILED and counted in Unfinished).
	Burst             int64   `json:"burst,omitempty"`
	BurstInFlightPeak int64   `json:"burst_in_flight_peak,omitempty"`
	BurstStartSeconds float64 `json:"burst_start_seconds,omitempty"`
	BurstEndSeconds   float64 `json:"burst_finish_seconds,omitempty"`
	// Warnings name the figures the run could not measure, and why.
	Warnings []string `json:"warnings,omitempty"`
}

// Definition is the benchmark saga: three steps over no-op participants.
func Definition(participants []string, stepTimeout time.Duration) *pb.SagaDefinition {
	def := &pb.SagaDefinition{Name: "bench-3step"}
	for i, p := range participants {
		def.Steps = append(def.Steps, &pb.StepDefinition{
			Name: fmt.Sprintf("s%d", i+1), Participant: p, Action: "noop", Compensation: "undo",
			Timeout: durationpb.New(stepTimeout),
		})
	}
	return def
}

// Run performs one benchmark run.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if cfg.Client == nil || cfg.DatabaseURL == "" {
		return nil, errors.New("bench: a coordinator client and its database URL are required")
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("bench: open database: %w", err)
	}
	defer pool.Close()
	if _, err := cfg.Client.RegisterDefinition(ctx, &pb.RegisterDefinitionRequest{Definition: Definition(cfg.Participants, cfg.StepTimeout)}); err != nil {
		return nil, fmt.Errorf("bench: register the benchmark definition: %w", err)
	}
	res := &Result{Mode: "closed", Concurrency: cfg.Concurrency, TargetRate: cfg.Rate}
	if cfg.Rate > 0 {
		res.Mode, res.Concurrency = "open", 0
	}
	d := &driver{cfg: cfg, pool: pool, waiter: waiter{waiting: map[uuid.UUID]chan struct{}{}}}
	if cfg.PrefillFinished > 0 {
		began := time.Now()
		if err := d.prefill(ctx, cfg.PrefillFinished); err != nil {
			return nil, err
		}
		res.PrefillSeconds = time.Since(began).Seconds()
	}

	if cfg.Burst > 0 {
		return d.burst(ctx, res)
	}
	loadStart := time.Now()
	publishedAtStart := d.publishedCount(ctx)
	runCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.load(runCtx) }()
	fmt.Fprintf(cfg.Log, "warming up for %s\n", cfg.Warmup)
	if err := sleep(ctx, cfg.Warmup); err != nil {
		return nil, err
	}
	before, err := d.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if err := pool.QueryRow(ctx, `SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'sagas'::regclass`).Scan(&res.SagaRows); err != nil {
		return nil, fmt.Errorf("bench: estimate saga rows: %w", err)
	}
	d.startedInWindow.Store(0)
	t0 := time.Now()
	fmt.Fprintf(cfg.Log, "measuring for %s\n", cfg.Duration)
	if err := sleep(ctx, cfg.Duration); err != nil {
		return nil, err
	}
	t1 := time.Now()
	after, err := d.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	stopLoad()
	wg.Wait()
	res.DurationSeconds = t1.Sub(t0).Seconds()
	res.Started = d.startedInWindow.Load()
	res.StartErrors = d.startErrors.Load()
	res.Shed = d.shed.Load()

	if err := d.latency(ctx, t0, t1, res); err != nil {
		return nil, err
	}
	if res.Completed == 0 {
		return nil, fmt.Errorf("bench: no saga finished in the %s window (%d started, %d refused): are participants %s running and consuming their queues?",
			cfg.Duration, res.Started, res.StartErrors, strings.Join(cfg.Participants, ", "))
	}
	res.SagasPerSecond = float64(res.Completed) / res.DurationSeconds
	if res.Completed > 0 {
		// The snapshots' own transactions and the waiter's polls are the benchmark's, not the
		// system's.
		own := after.ownQueries - before.ownQueries + 3
		res.CommitsPerSaga = float64(after.commits-before.commits-own) / float64(res.Completed)
	}
	if secs := after.cpuSeconds - before.cpuSeconds; secs > 0 {
		res.CoordinatorCPU = secs / res.DurationSeconds
	}
	res.CPUByProcess = cpuByGroup(before.machineCPU, after.machineCPU, res.DurationSeconds)
	if total := res.CPUByProcess["total"]; total > 0 && res.SagasPerSecond > 0 {
		res.CPUMillisPerSaga = total / res.SagasPerSecond * 1000
	}
	res.CoordinatorRSSMB, res.CoordinatorPeakMB = after.rssMB, after.peakMB

	fmt.Fprintf(cfg.Log, "waiting for the sagas in flight to finish\n")
	drainStart := time.Now()
	res.Unfinished, err = d.drain(ctx, t0, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	res.DrainSeconds = time.Since(drainStart).Seconds()
	if publishedAtStart < 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("messages per saga: the RabbitMQ management API at %s did not answer (is the rabbitmq_management plugin enabled? make services enables it)", redactURL(cfg.RabbitAPI)))
	} else if res.MessagesPerSaga, err = d.messagesPerSaga(ctx, publishedAtStart, loadStart); err != nil {
		return nil, err
	}

	if cfg.Baselines {
		fmt.Fprintf(cfg.Log, "baseline: confirmed persistent publishes\n")
		if res.BaselinePublish, err = PublishBaseline(ctx, cfg.AMQPURL, 3*time.Second); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Log, "baseline: single-row inserts\n")
		if res.BaselineInserts, err = InsertBaseline(ctx, cfg.DatabaseURL, 16, 3*time.Second); err != nil {
			return nil, err
		}
		if res.BaselinePublish > 0 && res.MessagesPerSaga != nil {
			res.BrokerEfficiency = res.SagasPerSecond * *res.MessagesPerSaga / res.BaselinePublish
		}
	}
	return res, nil
}

type driver struct {
	cfg  Config
	pool *pgxpool.Pool

	startedInWindow, startErrors, shed atomic.Int64
	inFlight                           atomic.Int64
	waiter                             waiter
}

func (d *driver) start(ctx context.Context, id uuid.UUID, i int64) bool {
	_, err := d.cfg.Client.StartSaga(ctx, &pb.StartSagaRequest{
		SagaId: id.String(), Definition: "bench-3step", Input: []byte(`{"n":` + strconv.FormatInt(i, 10) + `}`),
	})
	if err != nil {
		if ctx.Err() == nil {
			d.startErrors.Add(1)
			if status.Code(err) == codes.ResourceExhausted {
				d.shed.Add(1)
			}
		}
		return false
	}
	d.startedInWindow.Add(1)
	return true
}

// load drives starts until ctx ends.
func (d *driver) load(ctx context.Context) {
	var n atomic.Int64
	if d.cfg.Rate <= 0 {
		// Closed loop: each worker starts a saga and waits for it to finish.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); d.waiter.run(ctx, d.pool) }()
		for range d.cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					id := uuid.New()
					done := d.waiter.add(id)
					if !d.start(ctx, id, n.Add(1)) {
						d.waiter.forget(id)
						continue
					}
					select {
					case <-done:
					case <-ctx.Done():
					}
				}
			}()
		}
		wg.Wait()
		return
	}
	interval := time.Duration(float64(time.Second) / d.cfg.Rate)
	next := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		next = next.Add(interval)
		if wait := time.Until(next); wait > 0 {
			if sleep(ctx, wait) != nil {
				return
			}
		}
		if d.inFlight.Load() >= int64(d.cfg.MaxInFlight) {
			d.shed.Add(1)
			continue
		}
		d.inFlight.Add(1)
		wg.Add(1)
		go func(i int64) {
			defer wg.Done()
			defer d.inFlight.Add(-1)
			d.start(ctx, uuid.New(), i)
		}(n.Add(1))
	}
}

// waiter tells closed-loop workers when their saga finished. One goroutine asks the database
// about every saga in flight at once, so the benchmark adds one small query per poll, not one per
// saga; its queries are counted and left out of the commits per saga.
type waiter struct {
	mu      sync.Mutex
	waiting map[uuid.UUID]chan struct{}
	queries atomic.Int64
}

func (w *waiter) add(id uuid.UUID) <-chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	w.waiting[id] = ch
	w.mu.Unlock()
	return ch
}

// forget stops waiting for a saga that did not start.
func (w *waiter) forget(id uuid.UUID) {
	w.mu.Lock()
	delete(w.waiting, id)
	w.mu.Unlock()
}

func (w *waiter) run(ctx context.Context, pool *pgxpool.Pool) {
	// Every 20 ms: the latencies come from the coordinator's own timestamps, so the interval
	// only delays the next start of a worker a little; polling every 5 ms cost 7% of
	// PostgreSQL's time at 256 in flight.
	for sleep(ctx, 20*time.Millisecond) == nil {
		w.mu.Lock()
		ids := make([]uuid.UUID, 0, len(w.waiting))
		for id := range w.waiting {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		w.queries.Add(1)
		rows, err := pool.Query(ctx, `SELECT id FROM sagas WHERE id = ANY($1) AND finished_at IS NOT NULL`, ids)
		if err != nil {
			continue
		}
		done, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			continue
		}
		w.mu.Lock()
		for _, id := range done {
			if ch, ok := w.waiting[id]; ok {
				close(ch)
				delete(w.waiting, id)
			}
		}
		w.mu.Unlock()
	}
}

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

// burst starts cfg.Burst sagas with cfg.Concurrency start calls at a time, retrying those the
// coordinator pushes back, and waits until every one has finished.
func (d *driver) burst(ctx context.Context, res *Result) (*Result, error) {
	res.Mode, res.Burst = "burst", d.cfg.Burst
	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range d.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= d.cfg.Burst && ctx.Err() == nil; i = next.Add(1) {
				id := uuid.New()
				for !d.start(ctx, id, i) && ctx.Err() == nil {
					// Pushed back (or failed): the same id again is idempotent.
					_ = sleep(ctx, 50*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	res.BurstStartSeconds = time.Since(t0).Seconds()
	res.Started, res.StartErrors, res.Shed = d.startedInWindow.Load(), d.startErrors.Load(), d.shed.Load()
	fmt.Fprintf(d.cfg.Log, "burst: %d started in %.1fs; waiting for them to finish\n", res.Started, res.BurstStartSeconds)
	for {
		// FAILED sagas wait for an operator: they are not in flight, and are reported.
		open, failed, err := d.openSagas(ctx, t0)
		if err != nil {
			return nil, err
		}
		res.BurstInFlightPeak = max(res.BurstInFlightPeak, open)
		res.Unfinished = failed
		for _, pid := range d.cfg.CoordinatorPIDs {
			_, rss, peak := procStats(pid)
			res.CoordinatorRSSMB = max(res.CoordinatorRSSMB, rss)
			res.CoordinatorPeakMB = max(res.CoordinatorPeakMB, peak)
		}
		if open == 0 {
			break
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return nil, err
		}
	}
	res.BurstEndSeconds = time.Since(t0).Seconds()
	if err := d.pool.QueryRow(ctx, `SELECT count(*) FROM sagas WHERE definition_name = 'bench-3step' AND created_at >= $1 AND status = 'COMPLETED'`, t0).Scan(&res.Completed); err != nil {
		return nil, fmt.Errorf("bench: count completed sagas: %w", err)
	}
	res.SagasPerSecond = float64(res.Started-res.Unfinished) / res.BurstEndSeconds // every saga that reached a terminal state
	return res, nil
}

// prefill runs one benchmark saga to completion and copies it n times as finished sagas, in
// chunks, then analyzes the table so the planner knows its size.
func (d *driver) prefill(ctx context.Context, n int64) error {
	id := uuid.New()
	fmt.Fprintf(d.cfg.Log, "prefill: running template saga %s\n", id)
	if !d.start(ctx, id, 0) {
		return fmt.Errorf("bench: prefill: start the template saga failed")
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var done bool
		if err := d.pool.QueryRow(ctx, `SELECT finished_at IS NOT NULL FROM sagas WHERE id = $1`, id).Scan(&done); err != nil {
			return fmt.Errorf("bench: prefill: read the template saga: %w", err)
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: prefill: template saga %s did not finish within a minute (are the participants running?)", id)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	const chunk = 200_000
	for done := int64(0); done < n; {
		k := min(chunk, n-done)
		_, err := d.pool.Exec(ctx, `INSERT INTO sagas (id, definition_name, definition_version, status, input, request_hash, state, version, wake_at, created_at, updated_at, finished_at)
			SELECT gen_random_uuid(), t.definition_name, t.definition_version, t.status, t.input, t.request_hash, t.state, t.version, NULL,
				x.ts - interval '50 milliseconds', x.ts, x.ts
			FROM sagas t, generate_series(1, $2::bigint) g,
				LATERAL (SELECT g, now() - random() * interval '48 hours' AS ts) x
			WHERE t.id = $1`, id, k)
		if err != nil {
			return fmt.Errorf("bench: prefill: insert finished sagas: %w", err)
		}
		done += k
		fmt.Fprintf(d.cfg.Log, "prefill: %d of %d finished sagas\n", done, n)
	}
	if _, err := d.pool.Exec(ctx, `ANALYZE sagas`); err != nil {
		return fmt.Errorf("bench: prefill: analyze: %w", err)
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
	commits    int64
	ownQueries int64
	// machineCPU is the CPU seconds of every process on the machine, by processGroup.
	machineCPU map[string]procCPU
	cpuSeconds float64
	rssMB      float64
	peakMB     float64
}

func (d *driver) snapshot(ctx context.Context) (snapshot, error) {
	s := snapshot{ownQueries: d.waiter.queries.Load()}
	// Make this backend's own counters current; others flush at least once a second when busy.
	if _, err := d.pool.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		return s, fmt.Errorf("bench: flush statistics: %w", err)
	}
	if err := d.pool.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&s.commits); err != nil {
		return s, fmt.Errorf("bench: read pg_stat_database: %w", err)
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

// messagesPerSaga divides the messages published since the load started by the benchmark's
// sagas that finished since then. The sagas have drained, so nothing more is published; the
// count is read once it has stayed unchanged for StatsSettle, because the management API
// updates it only once per statistics interval. Taken over the window alone, the count was
// up to one interval stale at each end, and the ratio read 4.9 to 6.1 for a saga that publishes
// exactly 6 messages.
func (d *driver) messagesPerSaga(ctx context.Context, publishedAtStart int64, loadStart time.Time) (*float64, error) {
	var finished int64
	if err := d.pool.QueryRow(ctx, `SELECT count(*) FROM sagas WHERE definition_name = 'bench-3step' AND created_at >= $1 AND finished_at IS NOT NULL`,
		loadStart).Scan(&finished); err != nil {
		return nil, fmt.Errorf("bench: count finished sagas: %w", err)
	}
	fmt.Fprintf(d.cfg.Log, "waiting for the broker's message count to settle\n")
	last, since := d.publishedCount(ctx), time.Now()
	for deadline := time.Now().Add(5 * d.cfg.StatsSettle); time.Since(since) < d.cfg.StatsSettle && time.Now().Before(deadline); {
		if err := sleep(ctx, d.cfg.StatsSettle/12); err != nil {
			return nil, err
		}
		if n := d.publishedCount(ctx); n != last {
			last, since = n, time.Now()
		}
	}
	if last < 0 || finished == 0 {
		return nil, nil
	}
	v := float64(last-publishedAtStart) / float64(finished)
	return &v, nil
}

// publishedCount reads how many messages were published to the coordinator's vhost, from the
// management API; -1 when unavailable.
func (d *driver) publishedCount(ctx context.Context) int64 {
	vhost := "/"
	if u, err := url.Parse(d.cfg.AMQPURL); err == nil && len(u.Path) > 1 {
		vhost = strings.TrimPrefix(u.Path, "/")
	}
	api, err := url.Parse(d.cfg.RabbitAPI)
	if err != nil {
		return -1
	}
	user := api.User
	api.User = nil
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.String()+"/api/vhosts/"+url.PathEscape(vhost), nil)
	if err != nil {
		return -1
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v struct {
		MessageStats struct {
			Publish int64 `json:"publish"`
		} `json:"message_stats"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
		return -1
	}
	return v.MessageStats.Publish
}

// redactURL returns raw with its password hidden.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// procCPU is one process's name group and CPU seconds.
type procCPU struct {
	group   string
	seconds float64
}

// machineCPU reads the CPU seconds of every process in /proc, by pid; nil without /proc.
func machineCPU() map[string]procCPU {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make(map[string]procCPU, len(entries))
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		if comm, secs, ok := parseStat(string(b)); ok {
			out[pid] = procCPU{group: processGroup(comm), seconds: secs}
		}
	}
	return out
}

// parseStat reads the command name and the CPU seconds (user and system) of a /proc/PID/stat
// line.
func parseStat(s string) (comm string, cpuSeconds float64, ok bool) {
	// The command name is in parentheses and may contain spaces and parentheses itself.
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) <= 13 {
		return "", 0, false
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return s[open+1 : end], (ut + st) / 100, true // USER_HZ is 100 on Linux
}

// processGroup names the group of a process by its command name.
func processGroup(comm string) string {
	switch {
	case strings.HasPrefix(comm, "postgres"), strings.HasPrefix(comm, "postmaster"):
		return "postgres"
	case strings.HasPrefix(comm, "beam"), comm == "erl_child_setup", comm == "epmd", comm == "inet_gethost":
		return "rabbitmq"
	case comm == "coordinator", comm == "participant-sim", comm == "sagalab", comm == "sagactl":
		return comm
	}
	return "other"
}

// cpuByGroup turns two machineCPU readings secs apart into cores by group, with their total. A
// process that started between them counts from zero; one that ended is not counted.
func cpuByGroup(before, after map[string]procCPU, secs float64) map[string]float64 {
	if len(after) == 0 || secs <= 0 {
		return nil
	}
	out := map[string]float64{}
	for pid, a := range after {
		used := a.seconds
		if b, ok := before[pid]; ok && b.group == a.group {
			used -= b.seconds
		}
		if used > 0 {
			out[a.group] += used / secs
			out["total"] += used / secs
		}
	}
	return out
}

// procStats reads a process's CPU seconds and current and peak RSS in MB from /proc.
func procStats(pid int) (cpu, rssMB, peakMB float64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		_, cpu, _ = parseStat(string(b))
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			kb, _ := strconv.ParseFloat(f[1], 64)
			switch f[0] {
			case "VmRSS:":
				rssMB = kb / 1024
			case "VmHWM:":
				peakMB = kb / 1024
			}
		}
	}
	return cpu, rssMB, peakMB
}

// PublishBaseline measures confirmed persistent publishes per second, 64 in flight on one channel,
// to a durable scratch queue that a consumer drains, acknowledging each message.
func PublishBaseline(ctx context.Context, amqpURL string, d time.Duration) (float64, error) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return 0, fmt.Errorf("bench: baseline publish: dial: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	// Durable, so that persistent messages are really written, and drained by a consumer that
	// acknowledges each message, as every sagacoord queue is: the broker's work per message is
	// then what it is for a command or a reply.
	const queue = "sagacoord.bench.baseline"
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return 0, fmt.Errorf("bench: baseline publish: scratch queue: %w", err)
	}
	defer func() { _, _ = ch.QueueDelete(queue, false, false, false) }()
	if _, err := ch.QueuePurge(queue, false); err != nil {
		return 0, err
	}
	cch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	if err := cch.Qos(256, 0, false); err != nil {
		return 0, err
	}
	deliveries, err := cch.Consume(queue, "", false, true, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("bench: baseline publish: consume: %w", err)
	}
	go func() {
		for dv := range deliveries {
			_ = dv.Ack(false)
		}
	}()
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	body := make([]byte, 300)
	var confirmed int64
	end := time.Now().Add(d)
	start := time.Now()
	for time.Now().Before(end) && ctx.Err() == nil {
		var batch []*amqp.DeferredConfirmation
		for range 64 {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
			if err != nil {
				return 0, fmt.Errorf("bench: baseline publish: %w", err)
			}
			batch = append(batch, dc)
		}
		for _, dc := range batch {
			if ok, err := dc.WaitContext(ctx); err == nil && ok {
				confirmed++
			}
		}
	}
	return float64(confirmed) / time.Since(start).Seconds(), nil
}

// InsertBaseline measures single-row insert transactions per second with the given number of
// clients, into a temporary table.
func InsertBaseline(ctx context.Context, databaseURL string, clients int, d time.Duration) (float64, error) {
	pool, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	table := "bench_baseline_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	if _, err := pool.Exec(ctx, `CREATE UNLOGGED TABLE IF NOT EXISTS `+table+` (id bigserial primary key, v text)`); err != nil {
		return 0, fmt.Errorf("bench: baseline insert: %w", err)
	}
	// UNLOGGED would flatter the figure; switch to logged so each commit waits for the WAL flush.
	if _, err := pool.Exec(ctx, `ALTER TABLE `+table+` SET LOGGED`); err != nil {
		return 0, err
	}
	defer pool.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS `+table)
	var n atomic.Int64
	end := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (v) VALUES ('x')`); err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
