package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/client"
	"github.com/sagacoord/sagacoord/internal/sandbox"
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
	// PostgresBin holds initdb and pg_ctl for private instances. Default sandbox.DefaultPostgresBin.
	PostgresBin string
	// Broken starts every coordinator with --test-disable-outbox (the test build's hook): the
	// deliberately broken build whose runs must fail.
	Broken bool
	// Keep leaves the schemas and the vhost in place after the run (logs are always kept).
	Keep bool
	// WorkDir receives each run's logs and configuration. Default a new temp dir.
	WorkDir string
	// ReportDir is where the report goes (--report): each run's database dump is written into
	// its dumps/ directory. Empty: into the run's work dir.
	ReportDir string
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
		o.PostgresBin = sandbox.DefaultPostgresBin
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.SampleInterval <= 0 {
		o.SampleInterval = 250 * time.Millisecond
	}
	return o
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
	pg         *sandbox.Postgres
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
	// selfCrashed is when a process last exited on its own (a crash point of the scenario), and
	// selfHealed when the last one that did was ready again.
	selfCrashed, selfHealed time.Time
	// baselines are the work counters of the processes of expect.recovered after their last heal.
	baselines map[string]workBaseline
}

// crashed notes when a process exited on its own: a fault the scenario provokes.
func (r *run) crashed(*process) {
	r.mu.Lock()
	r.selfCrashed = time.Now()
	r.mu.Unlock()
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
	r.noteHeal(p, true)
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
		r.res.Status, r.res.Ineffective = runVerdict(r.res.Invariants, r.res.Faults)
		if r.res.Status == StatusInconclusive {
			r.res.Reason = fmt.Sprintf("%d of %d fault(s) did not take effect: %s", len(r.res.Ineffective), len(r.res.Faults), strings.Join(r.res.Ineffective, "; "))
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

func (r *run) execute(ctx context.Context) error {
	if err := r.makeDirs(); err != nil {
		return err
	}
	defer os.RemoveAll(r.data)
	defer r.teardown()
	schedule := r.s.Schedule(r.seed)
	if err := r.prepare(ctx, schedule); err != nil {
		return err
	}
	stopSampler := r.drive(ctx, schedule)
	r.settle(ctx)
	r.mu.Lock()
	if !r.selfHealed.IsZero() {
		r.res.LastHeal = max(r.res.LastHeal, r.since(r.selfHealed))
	}
	if !r.selfCrashed.IsZero() {
		r.res.LastFault = max(r.res.LastFault, r.since(r.selfCrashed))
	}
	r.mu.Unlock()
	stopSampler()
	if r.taps != nil {
		r.taps.close(ctx)
		r.taps = nil
	}
	r.res.Invariants = r.check(ctx)
	r.figures()
	r.dumpDatabase(context.WithoutCancel(ctx))
	return nil
}

// makeDirs makes the run's work dir (logs and configs, kept) and data dir (private instances,
// removed by execute).
func (r *run) makeDirs() (err error) {
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
	return nil
}

// prepare sets up the services, the links and the processes the schedule needs, and takes the
// initial balances.
func (r *run) prepare(ctx context.Context, schedule []ScheduledFault) (err error) {
	if err := r.setupServices(ctx); err != nil {
		return err
	}
	if r.bins, err = locateBinaries(ctx, r.opts.BinDir, r.work, r.opts.Broken || r.s.usesTestHooks()); err != nil {
		return err
	}
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
		if r.taps, err = newTaps(ctx, r.amqpBase, r.s, r.event); err != nil {
			return err
		}
	}
	return nil
}

// drive runs the workload, the timeline and the sampler together from t0. It returns once the
// workload is done and every fault healed; the sampler goes on until stopSampler.
func (r *run) drive(ctx context.Context, schedule []ScheduledFault) (stopSampler func()) {
	reqs := make([][]request, len(r.s.Workloads))
	for i, w := range r.s.Workloads {
		reqs[i] = r.s.generate(r.seed, w)
	}
	r.t0.Store(time.Now().UnixNano())
	drivers := make([]*driver, len(r.s.Workloads))
	for i, w := range r.s.Workloads {
		drivers[i] = &driver{s: r.s, w: w, conns: r.workloadConns(), defName: r.defName, t0: r.start()}
		r.progress("   workload: %d %s starts, concurrency %d", len(reqs[i]), w.Kind, w.Concurrency)
	}
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var wg sync.WaitGroup
	results := make([]workloadResult, len(drivers))
	for i, d := range drivers {
		wg.Go(func() { results[i] = d.run(runCtx, reqs[i]) })
	}
	applied := make([]AppliedFault, len(schedule))
	var fwg sync.WaitGroup
	for i, f := range schedule {
		fwg.Go(func() { applied[i] = r.apply(runCtx, f) })
	}
	samplerDone := make(chan struct{})
	stop := make(chan struct{})
	go func() { defer close(samplerDone); r.sample(ctx, stop, drivers) }()

	wg.Wait()
	var wres workloadResult
	for i, res := range results {
		wres.merge(res, drivers[i].w.Kind)
	}
	r.event("workload done: %d accepted, %d rejected in %.1fs", wres.Accepted, wres.Rejected, wres.Elapsed.Seconds())
	fwg.Wait()
	r.res.Faults = applied
	r.res.LastFault, r.res.LastHeal = lastFaultAndHeal(applied)
	r.res.Workload = wres
	if len(schedule) > 0 {
		r.event("every fault healed")
	}
	return func() { close(stop); <-samplerDone }
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
		r.pg.Stop()
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
