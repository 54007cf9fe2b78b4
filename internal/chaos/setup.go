package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/client"
	"github.com/sagacoord/sagacoord/internal/cli"
	"github.com/sagacoord/sagacoord/internal/sandbox"
)

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
		r.pgBase = postgresURL(pg)
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
		r.amqpBase = mq.AdminURL()
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

// startProcesses starts the coordinators, registers the workload's definition, then starts the
// participant-sims, each time waiting until every process is ready.
func (r *run) startProcesses(ctx context.Context) error {
	readyCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := r.startCoordinators(readyCtx); err != nil {
		return err
	}
	if r.s.hasKind(WorkloadSaga) {
		if err := r.register(readyCtx); err != nil {
			return err
		}
	}
	return r.startSims(readyCtx)
}

func (r *run) startCoordinators(readyCtx context.Context) error {
	t := r.s.Topology
	for i, c := range t.Coordinators {
		p, err := r.coordinatorProcess(c)
		if err != nil {
			return err
		}
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
	return nil
}

// coordinatorProcess makes the process of coordinator c, on a free port, with its client
// connection; it does not start it.
func (r *run) coordinatorProcess(c CoordinatorSpec) (*process, error) {
	port, err := sandbox.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	r.coordAddr[c.Name] = addr
	db, mq := r.urlsOf(c.Name, true)
	args := []string{"serve", "--migrate", "--database-url", db, "--amqp-url", mq, "--listen", addr, "--name", c.Name,
		"--queue-type", r.s.Topology.QueueType, "--db-max-conns", strconv.Itoa(c.DBMaxConns)}
	metrics, metricsAddr, err := r.metricsArgs(c.Name)
	if err != nil {
		return nil, err
	}
	args = append(append(args, metrics...), c.Flags...)
	bin := filepath.Join(r.bins, "coordinator")
	if r.opts.Broken || c.usesTestHooks() {
		bin = filepath.Join(r.bins, testHooksDir, "coordinator")
	}
	if r.opts.Broken {
		args = append(args, "--test-disable-outbox")
	}
	first := c.FirstRunFlags
	p := &process{
		name: c.Name, role: "coordinator", bin: bin,
		args: func(isFirst bool) []string {
			if isFirst {
				return append(slices.Clone(args), first...)
			}
			return args
		},
		logPath:       filepath.Join(r.work, c.Name+".log"),
		metricsAddr:   metricsAddr,
		restartOnExit: c.RestartOnExit.D(),
		event:         r.event,
		crashed:       r.crashed,
		restarted:     r.restarted,
		ready:         readyWhenLogged("coordinator listening on"),
	}
	r.procs[c.Name] = p
	conn, err := client.New(addr)
	if err != nil {
		return nil, err
	}
	r.conns = append(r.conns, conn)
	return p, nil
}

// readyWhenLogged reports a process ready once its log, since the start, contains line.
func readyWhenLogged(line string) func(context.Context, *process, int64) error {
	return func(_ context.Context, p *process, from int64) error {
		if p.logContains(from, line) {
			return nil
		}
		return fmt.Errorf("no '%s' line yet", line)
	}
}

func (r *run) startSims(readyCtx context.Context) error {
	t := r.s.Topology
	for _, sim := range t.Sims {
		cfgPath := filepath.Join(r.work, sim.Name+".sim.json")
		cfg := map[string]any{"seed": r.seed, "schema_prefix": r.schema + "_", "participants": sim.Participants}
		b, _ := json.MarshalIndent(cfg, "", "  ")
		if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
			return err
		}
		db, mq := r.urlsOf(sim.Name, false)
		metrics, metricsAddr, err := r.metricsArgs(sim.Name)
		if err != nil {
			return err
		}
		args := []string{"--config", cfgPath, "--database-url", db, "--amqp-url", mq, "--queue-type", t.QueueType, "--db-max-conns", strconv.Itoa(sim.DBMaxConns)}
		args = append(append(args, metrics...), sim.Flags...)
		p := &process{
			name: sim.Name, role: "participant-sim", bin: filepath.Join(r.bins, "participant-sim"),
			args:          func(bool) []string { return args },
			logPath:       filepath.Join(r.work, sim.Name+".log"),
			metricsAddr:   metricsAddr,
			restartOnExit: sim.RestartOnExit.D(),
			event:         r.event,
			crashed:       r.crashed,
			restarted:     r.restarted,
			ready:         readyWhenLogged("participant-sim ready"),
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
	path := r.s.definitionPath(r.s.dir)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s.definition: %w", r.s.sagaWhere(), err)
	}
	def, err := cli.ParseDefinition(path, b)
	if err != nil {
		return fmt.Errorf("%s.definition: %w", r.s.sagaWhere(), err)
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
