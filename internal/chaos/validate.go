package chaos

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
)

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

// problems collects what Validate finds, each naming its field.
type problems []error

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

// Validate checks the scenario and returns every problem it finds, each naming its field.
func (s *Scenario) Validate() error {
	var bad problems
	for _, c := range s.Catalogue {
		if c < 1 || c > 18 {
			bad.add("catalogue: %d is not an entry of the failure catalogue (1-18, scenarios/README.md)", c)
		}
	}
	if q := s.Topology.QueueType; q != "classic" && q != "quorum" {
		bad.add("topology.queue_type: %q must be classic or quorum", q)
	}
	procs := map[string]bool{}
	s.validateCoordinators(&bad, procs)
	s.validateSims(&bad, procs)
	s.validateWorkload(&bad)
	for i, f := range s.Timeline {
		if err := s.validateFault(f, procs); err != nil {
			bad.add("timeline[%d]: %v", i, err)
		}
	}
	s.validateRandomFaults(&bad, procs)
	for i, inv := range s.Invariants {
		if !slices.Contains(AllInvariants, inv) {
			bad.add("invariants[%d]: %q must be one of %s", i, inv, strings.Join(AllInvariants, ", "))
		}
	}
	if s.Expect.MinFailed < 0 || s.Expect.MinCompensated < 0 || s.Expect.DeadLetters < 0 {
		bad.add("expect: counts must not be negative")
	}
	if s.Settle.D() > time.Hour {
		bad.add("settle: %s is longer than an hour", s.Settle.D())
	}
	return errors.Join(bad...)
}

// validateProcessName checks a process name (where names the field) and records it in procs.
func validateProcessName(bad *problems, procs map[string]bool, where, name string) {
	if !procNameRE.MatchString(name) {
		bad.add("%s.name: %q must be lower-case letters, digits and '-', starting with a letter (at most 31)", where, name)
	}
	if procs[name] || name == EndPostgres || name == EndRabbitMQ || name == "all" {
		bad.add("%s.name: %q is taken", where, name)
	}
	procs[name] = true
}

// validateFlags checks the flags a scenario adds to a process's command line: each starts with
// -- and none is one the runner sets.
func validateFlags(bad *problems, where string, flags, reserved []string) {
	for _, f := range flags {
		if !strings.HasPrefix(f, "--") {
			bad.add("%s: flag %q must start with --", where, f)
		}
		for _, r := range reserved {
			if f == r || strings.HasPrefix(f, r+"=") {
				bad.add("%s: flag %s is set by the runner", where, r)
			}
		}
	}
}

func (s *Scenario) validateCoordinators(bad *problems, procs map[string]bool) {
	wants := 0
	for i, c := range s.Topology.Coordinators {
		where := fmt.Sprintf("topology.coordinators[%d]", i)
		validateProcessName(bad, procs, where, c.Name)
		validateFlags(bad, where, append(slices.Clone(c.Flags), c.FirstRunFlags...),
			[]string{"--database-url", "--amqp-url", "--listen", "--name", "--queue-type"})
		if c.Workload == nil || *c.Workload {
			wants++
		}
	}
	if wants == 0 {
		bad.add("topology.coordinators: at least one coordinator must take the workload")
	}
}

func (s *Scenario) validateSims(bad *problems, procs map[string]bool) {
	if len(s.Topology.Sims) == 0 {
		bad.add("topology.participant_sims: at least one participant-sim is needed")
	}
	parts := map[string]bool{}
	for i, p := range s.Topology.Sims {
		where := fmt.Sprintf("topology.participant_sims[%d]", i)
		validateProcessName(bad, procs, where, p.Name)
		if len(p.Participants) == 0 {
			bad.add("%s.participants: empty", where)
		}
		validateFlags(bad, where, p.Flags,
			[]string{"--database-url", "--amqp-url", "--config", "--participants", "--queue-type", "--schema-prefix"})
		for j, q := range p.Participants {
			validateParticipant(bad, fmt.Sprintf("%s.participants[%d]", where, j), q, parts)
		}
	}
}

// validateParticipant checks one participant of a participant-sim; parts holds the names seen
// so far in the whole topology.
func validateParticipant(bad *problems, where string, q SimParticipant, parts map[string]bool) {
	if err := protocol.CheckName(q.Name); err != nil {
		bad.add("%s.name: %s", where, err)
	}
	if parts[q.Name] {
		bad.add("%s.name: participant %q is listed twice", where, q.Name)
	}
	parts[q.Name] = true
	if !slices.Contains(simKinds, q.Kind) {
		bad.add("%s.kind: %q must be one of %s", where, q.Kind, strings.Join(simKinds, ", "))
	}
	if q.SeedAccounts < 0 || q.InitialBalance < 0 || q.Prefetch < 0 || q.Concurrency < 0 {
		bad.add("%s: seed_accounts, initial_balance, prefetch and concurrency must not be negative", where)
	}
	for action, f := range q.Faults {
		for _, p := range []struct {
			n string
			v float64
		}{{"fail_probability", f.FailProbability}, {"retry_probability", f.RetryProbability}, {"hang_probability", f.HangProbability}, {"crash_after_commit_probability", f.CrashAfterCommitProbability}} {
			if p.v < 0 || p.v > 1 {
				bad.add("%s.faults.%s.%s: %v must be between 0 and 1", where, action, p.n, p.v)
			}
		}
	}
}

func (s *Scenario) validateWorkload(bad *problems) {
	w := s.Workload
	switch w.Kind {
	case WorkloadSaga:
		if w.Definition == "" {
			bad.add("workload.definition: a saga workload needs a definition file")
		}
		if len(w.Participants) > 0 {
			bad.add("workload.participants: only for a 2pc workload (a saga's participants are in its definition)")
		}
	case WorkloadTwoPC:
		if w.Definition != "" {
			bad.add("workload.definition: a 2pc workload has no definition; list workload.participants")
		}
		if len(w.Participants) < 1 {
			bad.add("workload.participants: a 2pc workload needs at least one participant")
		}
		parts := s.participants()
		for i, p := range w.Participants {
			if _, ok := parts[p]; !ok {
				bad.add("workload.participants[%d]: %q is not a participant of any participant_sim", i, p)
			}
		}
	default:
		bad.add("workload.kind: %q must be saga or 2pc", w.Kind)
	}
	if w.Count < 1 || w.Count > 1_000_000 {
		bad.add("workload.count: %d must be between 1 and 1000000", w.Count)
	}
	if w.Concurrency < 1 || w.Concurrency > 1024 {
		bad.add("workload.concurrency: %d must be between 1 and 1024", w.Concurrency)
	}
	if w.Rate < 0 || w.Rate > 100000 {
		bad.add("workload.rate: %v must be between 0 (unlimited) and 100000 per second", w.Rate)
	}
	in := w.Input
	if !slices.Contains([]string{GenTransfer, GenOrder, GenEmpty}, in.Generator) {
		bad.add("workload.input.generator: %q must be transfer, order or empty", in.Generator)
	}
	if in.Accounts < 1 || in.MinAmount < 1 || in.MaxAmount < in.MinAmount {
		bad.add("workload.input: accounts and min_amount must be at least 1 and max_amount at least min_amount")
	}
}

func (s *Scenario) validateRandomFaults(bad *problems, procs map[string]bool) {
	r := s.RandomFaults
	if r == nil {
		return
	}
	if r.Count < 1 || r.Count > 1000 {
		bad.add("random_faults.count: %d must be between 1 and 1000", r.Count)
	}
	if r.To <= r.From {
		bad.add("random_faults: to (%s) must be after from (%s)", r.To.D(), r.From.D())
	}
	if r.MaxDuration < r.MinDuration {
		bad.add("random_faults: max_duration must be at least min_duration")
	}
	if len(r.Choices) == 0 {
		bad.add("random_faults.choices: empty")
	}
	for i, f := range r.Choices {
		if f.At != 0 || f.Duration != 0 {
			bad.add("random_faults.choices[%d]: at and duration are drawn; leave them out", i)
		}
		f.Duration = r.MinDuration
		if f.Kind == FaultDuplicate || f.Kind == FaultPoison {
			f.Count = max(f.Count, 1)
		}
		if err := s.validateFault(f, procs); err != nil {
			bad.add("random_faults.choices[%d]: %v", i, err)
		}
	}
}

func (s *Scenario) validateFault(f Fault, procs map[string]bool) error {
	if !slices.Contains(FaultKinds, f.Kind) {
		return fmt.Errorf("kind %q must be one of %s", f.Kind, strings.Join(FaultKinds, ", "))
	}
	if f.At.D() > 24*time.Hour || f.Duration.D() > 24*time.Hour {
		return fmt.Errorf("at and duration must be under 24h")
	}
	needsDuration := func() error {
		if f.Duration == 0 {
			return fmt.Errorf("%s needs a duration (how long until it is healed)", f.Kind)
		}
		return nil
	}
	switch {
	case isProcessFault(f.Kind):
		if _, ok := procs[f.Target]; !ok {
			return fmt.Errorf("target %q of %s is not a coordinator or participant_sim name", f.Target, f.Kind)
		}
		if f.Kind == FaultSIGSTOP {
			return needsDuration()
		}
	case isLinkFault(f.Kind):
		from, to, ok := strings.Cut(f.Target, "->")
		if _, known := procs[from]; !ok || !known || (to != EndPostgres && to != EndRabbitMQ) {
			return fmt.Errorf("target %q of %s must be PROCESS->postgres or PROCESS->rabbitmq with a process of the topology", f.Target, f.Kind)
		}
		if f.Kind == FaultLatency && f.Latency == 0 {
			return fmt.Errorf("latency needs latency: (for example 200ms)")
		}
		return needsDuration()
	case f.Kind == FaultPGTerminate:
		if _, ok := procs[f.Target]; !ok && f.Target != "all" {
			return fmt.Errorf("target %q of pg_terminate must be a process name or all", f.Target)
		}
	case f.Kind == FaultDuplicate:
		if f.Target != "commands" && f.Target != "replies" {
			return fmt.Errorf("target %q of inject_duplicate must be commands or replies", f.Target)
		}
	case f.Kind == FaultPoison:
		name, isPart := strings.CutPrefix(f.Target, "participant:")
		if _, known := s.participants()[name]; !(f.Target == "replies" || (isPart && known)) {
			return fmt.Errorf("target %q of inject_poison must be replies or participant:NAME with a participant of the topology", f.Target)
		}
	case f.Kind == FaultRabbitMQRestart || f.Kind == FaultMemoryAlarm:
		if f.Target != EndRabbitMQ {
			return fmt.Errorf("target of %s must be rabbitmq", f.Kind)
		}
		if !s.Topology.PrivateRabbitMQ {
			return fmt.Errorf("%s needs topology.private_rabbitmq: true (the machine's shared broker is never disturbed)", f.Kind)
		}
		if f.Kind == FaultMemoryAlarm {
			return needsDuration()
		}
	case f.Kind == FaultPostgresRestart:
		if f.Target != EndPostgres {
			return fmt.Errorf("target of postgres_restart must be postgres")
		}
		if !s.Topology.PrivatePostgres {
			return fmt.Errorf("postgres_restart needs topology.private_postgres: true (the machine's shared PostgreSQL is never disturbed)")
		}
	}
	if (f.Kind == FaultDuplicate || f.Kind == FaultPoison) && (f.Count < 1 || f.Count > 100000) {
		return fmt.Errorf("count %d must be between 1 and 100000", f.Count)
	}
	if f.Kind != FaultLatency && (f.Latency != 0 || f.Jitter != 0) {
		return fmt.Errorf("latency and jitter are only for kind latency")
	}
	return nil
}
