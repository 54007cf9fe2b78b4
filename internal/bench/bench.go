// Package bench measures a running sagacoord system: it starts 3-step sagas over no-op
// participants (which still use the barrier) at a target rate (open loop) or concurrency (closed
// loop) and reports throughput, start-to-terminal latency, PostgreSQL commits and broker messages
// per saga, the coordinator's CPU and memory, and, in the same run, the raw baselines of the same
// services (confirmed persistent publishes per second, single-row inserts per second), so that
// ratios come from one run on a noisy machine.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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
	// ParticipantDatabase is the database of the participants' barrier, for its transactions.
	// Default test (scripts/bench.sh's).
	ParticipantDatabase string
	// MetricsURLs are the /metrics endpoints of the processes whose statements and commits the
	// breakdown reports, by name ("coordinator", "participants"); optional.
	MetricsURLs map[string]string
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
	if c.ParticipantDatabase == "" {
		c.ParticipantDatabase = "test"
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
	// Unfinished counts sagas started in the window and not terminal two minutes after it.
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
	// Breakdown says where the cost of a saga goes.
	Breakdown *Breakdown `json:"per_saga,omitempty"`
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
	d := &driver{cfg: cfg, pool: pool}
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
	w, err := d.measureWindow(ctx, res)
	if err != nil {
		return nil, err
	}
	if err := d.windowFigures(ctx, res, w); err != nil {
		return nil, err
	}
	if err := d.afterWindow(ctx, res, w); err != nil {
		return nil, err
	}
	return res, nil
}

// window is what the measured window leaves for the figures.
type window struct {
	loadStart     time.Time
	brokerAtStart brokerRaw // the broker's counts when the load began
	brokerKnown   bool      // whether they could be read
	t0, t1        time.Time
	before, after snapshot
}

// measureWindow runs the load through the warm-up and the measured window, then stops it.
func (d *driver) measureWindow(ctx context.Context, res *Result) (window, error) {
	cfg := d.cfg
	w := window{loadStart: time.Now()}
	w.brokerAtStart, w.brokerKnown = d.brokerCounts(ctx)
	runCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { d.load(runCtx) })
	defer func() { stopLoad(); wg.Wait() }()
	fmt.Fprintf(cfg.Log, "warming up for %s\n", cfg.Warmup)
	if err := sleep(ctx, cfg.Warmup); err != nil {
		return w, err
	}
	var err error
	if w.before, err = d.snapshot(ctx); err != nil {
		return w, err
	}
	if err := d.pool.QueryRow(ctx, `SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'sagas'::regclass`).Scan(&res.SagaRows); err != nil {
		return w, fmt.Errorf("bench: estimate saga rows: %w", err)
	}
	d.startedInWindow.Store(0)
	w.t0 = time.Now()
	fmt.Fprintf(cfg.Log, "measuring for %s\n", cfg.Duration)
	if err := sleep(ctx, cfg.Duration); err != nil {
		return w, err
	}
	w.t1 = time.Now()
	if w.after, err = d.snapshot(ctx); err != nil {
		return w, err
	}
	return w, nil
}

// windowFigures computes the window's throughput, latency, commits per saga, CPU and memory.
func (d *driver) windowFigures(ctx context.Context, res *Result, w window) error {
	cfg := d.cfg
	res.DurationSeconds = w.t1.Sub(w.t0).Seconds()
	res.Started = d.startedInWindow.Load()
	res.StartErrors = d.startErrors.Load()
	res.Shed = d.shed.Load()
	if err := d.latency(ctx, w.t0, w.t1, res); err != nil {
		return err
	}
	if res.Completed == 0 {
		return fmt.Errorf("bench: no saga finished in the %s window (%d started, %d refused): are participants %s running and consuming their queues?",
			cfg.Duration, res.Started, res.StartErrors, strings.Join(cfg.Participants, ", "))
	}
	res.SagasPerSecond = float64(res.Completed) / res.DurationSeconds
	// The snapshots' own transactions are the benchmark's, not the system's.
	own := int64(3)
	res.CommitsPerSaga = float64(w.after.commits-w.before.commits-own) / float64(res.Completed)
	if secs := w.after.cpuSeconds - w.before.cpuSeconds; secs > 0 {
		res.CoordinatorCPU = secs / res.DurationSeconds
	}
	res.CPUByProcess = cpuByGroup(w.before.machineCPU, w.after.machineCPU, res.DurationSeconds)
	if total := res.CPUByProcess["total"]; total > 0 && res.SagasPerSecond > 0 {
		res.CPUMillisPerSaga = total / res.SagasPerSecond * 1000
	}
	res.CoordinatorRSSMB, res.CoordinatorPeakMB = w.after.rssMB, w.after.peakMB
	res.Breakdown = breakdown(w.before, w.after, res.Completed)
	if res.Breakdown != nil {
		res.Breakdown.CPUMillis = map[string]float64{}
		for g, cores := range res.CPUByProcess {
			res.Breakdown.CPUMillis[g] = cores / res.SagasPerSecond * 1000
		}
	}
	return nil
}

// afterWindow waits for the sagas in flight, counts the broker's messages per saga and takes the
// baselines.
func (d *driver) afterWindow(ctx context.Context, res *Result, w window) error {
	cfg := d.cfg
	fmt.Fprintf(cfg.Log, "waiting for the sagas in flight to finish\n")
	drainStart := time.Now()
	var err error
	if res.Unfinished, err = d.drain(ctx, w.t0, 2*time.Minute); err != nil {
		return err
	}
	res.DrainSeconds = time.Since(drainStart).Seconds()
	var broker *BrokerCounts
	if !w.brokerKnown {
		res.Warnings = append(res.Warnings, fmt.Sprintf("messages per saga: the RabbitMQ management API at %s did not answer (is the rabbitmq_management plugin enabled? make services enables it)", redactURL(cfg.RabbitAPI)))
	} else if broker, err = d.brokerPerSaga(ctx, w.brokerAtStart, w.loadStart); err != nil {
		return err
	}
	if broker != nil {
		res.MessagesPerSaga = &broker.Published
		if res.Breakdown != nil {
			res.Breakdown.Broker = broker
		}
	}
	if !cfg.Baselines {
		return nil
	}
	fmt.Fprintf(cfg.Log, "baseline: confirmed persistent publishes\n")
	if res.BaselinePublish, err = PublishBaseline(ctx, cfg.AMQPURL, 3*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Log, "baseline: single-row inserts\n")
	if res.BaselineInserts, err = InsertBaseline(ctx, cfg.DatabaseURL, 16, 3*time.Second); err != nil {
		return err
	}
	if res.BaselinePublish > 0 && res.MessagesPerSaga != nil {
		res.BrokerEfficiency = res.SagasPerSecond * *res.MessagesPerSaga / res.BaselinePublish
	}
	return nil
}
