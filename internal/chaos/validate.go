package chaos

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
)

// maxMaxBatch is the participant SDK's bound on MaxBatch (participant.Config).
const maxMaxBatch = 64

var (
	procNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
	simKinds   = []string{"transfer", "inventory", "payment", "noop"}
)

// processes returns the names of every process, and whether each is a coordinator.
func (s *Scenario) processes() map[string]bool {
	m := map[string]bool{}
	for _, c := range s.Topology.Coordinators {
		m[c.Name] = true
	}
	for _, p := range s.Topology.Sims {
		m[p.Name] = false
	}
	return m
}

// participants returns every participant name with its kind.
func (s *Scenario) participants() map[string]string {
	m := map[string]string{}
	for _, p := range s.Topology.Sims {
		for _, q := range p.Participants {
			m[q.Name] = q.Kind
		}
	}
	return m
}

// Validate checks the scenario and returns every problem it finds, each naming its field.
func (s *Scenario) Validate() error { return s.check().err(nil) }

// check returns every problem of the scenario, each at its field.
func (s *Scenario) check() problems {
	var bad problems
	for i, c := range s.Catalogue {
		if c < 1 || c > 18 {
			bad.at(fmt.Sprintf("catalogue[%d]", i), "%d is not an entry of the failure catalogue (1-18, scenarios/README.md)", c)
		}
	}
	if q := s.Topology.QueueType; q != "classic" && q != "quorum" {
		bad.at("topology.queue_type", "%q must be classic or quorum", q)
	}
	procs := map[string]bool{}
	s.validateCoordinators(&bad, procs)
	s.validateSims(&bad, procs)
	s.validateWorkloads(&bad)
	for i, f := range s.Timeline {
		where := fmt.Sprintf("timeline[%d]", i)
		s.validateFault(&bad, where, f, procs)
		validateRepeat(&bad, where, f)
		s.validateWhen(&bad, where, f)
	}
	s.validateRandomFaults(&bad, procs)
	for i, inv := range s.Invariants {
		if !slices.Contains(AllInvariants, inv) {
			bad.at(fmt.Sprintf("invariants[%d]", i), "%q must be one of %s", inv, strings.Join(AllInvariants, ", "))
		}
	}
	if s.Expect.MinFailed < 0 || s.Expect.MinCompensated < 0 || s.Expect.DeadLetters < 0 {
		bad.at("expect", "counts must not be negative")
	}
	s.validateRecovered(&bad)
	if s.Settle.D() > time.Hour {
		bad.at("settle", "%s is longer than an hour", s.Settle.D())
	}
	// A saga workload's keys come from its definition, which checkDefinition reads.
	if w := s.workloadOf(WorkloadTwoPC); w != nil && !s.hasKind(WorkloadSaga) {
		s.validateFaultKeys(&bad, twoPCFaultKeys(w.Participants), s.twoPCSource())
	}
	return bad
}

// validateProcessName checks a process name (where names the field) and records it in procs.
func validateProcessName(bad *problems, procs map[string]bool, where, name string) {
	if !procNameRE.MatchString(name) {
		bad.at(where+".name", "%q must be lower-case letters, digits and '-', starting with a letter (at most 31)", name)
	}
	if procs[name] || name == EndPostgres || name == EndRabbitMQ || name == "all" {
		bad.at(where+".name", "%q is taken", name)
	}
	procs[name] = true
}

// validateFlags checks the flags a scenario adds to a process's command line: each starts with
// -- and none is one the runner sets.
func validateFlags(bad *problems, where string, flags, reserved []string) {
	for _, f := range flags {
		if !strings.HasPrefix(f, "--") {
			bad.at(where, "flag %q must start with --", f)
		}
		for _, r := range reserved {
			if f == r || strings.HasPrefix(f, r+"=") {
				bad.at(where, "flag %s is set by the runner%s", r, settingOf(r))
			}
		}
	}
}

// settingOf names the scenario setting that takes the place of a flag the runner sets, if any.
func settingOf(flag string) string {
	if flag == "--db-max-conns" {
		return "; set db_max_conns: on the process instead"
	}
	return ""
}

// validateDBConns checks a process's db_max_conns (at where).
func validateDBConns(bad *problems, where string, n int) {
	if n < 1 || n > maxDBConns {
		bad.at(where, "%d must be between 1 and %d (the shared PostgreSQL has 100 connections; 0 takes the default)", n, maxDBConns)
	}
}

func (s *Scenario) validateCoordinators(bad *problems, procs map[string]bool) {
	wants := 0
	for i, c := range s.Topology.Coordinators {
		where := fmt.Sprintf("topology.coordinators[%d]", i)
		validateProcessName(bad, procs, where, c.Name)
		reserved := []string{"--database-url", "--amqp-url", "--listen", "--name", "--queue-type", "--db-max-conns", "--metrics-listen"}
		validateFlags(bad, where+".flags", c.Flags, reserved)
		validateFlags(bad, where+".first_run_flags", c.FirstRunFlags, reserved)
		validateDBConns(bad, where+".db_max_conns", c.DBMaxConns)
		if c.Workload == nil || *c.Workload {
			wants++
		}
	}
	if wants == 0 {
		bad.at("topology.coordinators", "at least one coordinator must take the workload")
	}
}

func (s *Scenario) validateSims(bad *problems, procs map[string]bool) {
	if len(s.Topology.Sims) == 0 {
		bad.at("topology.participant_sims", "at least one participant-sim is needed")
	}
	parts := map[string]bool{}
	for i, p := range s.Topology.Sims {
		where := fmt.Sprintf("topology.participant_sims[%d]", i)
		validateProcessName(bad, procs, where, p.Name)
		if len(p.Participants) == 0 {
			bad.at(where+".participants", "empty")
		}
		validateFlags(bad, where+".flags", p.Flags,
			[]string{"--database-url", "--amqp-url", "--config", "--participants", "--queue-type", "--schema-prefix", "--db-max-conns", "--metrics-listen"})
		validateDBConns(bad, where+".db_max_conns", p.DBMaxConns)
		for j, q := range p.Participants {
			validateParticipant(bad, fmt.Sprintf("%s.participants[%d]", where, j), q, parts)
		}
	}
}

// validateParticipant checks one participant of a participant-sim; parts holds the names seen
// so far in the whole topology.
func validateParticipant(bad *problems, where string, q SimParticipant, parts map[string]bool) {
	if err := protocol.CheckName(q.Name); err != nil {
		bad.at(where+".name", "%s", err)
	}
	if parts[q.Name] {
		bad.at(where+".name", "participant %q is listed twice", q.Name)
	}
	parts[q.Name] = true
	if !slices.Contains(simKinds, q.Kind) {
		bad.at(where+".kind", "%q must be one of %s", q.Kind, strings.Join(simKinds, ", "))
	}
	if q.SeedAccounts < 0 || q.InitialBalance < 0 || q.Prefetch < 0 || q.Concurrency < 0 {
		bad.at(where, "seed_accounts, initial_balance, prefetch and concurrency must not be negative")
	}
	if q.MaxBatch < 1 || q.MaxBatch > maxMaxBatch {
		bad.at(where+".max_batch", "%d must be between 1 and %d (0 takes the default, 1)", q.MaxBatch, maxMaxBatch)
	}
	for action, f := range q.Faults {
		for _, p := range []struct {
			n string
			v float64
		}{{"fail_probability", f.FailProbability}, {"retry_probability", f.RetryProbability}, {"hang_probability", f.HangProbability}, {"crash_after_commit_probability", f.CrashAfterCommitProbability}} {
			if p.v < 0 || p.v > 1 {
				bad.at(fmt.Sprintf("%s.faults.%s.%s", where, action, p.n), "%v must be between 0 and 1", p.v)
			}
		}
		if f.HangFor != nil {
			at := fmt.Sprintf("%s.faults.%s.hang_for", where, action)
			if *f.HangFor <= 0 {
				bad.at(at, "%s must be positive; leave hang_for out for hangs that last until shutdown", f.HangFor.D())
			}
			if f.HangProbability == 0 {
				bad.at(at, "hang_for without hang_probability never fires; give hang_probability too")
			}
		}
	}
}

// validateWorkloads checks workload:, or workloads: (a saga and a 2PC workload run at once).
func (s *Scenario) validateWorkloads(bad *problems) {
	if !s.mixedGiven {
		s.validateWorkload(bad, "workload", s.Workload)
		return
	}
	if s.bothGiven {
		bad.at("workloads", "give workload: or workloads:, not both")
	}
	if len(s.Workloads) > 2 {
		bad.at("workloads", "%d workloads; at most two: one saga and one 2pc", len(s.Workloads))
	}
	kinds := map[string]bool{}
	for i, w := range s.Workloads {
		where := fmt.Sprintf("workloads[%d]", i)
		if kinds[w.Kind] {
			bad.at(where+".kind", "a second %s workload; workloads: runs one saga and one 2pc workload at once", w.Kind)
		}
		kinds[w.Kind] = true
		s.validateWorkload(bad, where, w)
	}
}

// validateWorkload checks one workload, at where ("workload" or "workloads[i]").
func (s *Scenario) validateWorkload(bad *problems, where string, w Workload) {
	switch w.Kind {
	case WorkloadSaga:
		if w.Definition == "" {
			bad.at(where+".definition", "a saga workload needs a definition file")
		}
		if len(w.Participants) > 0 {
			bad.at(where+".participants", "only for a 2pc workload (a saga's participants are in its definition)")
		}
	case WorkloadTwoPC:
		if w.Definition != "" {
			bad.at(where+".definition", "a 2pc workload has no definition; list participants")
		}
		if len(w.Participants) < 1 {
			bad.at(where+".participants", "a 2pc workload needs at least one participant")
		}
		parts := s.participants()
		for i, p := range w.Participants {
			if _, ok := parts[p]; !ok {
				bad.at(fmt.Sprintf("%s.participants[%d]", where, i), "%q is not a participant of any participant_sim", p)
			}
		}
	default:
		bad.at(where+".kind", "%q must be saga or 2pc", w.Kind)
	}
	if w.Count < 1 || w.Count > 1_000_000 {
		bad.at(where+".count", "%d must be between 1 and 1000000", w.Count)
	}
	if w.Concurrency < 1 || w.Concurrency > 1024 {
		bad.at(where+".concurrency", "%d must be between 1 and 1024", w.Concurrency)
	}
	if w.Rate < 0 || w.Rate > 100000 {
		bad.at(where+".rate", "%v must be between 0 (unlimited) and 100000 per second", w.Rate)
	}
	in := w.Input
	if !slices.Contains([]string{GenTransfer, GenOrder, GenEmpty}, in.Generator) {
		bad.at(where+".input.generator", "%q must be transfer, order or empty", in.Generator)
	}
	if in.Accounts < 1 || in.MinAmount < 1 || in.MaxAmount < in.MinAmount {
		bad.at(where+".input", "accounts and min_amount must be at least 1 and max_amount at least min_amount")
	}
}

func (s *Scenario) validateRandomFaults(bad *problems, procs map[string]bool) {
	r := s.RandomFaults
	if r == nil {
		return
	}
	if r.Count < 1 || r.Count > 1000 {
		bad.at("random_faults.count", "%d must be between 1 and 1000", r.Count)
	}
	if r.To <= r.From {
		bad.at("random_faults.to", "to (%s) must be after from (%s)", r.To.D(), r.From.D())
	}
	if r.MaxDuration < r.MinDuration {
		bad.at("random_faults.max_duration", "max_duration must be at least min_duration")
	}
	if len(r.Choices) == 0 {
		bad.at("random_faults.choices", "empty")
	}
	for i, f := range r.Choices {
		where := fmt.Sprintf("random_faults.choices[%d]", i)
		if f.At != 0 || f.Duration != 0 {
			bad.at(where, "at and duration are drawn; leave them out")
		}
		if f.Every != 0 || f.For != 0 || f.Times != 0 || f.When != nil || f.Timeout != 0 {
			bad.at(where, "every, for, times, when and timeout are only for timeline entries")
		}
		// The drawn duration, for the kinds that last.
		f.At, f.Duration, f.Every, f.For, f.Times = 0, 0, 0, 0, 0
		if takesDuration(f.Kind) {
			f.Duration = r.MinDuration
		}
		if f.Kind == FaultDuplicate || f.Kind == FaultPoison {
			f.Count = max(f.Count, 1)
		}
		s.validateFault(bad, where, f, procs)
	}
}

// validateFault checks one fault entry (at where) of the timeline or of random_faults.choices.
func (s *Scenario) validateFault(bad *problems, where string, f Fault, procs map[string]bool) {
	if !slices.Contains(FaultKinds, f.Kind) {
		bad.at(where+".kind", "%q must be one of %s", f.Kind, strings.Join(FaultKinds, ", "))
		return
	}
	if f.At.D() > 24*time.Hour || f.Duration.D() > 24*time.Hour {
		bad.at(where, "at and duration must be under 24h")
	}
	if field, err := s.validateTarget(f, procs); err != nil {
		bad.at(where+field, "%v", err)
	}
	if !takesDuration(f.Kind) && f.Duration != 0 {
		bad.at(where+".duration", "%s is instantaneous and has no duration (repeat it with every: to make it last)", f.Kind)
	}
	inject := f.Kind == FaultDuplicate || f.Kind == FaultPoison
	if inject && (f.Count < 1 || f.Count > 100000) {
		bad.at(where+".count", "%d must be between 1 and 100000", f.Count)
	}
	if !inject && f.Count != 0 {
		bad.at(where+".count", "count is only for inject_duplicate and inject_poison")
	}
	if f.Kind != FaultLatency && (f.Latency != 0 || f.Jitter != 0) {
		bad.at(where+".latency", "latency and jitter are only for kind latency")
	}
}

// validateTarget checks the target of f and the settings its kind needs; on a problem it says
// which field (".target", ".duration") holds it.
func (s *Scenario) validateTarget(f Fault, procs map[string]bool) (string, error) {
	needsDuration := func() (string, error) {
		if f.Duration == 0 {
			return "", fmt.Errorf("%s needs a duration (how long until it is healed)", f.Kind)
		}
		return "", nil
	}
	switch {
	case isProcessFault(f.Kind):
		if _, ok := procs[f.Target]; !ok {
			return ".target", fmt.Errorf("target %q of %s is not a coordinator or participant_sim name", f.Target, f.Kind)
		}
		if f.Kind == FaultSIGSTOP {
			return needsDuration()
		}
	case isLinkFault(f.Kind):
		from, to, ok := strings.Cut(f.Target, "->")
		if _, known := procs[from]; !ok || !known || (to != EndPostgres && to != EndRabbitMQ) {
			return ".target", fmt.Errorf("target %q of %s must be PROCESS->postgres or PROCESS->rabbitmq with a process of the topology", f.Target, f.Kind)
		}
		if f.Kind == FaultLatency && f.Latency == 0 {
			return "", fmt.Errorf("latency needs latency: (for example 200ms)")
		}
		return needsDuration()
	case f.Kind == FaultPGTerminate:
		if _, ok := procs[f.Target]; !ok && f.Target != "all" {
			return ".target", fmt.Errorf("target %q of pg_terminate must be a process name or all", f.Target)
		}
	case f.Kind == FaultDuplicate:
		if f.Target != "commands" && f.Target != "replies" {
			return ".target", fmt.Errorf("target %q of inject_duplicate must be commands or replies", f.Target)
		}
	case f.Kind == FaultPoison:
		name, isPart := strings.CutPrefix(f.Target, "participant:")
		if _, known := s.participants()[name]; !(f.Target == "replies" || (isPart && known)) {
			return ".target", fmt.Errorf("target %q of inject_poison must be replies or participant:NAME with a participant of the topology", f.Target)
		}
	case f.Kind == FaultRabbitMQRestart || f.Kind == FaultMemoryAlarm:
		if f.Target != EndRabbitMQ {
			return ".target", fmt.Errorf("target of %s must be rabbitmq", f.Kind)
		}
		if !s.Topology.PrivateRabbitMQ {
			return "", fmt.Errorf("%s needs topology.private_rabbitmq: true (the machine's shared broker is never disturbed)", f.Kind)
		}
		if f.Kind == FaultMemoryAlarm {
			return needsDuration()
		}
	case f.Kind == FaultPostgresRestart:
		if f.Target != EndPostgres {
			return ".target", fmt.Errorf("target of postgres_restart must be postgres")
		}
		if !s.Topology.PrivatePostgres {
			return "", fmt.Errorf("postgres_restart needs topology.private_postgres: true (the machine's shared PostgreSQL is never disturbed)")
		}
	}
	return "", nil
}

// validateRecovered checks expect.recovered: each entry a process that some fault kills, freezes
// or restarts, or that restarts after a crash of its own; and R1 only with it.
func (s *Scenario) validateRecovered(bad *problems) {
	procs := s.processes()
	seen := map[string]bool{}
	for i, name := range s.Expect.Recovered {
		where := fmt.Sprintf("expect.recovered[%d]", i)
		if _, ok := procs[name]; !ok {
			bad.at(where, "%q is not a coordinator or participant_sim name", name)
			continue
		}
		if seen[name] {
			bad.at(where, "%q is listed twice", name)
		}
		seen[name] = true
		if !s.faultsProcess(name) {
			bad.at(where, "nothing kills, freezes or restarts %s (no sigkill, sigstop or restart targets it, and it has no restart_on_exit): there is nothing to recover from", name)
		}
	}
	if slices.Contains(s.Invariants, R1) && len(s.Expect.Recovered) == 0 {
		bad.at("invariants", "R1 checks the processes of expect.recovered; name them there")
	}
}

// faultsProcess reports whether a process fault of the timeline or of random_faults may hit
// name, or name restarts after exiting on its own.
func (s *Scenario) faultsProcess(name string) bool {
	hits := func(f Fault) bool { return isProcessFault(f.Kind) && f.Target == name }
	if slices.ContainsFunc(s.Timeline, hits) || (s.RandomFaults != nil && slices.ContainsFunc(s.RandomFaults.Choices, hits)) {
		return true
	}
	for _, c := range s.Topology.Coordinators {
		if c.Name == name && c.RestartOnExit > 0 {
			return true
		}
	}
	for _, p := range s.Topology.Sims {
		if p.Name == name && p.RestartOnExit > 0 {
			return true
		}
	}
	return false
}
