package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/client"
	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/cli"
)

// Options configure Run. Zero values take the documented defaults.
type Options struct {
	// Seed overrides the scenario's seed when non-zero.
	Seed uint64
	// BinDir holds the coordinator and participant-sim binaries, and in testhooks/ the coordinator
	// built with -tags testhooks for coordinators started with a --test-* flag; empty means `go
	// build` them from the module this runs in (or ./bin without a Go toolchain).
	BinDir string
	// DatabaseURL is the shared PostgreSQL database where the scenario makes its schemas.
	// Default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable.
	DatabaseURL string
	// AMQPURL is the shared RabbitMQ (its vhost is replaced by the scenario's).
	// Default amqp://guest:guest@127.0.0.1:5672/.
	AMQPURL string
	// RabbitAPI is the shared broker's management API. Default http://guest:guest@127.0.0.1:15672.
	RabbitAPI string
	// PostgresBin holds initdb and pg_ctl for private instances. Default DefaultPostgresBin.
	PostgresBin string
	// Broken starts every coordinator with --test-disable-outbox (the test build's hook): the
	// deliberately broken build whose runs must fail.
	Broken bool
	// Keep leaves the schemas and the vhost in place after the run (logs are always kept).
	Keep bool
	// WorkDir receives each run's logs and configuration. Default a new temp dir.
	WorkDir string
	// Progress receives a line per step; default io.Discard.
	Progress io.Writer
	// SampleInterval is how often the runner samples the tables for the report. Default 250ms.
	SampleInterval time.Duration
}

func (o Options) withDefaults() Options {
	if o.DatabaseURL == "" {
		o.DatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	if o.AMQPURL == "" {
		o.AMQPURL = "amqp://guest:guest@127.0.0.1:5672/"
	}
	if o.RabbitAPI == "" {
		o.RabbitAPI = "http://guest:guest@127.0.0.1:15672"
	}
	if o.PostgresBin == "" {
		o.PostgresBin = DefaultPostgresBin
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.SampleInterval <= 0 {
		o.SampleInterval = 250 * time.Millisecond
	}
	return o
}

// Result statuses.
const (
	StatusPassed  = "passed"
	StatusFailed  = "failed"
	StatusSkipped = "skipped"
	StatusError   = "error"
)

// Result is the outcome of one scenario run.
type Result struct {
	Scenario *Scenario `json:"scenario"`
	Seed     uint64    `json:"seed"`
	Broken   bool      `json:"broken,omitempty"`
	// Status is passed (every invariant held), failed (one did not), skipped (a private
	// instance's binaries are missing; Reason says which) or error (the run itself broke).
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`

	Invariants []InvariantResult `json:"invariants"`
	Workload   workloadResult    `json:"workload"`
	// Final counts sagas (or transactions) by status.
	Final map[string]int `json:"final"`

	Faults  []AppliedFault `json:"faults"`
	Events  []Event        `json:"events"`
	Samples []Sample       `json:"samples"`

	// LastHeal is when the last fault was healed, in seconds from the start of the workload.
	LastHeal float64 `json:"last_heal_s"`
	// Converged is when the last saga or transaction reached its final state (seconds).
	Converged float64 `json:"converged_s"`
	// ConvergedBeforeHeal is when the last of those started before the last heal reached it.
	ConvergedBeforeHeal float64 `json:"converged_before_heal_s"`
	// Convergence is ConvergedBeforeHeal - LastHeal (at least 0): how long after the last heal
	// the work started until then was all final; -1 if not everything finished (G1 failed).
	Convergence float64 `json:"convergence_s"`
	// Figures compares runs under a partition (the CAP/BASE pair).
	Figures Figures `json:"figures"`
	// Elapsed is the whole run, setup and checks included (seconds).
	Elapsed float64 `json:"elapsed_s"`
	LogDir  string  `json:"log_dir"`
}

// Figures are the numbers the CAP/BASE comparison puts side by side.
type Figures struct {
	// FaultWindow is the first fault's start to the last heal (seconds).
	FaultFrom float64 `json:"fault_from_s"`
	FaultTo   float64 `json:"fault_to_s"`
	// AcceptedDuringFaults counts requests accepted inside the window.
	AcceptedDuringFaults int `json:"accepted_during_faults"`
	// FinishedDuringFaults counts sagas or transactions that reached a terminal state inside it.
	FinishedDuringFaults int     `json:"finished_during_faults"`
	ThroughputDuring     float64 `json:"throughput_during_faults_per_s"`
	ThroughputOverall    float64 `json:"throughput_overall_per_s"`
	// WorstMoneyInFlight is the most money debited but not (yet) credited or refunded at any
	// sample: the initial total minus the accounts' balances.
	WorstMoneyInFlight int64 `json:"worst_money_in_flight"`
	// WorstHeld is the most money held by prepared 2PC transactions at any sample (unavailable
	// to anyone else while the transaction is in doubt).
	WorstHeld int64 `json:"worst_held"`
	// BlockedPrepared is the total time participants held a prepared transaction's reservation
	// (2PC; seconds), and BlockedPreparedMax the longest.
	BlockedPrepared    float64 `json:"blocked_prepared_s"`
	BlockedPreparedMax float64 `json:"blocked_prepared_max_s"`
	BlockedNote        string  `json:"blocked_note,omitempty"`
}

// AppliedFault is a timeline entry as it happened.
type AppliedFault struct {
	ScheduledFault
	AppliedAt float64 `json:"applied_s"`
	HealedAt  float64 `json:"healed_s"`
	Error     string  `json:"error,omitempty"`
}

// Event is a line of the run's log (process exits, restarts, fault steps).
type Event struct {
	At   float64 `json:"t_s"`
	Text string  `json:"text"`
}

// Sample is the state of the tables at one moment.
type Sample struct {
	T             float64 `json:"t"`
	Open          int     `json:"open"`
	Completed     int     `json:"completed"` // COMPLETED or COMMITTED
	Compensated   int     `json:"compensated"`
	Failed        int     `json:"failed"`
	Outbox        int     `json:"outbox"`
	MoneyInFlight int64   `json:"money_in_flight"`
	Held          int64   `json:"held,omitempty"`
	Accepted      int     `json:"accepted"`
}

// run is the state of one scenario run.
type run struct {
	s    *Scenario
	opts Options
	seed uint64
	id   string
	res  *Result
	// t0 is the start of the workload (UnixNano); supervisors read it from their goroutines.
	t0 atomic.Int64

	work, data string // logs and configs; private instance data
	bins       string
	schema     string // coordinator schema; participants' schemas are schema + "_" + name
	vhost      string
	pgBase     string // database URL without search_path
	amqpBase   string // AMQP URL of the scenario's vhost
	mgmt       management
	pg         *privatePostgres
	mq         *privateRabbit
	links      *links
	admin      *pgxpool.Pool
	procs      map[string]*process
	conns      []*client.Conn
	coordAddr  map[string]string
	defName    string
	initial    int64
	transfer   []string // schemas of transfer participants
	taps       *taps
	injected   int // poison messages published

	mu     sync.Mutex
	pmu    sync.Mutex // serialises progress lines
	events []Event
	// selfHealed is when the last process that crashed on its own (a crash point of the
	// scenario) was ready again.
	selfHealed time.Time
}

// restarted waits until a process restarted by its supervisor is ready and notes the time.
func (r *run) restarted(p *process) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		r.event("%v", err)
		return
	}
	r.mu.Lock()
	r.selfHealed = time.Now()
	r.mu.Unlock()
}

// Run runs one scenario and returns its result; it never returns nil. A run that could not be
// set up has Status error (or skipped) and says why.
func Run(ctx context.Context, s *Scenario, opts Options) *Result {
	opts = opts.withDefaults()
	seed := s.Seed
	if opts.Seed != 0 {
		seed = opts.Seed
	}
	var idb [4]byte
	_, _ = rand.Read(idb[:])
	r := &run{s: s, opts: opts, seed: seed, id: hex.EncodeToString(idb[:]), procs: map[string]*process{}, coordAddr: map[string]string{}}
	r.res = &Result{Scenario: s, Seed: seed, Broken: opts.Broken, Final: map[string]int{}}
	start := time.Now()
	r.t0.Store(start.UnixNano())
	defer func() { r.res.Elapsed = time.Since(start).Seconds() }()
	r.progress("== %s (seed %d)", s.Name, seed)
	err := r.execute(ctx)
	r.res.Events = r.events
	switch {
	case errors.Is(err, ErrSkipped):
		r.res.Status, r.res.Reason = StatusSkipped, err.Error()
	case err != nil:
		r.res.Status, r.res.Reason = StatusError, err.Error()
	default:
		r.res.Status = StatusPassed
		for _, inv := range r.res.Invariants {
			if !inv.Passed {
				r.res.Status = StatusFailed
			}
		}
	}
	r.progress("   %s %s", strings.ToUpper(r.res.Status), r.res.Reason)
	return r.res
}

func (r *run) progress(format string, args ...any) {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	fmt.Fprintf(r.opts.Progress, format+"\n", args...)
}

// since returns seconds from the start of the workload.
func (r *run) since(t time.Time) float64 { return t.Sub(r.start()).Seconds() }

func (r *run) start() time.Time { return time.Unix(0, r.t0.Load()) }

func (r *run) event(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.events = append(r.events, Event{At: r.since(time.Now()), Text: text})
	r.mu.Unlock()
	r.progress("   %6.1fs %s", r.since(time.Now()), text)
}

func (r *run) execute(ctx context.Context) (err error) {
	if r.opts.WorkDir == "" {
		if r.work, err = os.MkdirTemp("", "sagacoord-chaos-"); err != nil {
			return err
		}
	} else {
		r.work = r.opts.WorkDir
	}
	r.work = filepath.Join(r.work, r.s.Name+"-seed"+strconv.FormatUint(r.seed, 10)+"-"+r.id)
	if err := os.MkdirAll(r.work, 0o755); err != nil {
		return err
	}
	_ = os.Chmod(filepath.Dir(r.work), 0o755)
	r.res.LogDir = r.work
	if r.data, err = os.MkdirTemp("", "sagacoord-chaos-data-"); err != nil {
		return err
	}
	_ = os.Chmod(r.data, 0o755)
	defer os.RemoveAll(r.data)
	defer r.teardown()

	if err := r.setupServices(ctx); err != nil {
		return err
	}
	if r.bins, err = locateBinaries(ctx, r.opts.BinDir, r.work, r.opts.Broken || r.s.usesTestHooks()); err != nil {
		return err
	}
	schedule := r.s.Schedule(r.seed)
	if err := r.setupLinks(schedule); err != nil {
		return err
	}
	if err := r.startProcesses(ctx); err != nil {
		return err
	}
	if err := r.snapshotInitial(ctx); err != nil {
		return err
	}
	if slices.ContainsFunc(schedule, func(f ScheduledFault) bool { return f.Kind == FaultDuplicate }) {
		if r.taps, err = newTaps(ctx, r.amqpBase, r.s); err != nil {
			return err
		}
	}

	// The workload, the timeline and the sampler run together from t0.
	reqs := r.s.generate(r.seed)
	r.t0.Store(time.Now().UnixNano())
	d := &driver{s: r.s, conns: r.workloadConns(), defName: r.defName, t0: r.start()}
	r.progress("   workload: %d %s starts, concurrency %d", len(reqs), r.s.Workload.Kind, r.s.Workload.Concurrency)
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var wg sync.WaitGroup
	var wres workloadResult
	wg.Go(func() { wres = d.run(runCtx, reqs) })
	applied := make([]AppliedFault, len(schedule))
	var fwg sync.WaitGroup
	for i, f := range schedule {
		fwg.Go(func() { applied[i] = r.apply(runCtx, f) })
	}
	samplerDone := make(chan struct{})
	stopSampler := make(chan struct{})
	go func() { defer close(samplerDone); r.sample(ctx, stopSampler, d) }()

	wg.Wait()
	r.event("workload done: %d accepted, %d rejected in %.1fs", wres.Accepted, wres.Rejected, wres.Elapsed.Seconds())
	fwg.Wait()
	r.res.Faults = applied
	for _, a := range applied {
		r.res.LastHeal = max(r.res.LastHeal, a.HealedAt, a.AppliedAt)
	}
	r.res.Workload = wres
	if len(schedule) > 0 {
		r.event("every fault healed")
	}

	r.settle(ctx)
	r.mu.Lock()
	if !r.selfHealed.IsZero() {
		r.res.LastHeal = max(r.res.LastHeal, r.since(r.selfHealed))
	}
	r.mu.Unlock()
	close(stopSampler)
	<-samplerDone
	if r.taps != nil {
		r.taps.close(ctx)
		r.taps = nil
	}
	r.res.Invariants = r.check(ctx)
	r.figures()
	return nil
}

func (r *run) workloadConns() []*client.Conn {
	var out []*client.Conn
	for i, c := range r.s.Topology.Coordinators {
		if c.Workload == nil || *c.Workload {
			out = append(out, r.conns[i])
		}
	}
	return out
}

func (r *run) setupServices(ctx context.Context) error {
	t := r.s.Topology
	r.schema = "chaos_" + r.id
	if t.PrivatePostgres {
		r.progress("   private PostgreSQL (%s)", r.opts.PostgresBin)
		pg, err := startPrivatePostgres(ctx, r.opts.PostgresBin, r.data)
		if err != nil {
			return fmt.Errorf("private PostgreSQL: %w", err)
		}
		r.pg = pg
		r.pgBase = pg.url()
	} else {
		r.pgBase = r.opts.DatabaseURL
	}
	if t.PrivateRabbitMQ {
		r.progress("   private RabbitMQ node")
		mq, err := startPrivateRabbit(ctx, r.data, r.id)
		if err != nil {
			return fmt.Errorf("private RabbitMQ: %w", err)
		}
		r.mq = mq
		r.vhost = "/"
		r.amqpBase = mq.url("")
	} else {
		r.vhost = "chaos-" + r.id
		r.mgmt = newManagement(r.opts.RabbitAPI)
		if err := r.mgmt.createVHost(ctx, r.vhost); err != nil {
			return err
		}
		r.amqpBase = withPath(r.opts.AMQPURL, "/"+r.vhost)
	}
	if err := createSchema(ctx, r.pgBase, r.schema); err != nil {
		return fmt.Errorf("create schema %s: %w", r.schema, err)
	}
	pc, err := pgxpool.ParseConfig(withParams(r.pgBase, "application_name", "chaos-runner-"+r.id))
	if err != nil {
		return err
	}
	pc.MaxConns = 4
	if r.admin, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		return err
	}
	r.links = newLinks()
	return nil
}

func withPath(raw, path string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	rest := raw[i+3:]
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		rest = rest[:j]
	}
	return raw[:i+3] + rest + path
}

// linkName names the proxy of PROCESS->END.
func linkName(proc, end string) string { return proc + "->" + end }

func (r *run) setupLinks(schedule []ScheduledFault) error {
	pgHost, err := hostPort(r.pgBase, "5432")
	if err != nil {
		return err
	}
	mqHost, err := hostPort(r.amqpBase, "5672")
	if err != nil {
		return err
	}
	for _, f := range schedule {
		if !isLinkFault(f.Kind) {
			continue
		}
		proc, end, _ := strings.Cut(f.Target, "->")
		up := pgHost
		if end == EndRabbitMQ {
			up = mqHost
		}
		if _, err := r.links.add(linkName(proc, end), up); err != nil {
			return err
		}
	}
	return nil
}

// urlsOf returns the database and AMQP URLs of a process, through its proxies where it has them.
func (r *run) urlsOf(name string, searchPath bool) (string, string) {
	kv := []string{"application_name", "chaos-" + r.id + "-" + name}
	if searchPath {
		kv = append(kv, "search_path", r.schema)
	}
	db := withParams(r.pgBase, kv...)
	mq := r.amqpBase
	if p, err := r.links.get(linkName(name, EndPostgres)); err == nil {
		db = withHost(db, p.Listen)
	}
	if p, err := r.links.get(linkName(name, EndRabbitMQ)); err == nil {
		mq = withHost(mq, p.Listen)
	}
	return db, mq
}

func (r *run) startProcesses(ctx context.Context) error {
	t := r.s.Topology
	readyCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for i, c := range t.Coordinators {
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		r.coordAddr[c.Name] = addr
		db, mq := r.urlsOf(c.Name, true)
		// Small pools: the machine's PostgreSQL is shared (max_connections 100); a flag of the
		// scenario's comes later and wins.
		args := []string{"serve", "--migrate", "--database-url", db, "--amqp-url", mq, "--listen", addr, "--name", c.Name, "--queue-type", t.QueueType, "--db-max-conns", "6"}
		args = append(args, c.Flags...)
		if r.opts.Broken {
			args = append(args, "--test-disable-outbox")
		}
		first := c.FirstRunFlags
		bin := filepath.Join(r.bins, "coordinator")
		if r.opts.Broken || c.usesTestHooks() {
			bin = filepath.Join(r.bins, testHooksDir, "coordinator")
		}
		p := &process{
			name: c.Name, role: "coordinator", bin: bin,
			args: func(isFirst bool) []string {
				if isFirst {
					return append(slices.Clone(args), first...)
				}
				return args
			},
			logPath:       filepath.Join(r.work, c.Name+".log"),
			restartOnExit: c.RestartOnExit.D(),
			event:         r.event,
			restarted:     r.restarted,
			ready: func(_ context.Context, p *process, from int64) error {
				if p.logContains(from, "coordinator listening on") {
					return nil
				}
				return errors.New("no 'coordinator listening' line yet")
			},
		}
		r.procs[c.Name] = p
		conn, err := client.New(addr)
		if err != nil {
			return err
		}
		r.conns = append(r.conns, conn)
		if err := p.start(); err != nil {
			return err
		}
		// The first coordinator migrates alone; the others find the schema ready.
		if i == 0 {
			if err := p.waitReady(readyCtx); err != nil {
				return err
			}
		}
	}
	for _, c := range t.Coordinators[1:] {
		if err := r.procs[c.Name].waitReady(readyCtx); err != nil {
			return err
		}
	}
	r.event("%d coordinator(s) ready", len(t.Coordinators))
	if r.s.Workload.Kind == WorkloadSaga {
		if err := r.register(readyCtx); err != nil {
			return err
		}
	}
	for _, sim := range t.Sims {
		cfgPath := filepath.Join(r.work, sim.Name+".sim.json")
		cfg := map[string]any{"seed": r.seed, "schema_prefix": r.schema + "_", "participants": sim.Participants}
		b, _ := json.MarshalIndent(cfg, "", "  ")
		if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
			return err
		}
		db, mq := r.urlsOf(sim.Name, false)
		args := append([]string{"--config", cfgPath, "--database-url", db, "--amqp-url", mq, "--queue-type", t.QueueType, "--db-max-conns", "8"}, sim.Flags...)
		p := &process{
			name: sim.Name, role: "participant-sim", bin: filepath.Join(r.bins, "participant-sim"),
			args:          func(bool) []string { return args },
			logPath:       filepath.Join(r.work, sim.Name+".log"),
			restartOnExit: sim.RestartOnExit.D(),
			event:         r.event,
			restarted:     r.restarted,
			ready: func(_ context.Context, p *process, from int64) error {
				if p.logContains(from, "participant-sim ready") {
					return nil
				}
				return errors.New("no 'participant-sim ready' line yet")
			},
		}
		r.procs[sim.Name] = p
		if err := p.start(); err != nil {
			return err
		}
	}
	for _, sim := range t.Sims {
		if err := r.procs[sim.Name].waitReady(readyCtx); err != nil {
			return err
		}
	}
	r.event("%d participant-sim(s) ready", len(t.Sims))
	return nil
}

func (r *run) register(ctx context.Context) error {
	path := r.s.Workload.Definition
	if !filepath.IsAbs(path) {
		path = filepath.Join(r.s.dir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("workload.definition: %w", err)
	}
	def, err := cli.ParseDefinition(path, b)
	if err != nil {
		return fmt.Errorf("workload.definition: %w", err)
	}
	conn := r.workloadConns()[0]
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := conn.Saga.RegisterDefinition(cctx, &sagacoordv1.RegisterDefinitionRequest{Definition: def})
	if err != nil {
		return fmt.Errorf("register definition %s: %w", path, err)
	}
	r.defName = resp.GetDefinition().GetName()
	r.event("definition %s version %d registered", r.defName, resp.GetDefinition().GetVersion())
	return nil
}

// schemaOf is participant-sim's schema of a participant: prefix + name, lower-cased, every
// character but letters, digits and '_' replaced by '_'.
func schemaOf(prefix, name string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, c := range strings.ToLower(name) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func (r *run) snapshotInitial(ctx context.Context) error {
	for _, sim := range r.s.Topology.Sims {
		for _, p := range sim.Participants {
			if p.Kind == "transfer" {
				r.transfer = append(r.transfer, schemaOf(r.schema+"_", p.Name))
			}
		}
	}
	total, err := r.money(ctx)
	if err != nil {
		return fmt.Errorf("read the initial balances: %w", err)
	}
	r.initial = total
	return nil
}

// money sums the balances of every transfer participant.
func (r *run) money(ctx context.Context) (int64, error) {
	if len(r.transfer) == 0 {
		return 0, nil
	}
	var parts []string
	for _, s := range r.transfer {
		parts = append(parts, "(SELECT coalesce(sum(balance), 0) FROM "+pgx.Identifier{s, "accounts"}.Sanitize()+")")
	}
	var total int64
	err := r.admin.QueryRow(ctx, "SELECT ("+strings.Join(parts, " + ")+")::bigint").Scan(&total)
	return total, err
}

func (r *run) table(name string) string { return pgx.Identifier{r.schema, name}.Sanitize() }

// mainTable is the table of the workload's kind.
func (r *run) mainTable() string {
	if r.s.Workload.Kind == WorkloadTwoPC {
		return r.table("transactions")
	}
	return r.table("sagas")
}

// terminalSet are the statuses after which nothing changes (plus FAILED when allowed).
func (r *run) terminal(status string) bool {
	switch status {
	case "COMPLETED", "COMPENSATED", "COMMITTED", "ABORTED":
		return true
	case "FAILED":
		return r.s.Expect.AllowFailed
	}
	return false
}

func (r *run) sample(ctx context.Context, stop <-chan struct{}, d *driver) {
	t := time.NewTicker(r.opts.SampleInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		sm, err := r.sampleOnce(sctx)
		cancel()
		if err != nil {
			continue // the database may be down on purpose
		}
		d.mu.Lock()
		sm.Accepted = d.res.Accepted
		d.mu.Unlock()
		r.mu.Lock()
		r.res.Samples = append(r.res.Samples, sm)
		r.mu.Unlock()
	}
}

func (r *run) sampleOnce(ctx context.Context) (Sample, error) {
	sm := Sample{T: r.since(time.Now())}
	rows, err := r.admin.Query(ctx, "SELECT status, count(*) FROM "+r.mainTable()+" GROUP BY status")
	if err != nil {
		return sm, err
	}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return sm, err
		}
		switch st {
		case "COMPLETED", "COMMITTED":
			sm.Completed += n
		case "COMPENSATED", "ABORTED":
			sm.Compensated += n
		case "FAILED":
			sm.Failed += n
		default:
			sm.Open += n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return sm, err
	}
	if err := r.admin.QueryRow(ctx, "SELECT count(*) FROM "+r.table("outbox")).Scan(&sm.Outbox); err != nil {
		return sm, err
	}
	total, err := r.money(ctx)
	if err != nil {
		return sm, err
	}
	sm.MoneyInFlight = r.initial - total
	if r.s.Workload.Kind == WorkloadTwoPC && len(r.transfer) > 0 {
		var parts []string
		for _, s := range r.transfer {
			parts = append(parts, "(SELECT coalesce(sum(held), 0) FROM "+pgx.Identifier{s, "accounts"}.Sanitize()+")")
		}
		if err := r.admin.QueryRow(ctx, "SELECT ("+strings.Join(parts, " + ")+")::bigint").Scan(&sm.Held); err != nil {
			return sm, err
		}
	}
	return sm, nil
}

// quiescent reports whether every started saga or transaction is final, the outbox is empty and
// no queue holds work; if not, it says what is left.
func (r *run) quiescent(ctx context.Context) (bool, string) {
	var open, outbox int
	if err := r.admin.QueryRow(ctx, "SELECT count(*) FROM "+r.mainTable()+" WHERE NOT (status = ANY($1))", r.terminalStatuses()).Scan(&open); err != nil {
		return false, err.Error()
	}
	if open > 0 {
		return false, fmt.Sprintf("%d not final", open)
	}
	if err := r.admin.QueryRow(ctx, "SELECT count(*) FROM "+r.table("outbox")).Scan(&outbox); err != nil {
		return false, err.Error()
	}
	if outbox > 0 {
		return false, fmt.Sprintf("%d outbox rows", outbox)
	}
	qs, err := r.queueStats(ctx)
	if err != nil {
		return false, "queue depths: " + err.Error()
	}
	for _, q := range qs {
		if !r.ignoredQueue(q.Name) && q.Ready+q.Unacked > 0 {
			return false, fmt.Sprintf("queue %s: %d ready, %d unacked", q.Name, q.Ready, q.Unacked)
		}
	}
	return true, ""
}

func (r *run) terminalStatuses() []string {
	out := []string{"COMPLETED", "COMPENSATED", "COMMITTED", "ABORTED"}
	if r.s.Expect.AllowFailed {
		out = append(out, "FAILED")
	}
	return out
}

func (r *run) ignoredQueue(name string) bool {
	return name == deadQueue || strings.HasPrefix(name, tapPrefix)
}

// queueStats lists the scenario's queues with their depths. The management API names the
// queues and counts unacknowledged messages, but its numbers are samples up to its collection
// interval (5s) old; the ready counts are therefore read exactly with a passive declare over
// AMQP.
func (r *run) queueStats(ctx context.Context) ([]QueueStat, error) {
	var qs []QueueStat
	var err error
	if r.mq != nil {
		qs, err = r.mq.queueStats(ctx, r.vhost)
	} else {
		qs, err = r.mgmt.queueStats(ctx, r.vhost)
	}
	if err != nil {
		return nil, err
	}
	conn, err := amqp.DialConfig(r.amqpBase, amqp.Config{Properties: amqp.Table{"connection_name": "chaos-inspect"}})
	if err != nil {
		return nil, fmt.Errorf("inspect queues: %w", err)
	}
	defer conn.Close()
	var ch *amqp.Channel
	for i := range qs {
		if ch == nil || ch.IsClosed() {
			if ch, err = conn.Channel(); err != nil {
				return nil, fmt.Errorf("inspect queues: %w", err)
			}
		}
		// A queue that is gone, or exclusive to another connection, keeps the API's count.
		if q, err := ch.QueueDeclarePassive(qs[i].Name, false, false, false, false, nil); err == nil {
			qs[i].Ready = q.Messages
		}
	}
	return qs, nil
}

// statsInterval is how old the management API's message counts may be.
const statsInterval = 5 * time.Second

// settle waits until the system is quiescent (twice in a row) or the settle time is over.
func (r *run) settle(ctx context.Context) {
	deadline := time.Now().Add(r.s.Settle.D())
	r.progress("   settling (at most %s)", r.s.Settle.D())
	streak := 0
	var said time.Time
	for time.Now().Before(deadline) && ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ok, left := r.quiescent(qctx)
		cancel()
		if !ok && time.Since(said) > 10*time.Second {
			r.event("waiting for quiescence: %s", left)
			said = time.Now()
		}
		if ok {
			streak++
			if streak >= 2 {
				// The unacked counts come from the management API's samples: look again once
				// they are surely newer than the moment the system went quiet.
				select {
				case <-ctx.Done():
				case <-time.After(statsInterval + time.Second):
				}
				qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				ok, left = r.quiescent(qctx)
				cancel()
				if ok {
					r.event("quiescent")
					return
				}
				r.event("not quiescent after all: %s", left)
				streak = 0
			}
		} else {
			streak = 0
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	_, left := r.quiescent(ctx)
	r.event("not quiescent after the settle time of %s (%s); checking anyway", r.s.Settle.D(), left)
}

func (r *run) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range r.procs {
		wg.Go(func() { p.shutdown(15 * time.Second) })
	}
	wg.Wait()
	for _, c := range r.conns {
		_ = c.Close()
	}
	if r.taps != nil {
		r.taps.close(ctx)
	}
	if r.links != nil {
		r.links.close()
	}
	if r.admin != nil {
		r.admin.Close()
	}
	if !r.opts.Keep {
		if r.pg == nil && r.schema != "" {
			if err := dropSchemas(ctx, r.pgBase, r.schema); err != nil {
				r.progress("   could not drop schema %s: %v", r.schema, err)
			}
		}
		if r.mq == nil && r.vhost != "" {
			if err := r.mgmt.deleteVHost(ctx, r.vhost); err != nil {
				r.progress("   could not delete vhost %s: %v", r.vhost, err)
			}
		}
	}
	r.mgmt.close()
	if r.mq != nil {
		r.mq.stop()
	}
	if r.pg != nil {
		r.pg.stop()
	}
}

// sleepUntil sleeps until offset from the start of the workload.
func (r *run) sleepUntil(ctx context.Context, offset time.Duration) error {
	d := time.Until(r.start().Add(offset))
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
