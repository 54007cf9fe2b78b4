package chaos

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// apply applies one fault at its time, heals it after its duration, and says when each
// happened. Errors are recorded, not returned: the scenario goes on.
func (r *run) apply(ctx context.Context, f ScheduledFault) AppliedFault {
	a := AppliedFault{ScheduledFault: f}
	if err := r.sleepUntil(ctx, f.At.D()); err != nil {
		a.Error = err.Error()
		return a
	}
	if f.When != nil {
		if err := r.awaitCondition(ctx, f); err != nil {
			a.Error = err.Error()
			a.AppliedAt = r.since(time.Now())
			a.HealedAt = a.AppliedAt
			r.event("fault %s not applied: %v", describe(f), err)
			return a
		}
		r.event("condition %s holds", f.When)
	}
	heal, err := r.inject(ctx, f)
	// Applied when it took effect: a kill is instant, rabbitmqctl takes seconds.
	a.AppliedAt = r.since(time.Now())
	desc := describe(f)
	if err != nil {
		a.Error = err.Error()
		a.HealedAt = r.since(time.Now())
		r.event("fault %s failed: %v", desc, err)
		return a
	}
	r.event("fault %s", desc)
	if f.Duration > 0 && heal != nil {
		select {
		case <-ctx.Done():
		case <-time.After(f.Duration.D()):
		}
		// Healing runs even when the run is being cancelled, so nothing stays broken.
		if err := heal(context.WithoutCancel(ctx)); err != nil {
			a.Error = "heal: " + err.Error()
			r.event("heal of %s failed: %v", desc, err)
		} else {
			r.event("healed %s", desc)
			if isProcessFault(f.Kind) {
				r.noteHeal(r.procs[f.Target], f.Kind != FaultSIGSTOP)
			}
		}
	} else if heal != nil {
		if err := heal(context.WithoutCancel(ctx)); err != nil {
			a.Error = "heal: " + err.Error()
		} else if isProcessFault(f.Kind) {
			r.noteHeal(r.procs[f.Target], f.Kind != FaultSIGSTOP)
		}
	}
	a.HealedAt = r.since(time.Now())
	return a
}

func describe(f ScheduledFault) string {
	s := f.Kind + " " + f.Target
	if f.Duration > 0 {
		s += " for " + f.Duration.D().String()
	}
	if f.Kind == FaultLatency {
		s += fmt.Sprintf(" (%s ± %s)", f.Latency.D(), f.Jitter.D())
	}
	if f.Count > 0 {
		s += fmt.Sprintf(" ×%d", f.Count)
	}
	if f.Repetitions > 0 {
		s += fmt.Sprintf(" (%d/%d)", f.Repetition, f.Repetitions)
	}
	if f.When != nil {
		s += " when " + f.When.String()
	}
	return s
}

// healFunc undoes a fault; nil when there is nothing to undo.
type healFunc func(context.Context) error

// inject applies f and returns how to heal it (nil when there is nothing to heal).
func (r *run) inject(ctx context.Context, f ScheduledFault) (healFunc, error) {
	switch {
	case isProcessFault(f.Kind):
		return r.injectProcess(f)
	case isLinkFault(f.Kind):
		return r.injectLink(f)
	case f.Kind == FaultPGTerminate || f.Kind == FaultDuplicate || f.Kind == FaultPoison:
		return nil, r.injectOnce(ctx, f)
	case f.Kind == FaultRabbitMQRestart || f.Kind == FaultMemoryAlarm || f.Kind == FaultPostgresRestart:
		return r.injectService(ctx, f)
	}
	return nil, fmt.Errorf("unknown fault kind %q", f.Kind)
}

// injectProcess signals a coordinator or participant-sim.
func (r *run) injectProcess(f ScheduledFault) (healFunc, error) {
	p := r.procs[f.Target]
	switch f.Kind {
	case FaultSIGKILL:
		if err := p.kill(); err != nil {
			return nil, err
		}
		if f.Duration == 0 {
			return nil, nil
		}
		return r.restartOf(p), nil
	case FaultSIGSTOP:
		instance, err := p.stop()
		if err != nil {
			return nil, err
		}
		return func(context.Context) error { return p.cont(instance) }, nil
	case FaultRestart:
		p.terminate(15 * time.Second)
		return r.restartOf(p), nil
	}
	return nil, fmt.Errorf("unknown process fault %q", f.Kind)
}

// injectLink cuts or degrades a process's link to PostgreSQL or RabbitMQ through its proxy.
func (r *run) injectLink(f ScheduledFault) (healFunc, error) {
	proc, end, _ := strings.Cut(f.Target, "->")
	name := linkName(proc, end)
	var toxic string
	attrs := map[string]any{}
	switch f.Kind {
	case FaultLinkDown:
		if err := r.links.down(name); err != nil {
			return nil, err
		}
		return func(context.Context) error { return r.links.up(name) }, nil
	case FaultLatency:
		toxic = "latency"
		attrs["latency"] = f.Latency.D().Milliseconds()
		attrs["jitter"] = f.Jitter.D().Milliseconds()
	case FaultResetPeer:
		toxic = "reset_peer"
		attrs["timeout"] = 0
	case FaultBlackhole:
		toxic = "timeout"
		attrs["timeout"] = 0
	case FaultTimeout:
		toxic = "timeout"
		attrs["timeout"] = 1000
	}
	names, err := r.links.toxic(name, toxic, attrs)
	if err != nil {
		_ = r.links.removeToxics(name, names)
		return nil, err
	}
	return func(context.Context) error { return r.links.removeToxics(name, names) }, nil
}

// injectOnce applies the instantaneous faults: terminated backends, duplicates, poison.
func (r *run) injectOnce(ctx context.Context, f ScheduledFault) error {
	switch f.Kind {
	case FaultPGTerminate:
		n, err := r.terminateBackends(ctx, f.Target)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no effect: %s had no PostgreSQL connection to terminate", f.Target)
		}
		r.event("pg_terminate_backend ended %d connection(s) of %s", n, f.Target)
	case FaultDuplicate:
		if r.taps == nil {
			return fmt.Errorf("no tap queues")
		}
		n, err := r.taps.duplicate(ctx, f.Target, f.Count)
		if err != nil {
			return fmt.Errorf("%d of %d copies published, then: %w", n, f.Count, err)
		}
		if n == 0 {
			return fmt.Errorf("no effect: the tap queue held no %s to publish again", f.Target)
		}
		r.event("re-published %d copies of real %s", n, f.Target)
	case FaultPoison:
		n, err := publishPoison(ctx, r.amqpBase, f.Target, f.Count, r.seed)
		r.mu.Lock()
		r.injected += n
		r.mu.Unlock()
		return err
	}
	return nil
}

// injectService crashes or alarms the scenario's private broker or database.
func (r *run) injectService(ctx context.Context, f ScheduledFault) (healFunc, error) {
	switch f.Kind {
	case FaultRabbitMQRestart:
		if err := r.mq.Kill(); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return r.mq.Start(ctx) }, nil
	case FaultMemoryAlarm:
		if err := r.mq.memoryAlarm(ctx, true); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return r.mq.memoryAlarm(ctx, false) }, nil
	default: // FaultPostgresRestart
		if err := r.pg.Crash(ctx); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return r.pg.Start(ctx) }, nil
	}
}

// restartOf starts p again and waits until it is ready (or 60s).
func (r *run) restartOf(p *process) healFunc {
	return func(ctx context.Context) error {
		if err := p.start(); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		return p.waitReady(rctx)
	}
}

// terminateBackends ends the PostgreSQL connections of one process (by application_name) or of
// every process of the scenario.
func (r *run) terminateBackends(ctx context.Context, target string) (int, error) {
	pattern := "chaos-" + r.id + "-" + target
	if target == "all" {
		pattern = "chaos-" + r.id + "-%"
	}
	var n int
	err := r.admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE $1 AND pid <> pg_backend_pid()`, pattern).Scan(&n)
	return n, err
}
