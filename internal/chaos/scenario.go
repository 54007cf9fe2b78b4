// Package chaos runs fault-injection scenarios against real coordinator and participant-sim
// processes and checks the invariants of DESIGN section 4 at quiescence.
//
// A scenario (a YAML file, see scenarios/README.md) names a topology, a workload, a timeline of
// faults, the invariants to check and how long the system may take to settle. Run starts the
// processes, drives the workload over gRPC, applies the faults, waits, checks, and returns a
// Report; WriteReport renders it as report.json and a self-contained report.html.
package chaos

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as a Go duration string ("250ms", "1m30s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML accepts a duration string; a bare number is refused so that "10" is never read as
// ten nanoseconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!int" || n.Tag == "!!float" {
		return fmt.Errorf("line %d: a duration is a string with a unit such as \"10s\" or \"250ms\", not %q", n.Line, n.Value)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration %s must not be negative", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads the duration string (a report.json read back).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Scenario is one chaos scenario. See scenarios/README.md for the format.
type Scenario struct {
	// Name identifies the scenario in reports. Default: the file name without extension.
	Name string `yaml:"name" json:"name"`
	// Description says what the scenario shows.
	Description string `yaml:"description" json:"description,omitempty"`
	// Catalogue lists the DESIGN section 5 fault numbers (1-18) the scenario covers.
	Catalogue []int `yaml:"catalogue" json:"catalogue,omitempty"`
	// Tags select scenarios (for example "fast" for make chaos-fast).
	Tags []string `yaml:"tags" json:"tags,omitempty"`
	// Compare groups scenarios that the report puts side by side (the CAP/BASE pair).
	Compare string `yaml:"compare" json:"compare,omitempty"`
	// Seed makes the workload and the fault schedule reproducible. Default 1; --seed wins.
	Seed uint64 `yaml:"seed" json:"seed"`
	// Topology is what runs.
	Topology Topology `yaml:"topology" json:"topology"`
	// Workload is what the client asks for.
	Workload Workload `yaml:"workload" json:"workload"`
	// Timeline is the faults, each at an offset from the start of the workload.
	Timeline []Fault `yaml:"timeline" json:"timeline,omitempty"`
	// RandomFaults adds faults drawn from the seed to the timeline.
	RandomFaults *RandomFaults `yaml:"random_faults" json:"random_faults,omitempty"`
	// Invariants to check; default every one that applies to the workload.
	Invariants []string `yaml:"invariants" json:"invariants"`
	// Expect relaxes or tightens the checks for what the scenario provokes on purpose.
	Expect Expect `yaml:"expect" json:"expect"`
	// Settle is how long, after the workload ended and the last fault healed, the system may take
	// to reach quiescence. Default 60s.
	Settle Duration `yaml:"settle" json:"settle"`

	// dir is the directory of the scenario file; workload files are relative to it.
	dir string
}

// Topology is the processes of a scenario and where they run.
type Topology struct {
	// Coordinators; default one named "c1".
	Coordinators []CoordinatorSpec `yaml:"coordinators" json:"coordinators"`
	// Sims are participant-sim processes.
	Sims []SimSpec `yaml:"participant_sims" json:"participant_sims"`
	// QueueType is classic (default) or quorum.
	QueueType string `yaml:"queue_type" json:"queue_type"`
	// PrivatePostgres runs a PostgreSQL instance of the scenario's own (needed to restart it).
	PrivatePostgres bool `yaml:"private_postgres" json:"private_postgres,omitempty"`
	// PrivateRabbitMQ runs a RabbitMQ node of the scenario's own (needed to crash it or raise a
	// memory alarm).
	PrivateRabbitMQ bool `yaml:"private_rabbitmq" json:"private_rabbitmq,omitempty"`
}

// CoordinatorSpec is one coordinator process.
type CoordinatorSpec struct {
	Name string `yaml:"name" json:"name"`
	// Flags are added to every start of `coordinator serve`.
	Flags []string `yaml:"flags" json:"flags,omitempty"`
	// FirstRunFlags are added to the first start only (a crash point that must not repeat
	// after the restart, such as --test-crash-after-confirm).
	FirstRunFlags []string `yaml:"first_run_flags" json:"first_run_flags,omitempty"`
	// RestartOnExit restarts the process this long after it exits on its own (a crash point);
	// zero leaves it down.
	RestartOnExit Duration `yaml:"restart_on_exit" json:"restart_on_exit,omitempty"`
	// Workload: whether clients send requests to this coordinator. Default true.
	Workload *bool `yaml:"workload" json:"workload,omitempty"`
}

// SimSpec is one participant-sim process with its participants.
type SimSpec struct {
	Name         string           `yaml:"name" json:"name"`
	Participants []SimParticipant `yaml:"participants" json:"participants"`
	// Flags are added to the participant-sim command line.
	Flags []string `yaml:"flags" json:"flags,omitempty"`
	// RestartOnExit restarts the process this long after it exits on its own (an injected
	// crash_after_commit); zero leaves it down.
	RestartOnExit Duration `yaml:"restart_on_exit" json:"restart_on_exit,omitempty"`
}

// SimParticipant is one simulated participant: the participant-sim config file's entry.
type SimParticipant struct {
	Name           string               `yaml:"name" json:"name"`
	Kind           string               `yaml:"kind" json:"kind"`
	SeedAccounts   int                  `yaml:"seed_accounts" json:"seed_accounts,omitempty"`
	InitialBalance int64                `yaml:"initial_balance" json:"initial_balance,omitempty"`
	Prefetch       int                  `yaml:"prefetch" json:"prefetch,omitempty"`
	Concurrency    int                  `yaml:"concurrency" json:"concurrency,omitempty"`
	Faults         map[string]SimFaults `yaml:"faults" json:"faults,omitempty"`
}

// SimFaults are participant-sim's fault knobs of one action (see participant-sim --help).
type SimFaults struct {
	FailProbability             float64  `yaml:"fail_probability" json:"fail_probability,omitempty"`
	RetryProbability            float64  `yaml:"retry_probability" json:"retry_probability,omitempty"`
	Latency                     Duration `yaml:"latency" json:"latency,omitempty"`
	HangProbability             float64  `yaml:"hang_probability" json:"hang_probability,omitempty"`
	CrashAfterCommitProbability float64  `yaml:"crash_after_commit_probability" json:"crash_after_commit_probability,omitempty"`
}

// Workload is what the scenario's client asks for.
type Workload struct {
	// Kind is "saga" (default) or "2pc".
	Kind string `yaml:"kind" json:"kind"`
	// Definition is the saga definition file, relative to the scenario file (saga only).
	Definition string `yaml:"definition" json:"definition,omitempty"`
	// Count is the number of sagas or transactions. Default 100.
	Count int `yaml:"count" json:"count"`
	// Concurrency is the number of requests in flight. Default 8.
	Concurrency int `yaml:"concurrency" json:"concurrency"`
	// Rate limits starts per second; 0 means as fast as Concurrency allows.
	Rate float64 `yaml:"rate" json:"rate,omitempty"`
	// Input says how each saga's input (or each transaction's payloads) is made.
	Input Input `yaml:"input" json:"input"`
	// Participants of each 2PC transaction, in order (2pc only); the transfer generator debits
	// at the first and credits at the second.
	Participants []string `yaml:"participants" json:"participants,omitempty"`
	// PrepareTimeout of each 2PC transaction; default the coordinator's.
	PrepareTimeout Duration `yaml:"prepare_timeout" json:"prepare_timeout,omitempty"`
	// RequestDeadline bounds how long one start is retried while no coordinator answers.
	// Default 60s.
	RequestDeadline Duration `yaml:"request_deadline" json:"request_deadline,omitempty"`
}

// Input generators.
const (
	GenTransfer = "transfer" // {"from":"acct-i","to":"acct-j","amount":n}
	GenOrder    = "order"    // {"sku":"sku-i","qty":n,"account":"cust-j","amount":n}
	GenEmpty    = "empty"    // {}
)

// Input describes the generated inputs.
type Input struct {
	// Generator is transfer (default), order or empty.
	Generator string `yaml:"generator" json:"generator"`
	// Accounts is how many accounts (or SKUs) are drawn from: acct-1..acct-N. Default 20.
	Accounts int `yaml:"accounts" json:"accounts"`
	// MinAmount and MaxAmount bound each amount. Default 1 and 100.
	MinAmount int64 `yaml:"min_amount" json:"min_amount"`
	MaxAmount int64 `yaml:"max_amount" json:"max_amount"`
}

// Fault is one entry of the timeline.
type Fault struct {
	// At is the offset from the start of the workload.
	At Duration `yaml:"at" json:"at"`
	// Duration: how long the fault lasts before it is healed (SIGCONT, link up, alarm cleared,
	// restart after a SIGKILL). Zero for instantaneous faults.
	Duration Duration `yaml:"duration" json:"duration,omitempty"`
	// Kind is one of the FaultKinds.
	Kind string `yaml:"kind" json:"kind"`
	// Target names what the fault hits; its form depends on the kind (see scenarios/README.md).
	Target string `yaml:"target" json:"target"`
	// Latency and Jitter of a latency fault.
	Latency Duration `yaml:"latency" json:"latency,omitempty"`
	Jitter  Duration `yaml:"jitter" json:"jitter,omitempty"`
	// Count of messages to inject (inject_duplicate, inject_poison). Default 10.
	Count int `yaml:"count" json:"count,omitempty"`
}

// RandomFaults draws Count faults from the seed: each at a random time in [From, To), of a kind
// and target drawn from Choices, with a duration in [MinDuration, MaxDuration].
type RandomFaults struct {
	Count       int      `yaml:"count" json:"count"`
	From        Duration `yaml:"from" json:"from"`
	To          Duration `yaml:"to" json:"to"`
	MinDuration Duration `yaml:"min_duration" json:"min_duration"`
	MaxDuration Duration `yaml:"max_duration" json:"max_duration"`
	Choices     []Fault  `yaml:"choices" json:"choices"`
}

// Expect says what a scenario provokes on purpose.
type Expect struct {
	// AllowFailed accepts sagas parked in FAILED (G1) and leaves their effects out of G3 and G6.
	AllowFailed bool `yaml:"allow_failed" json:"allow_failed,omitempty"`
	// MinFailed is the least number of FAILED sagas the scenario must produce (it implies
	// AllowFailed).
	MinFailed int `yaml:"min_failed" json:"min_failed,omitempty"`
	// MinCompensated is the least number of COMPENSATED sagas (or ABORTED transactions).
	MinCompensated int `yaml:"min_compensated" json:"min_compensated,omitempty"`
	// DeadLetters is how many dead letters beyond the injected poison messages are acceptable
	// (G5). Default 0.
	DeadLetters int `yaml:"dead_letters" json:"dead_letters,omitempty"`
	// AbortedAtCrashPoint requires (T1) that a coordinator started with
	// --test-crash-before-decision reached its crash point, and that every 2PC transaction it
	// crashed on ended ABORTED: presumed abort, when the restart comes after the prepare timeout
	// and no other coordinator takes over before it (catalogue 11).
	AbortedAtCrashPoint bool `yaml:"aborted_at_crash_point" json:"aborted_at_crash_point,omitempty"`
}

// Fault kinds.
const (
	FaultSIGKILL         = "sigkill"          // process; with duration: restarted after it
	FaultSIGSTOP         = "sigstop"          // process; SIGCONT after duration
	FaultRestart         = "restart"          // process; SIGTERM, wait, start again
	FaultLinkDown        = "link_down"        // link; connections cut and refused for duration
	FaultLatency         = "latency"          // link; latency (+jitter) both ways for duration
	FaultResetPeer       = "reset_peer"       // link; connections reset (TCP RST) for duration
	FaultBlackhole       = "blackhole"        // link; data silently dropped, connections kept open
	FaultTimeout         = "timeout"          // link; data dropped and connections closed after 1s
	FaultPGTerminate     = "pg_terminate"     // process or "all": pg_terminate_backend on its connections
	FaultDuplicate       = "inject_duplicate" // "commands" or "replies": re-publish copies of real messages
	FaultPoison          = "inject_poison"    // "participant:NAME" or "replies": publish garbage
	FaultRabbitMQRestart = "rabbitmq_restart" // "rabbitmq" (private): SIGKILL the node, start it after duration
	FaultMemoryAlarm     = "memory_alarm"     // "rabbitmq" (private): memory alarm for duration
	FaultPostgresRestart = "postgres_restart" // "postgres" (private): immediate shutdown, start after duration
)

// FaultKinds lists every fault kind.
var FaultKinds = []string{
	FaultSIGKILL, FaultSIGSTOP, FaultRestart,
	FaultLinkDown, FaultLatency, FaultResetPeer, FaultBlackhole, FaultTimeout,
	FaultPGTerminate, FaultDuplicate, FaultPoison,
	FaultRabbitMQRestart, FaultMemoryAlarm, FaultPostgresRestart,
}

// usesTestHooks reports whether a coordinator of the scenario is started with a test hook.
func (s *Scenario) usesTestHooks() bool {
	return slices.ContainsFunc(s.Topology.Coordinators, CoordinatorSpec.usesTestHooks)
}

// usesTestHooks reports whether the coordinator is started with a test hook (a --test-* flag,
// which only the coordinator built with -tags testhooks has).
func (c CoordinatorSpec) usesTestHooks() bool {
	isHook := func(f string) bool { return strings.HasPrefix(f, "--test-") }
	return slices.ContainsFunc(c.Flags, isHook) || slices.ContainsFunc(c.FirstRunFlags, isHook)
}

func isProcessFault(k string) bool {
	return k == FaultSIGKILL || k == FaultSIGSTOP || k == FaultRestart
}

func isLinkFault(k string) bool {
	switch k {
	case FaultLinkDown, FaultLatency, FaultResetPeer, FaultBlackhole, FaultTimeout:
		return true
	}
	return false
}

// Invariant names.
const (
	G1 = "G1"
	G2 = "G2"
	G3 = "G3"
	G4 = "G4"
	G5 = "G5"
	G6 = "G6"
	G7 = "G7"
	T1 = "T1"
)

// AllInvariants lists the invariants in report order.
var AllInvariants = []string{G1, G2, G3, G4, G5, G6, G7, T1}

// Workload kinds.
const (
	WorkloadSaga  = "saga"
	WorkloadTwoPC = "2pc"
)

// Link ends.
const (
	EndPostgres = "postgres"
	EndRabbitMQ = "rabbitmq"
)

// LoadFile reads and checks a scenario file.
func LoadFile(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	if s.Name == "" {
		s.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	s.dir = filepath.Dir(path)
	return s, nil
}

// LoadDir reads every *.yaml and *.yml scenario of dir, sorted by file name.
func LoadDir(dir string) ([]*Scenario, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []*Scenario
	var errs []error
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		s, err := LoadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no scenario files (*.yaml) in %s", dir)
	}
	names := map[string]bool{}
	for _, s := range out {
		if names[s.Name] {
			return nil, fmt.Errorf("two scenarios in %s are named %q", dir, s.Name)
		}
		names[s.Name] = true
	}
	return out, nil
}

// Parse decodes a scenario strictly (an unknown field is an error that names it and its line),
// fills the defaults and checks it.
func Parse(data []byte) (*Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var s Scenario
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty scenario")
		}
		return nil, err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("a scenario file holds one YAML document; found a second after '---'")
	}
	s.withDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Scenario) withDefaults() {
	if s.Seed == 0 {
		s.Seed = 1
	}
	if s.Settle == 0 {
		s.Settle = Duration(60 * time.Second)
	}
	t := &s.Topology
	if len(t.Coordinators) == 0 {
		t.Coordinators = []CoordinatorSpec{{Name: "c1"}}
	}
	if t.QueueType == "" {
		t.QueueType = "classic"
	}
	w := &s.Workload
	if w.Kind == "" {
		w.Kind = WorkloadSaga
	}
	if w.Count == 0 {
		w.Count = 100
	}
	if w.Concurrency == 0 {
		w.Concurrency = 8
	}
	if w.RequestDeadline == 0 {
		w.RequestDeadline = Duration(60 * time.Second)
	}
	in := &w.Input
	if in.Generator == "" {
		in.Generator = GenTransfer
	}
	if in.Accounts == 0 {
		in.Accounts = 20
	}
	if in.MinAmount == 0 {
		in.MinAmount = 1
	}
	if in.MaxAmount == 0 {
		in.MaxAmount = max(100, in.MinAmount)
	}
	for i := range s.Timeline {
		if (s.Timeline[i].Kind == FaultDuplicate || s.Timeline[i].Kind == FaultPoison) && s.Timeline[i].Count == 0 {
			s.Timeline[i].Count = 10
		}
	}
	if len(s.Invariants) == 0 {
		if w.Kind == WorkloadTwoPC {
			s.Invariants = []string{G1, G4, G5, G6, T1}
		} else {
			s.Invariants = []string{G1, G2, G3, G4, G5, G6, G7}
		}
	}
	if s.Expect.MinFailed > 0 {
		s.Expect.AllowFailed = true
	}
}

var (
	procNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
	partNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
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
func (s *Scenario) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, c := range s.Catalogue {
		if c < 1 || c > 18 {
			bad("catalogue: %d is not a DESIGN section 5 entry (1-18)", c)
		}
	}
	t := s.Topology
	if t.QueueType != "classic" && t.QueueType != "quorum" {
		bad("topology.queue_type: %q must be classic or quorum", t.QueueType)
	}
	procs := map[string]bool{}
	for i, c := range t.Coordinators {
		if !procNameRE.MatchString(c.Name) {
			bad("topology.coordinators[%d].name: %q must be lower-case letters, digits and '-', starting with a letter (at most 31)", i, c.Name)
		}
		if procs[c.Name] || c.Name == EndPostgres || c.Name == EndRabbitMQ || c.Name == "all" {
			bad("topology.coordinators[%d].name: %q is taken", i, c.Name)
		}
		procs[c.Name] = true
		for _, f := range append(slices.Clone(c.Flags), c.FirstRunFlags...) {
			if !strings.HasPrefix(f, "--") {
				bad("topology.coordinators[%d]: flag %q must start with --", i, f)
			}
			for _, reserved := range []string{"--database-url", "--amqp-url", "--listen", "--name", "--queue-type"} {
				if f == reserved || strings.HasPrefix(f, reserved+"=") {
					bad("topology.coordinators[%d]: flag %s is set by the runner", i, reserved)
				}
			}
		}
	}
	wants := 0
	for _, c := range t.Coordinators {
		if c.Workload == nil || *c.Workload {
			wants++
		}
	}
	if wants == 0 {
		bad("topology.coordinators: at least one coordinator must take the workload")
	}
	parts := map[string]string{}
	if len(t.Sims) == 0 {
		bad("topology.participant_sims: at least one participant-sim is needed")
	}
	for i, p := range t.Sims {
		where := fmt.Sprintf("topology.participant_sims[%d]", i)
		if !procNameRE.MatchString(p.Name) {
			bad("%s.name: %q must be lower-case letters, digits and '-', starting with a letter (at most 31)", where, p.Name)
		}
		if procs[p.Name] || p.Name == EndPostgres || p.Name == EndRabbitMQ || p.Name == "all" {
			bad("%s.name: %q is taken", where, p.Name)
		}
		procs[p.Name] = true
		if len(p.Participants) == 0 {
			bad("%s.participants: empty", where)
		}
		for _, f := range p.Flags {
			if !strings.HasPrefix(f, "--") {
				bad("%s: flag %q must start with --", where, f)
			}
			for _, reserved := range []string{"--database-url", "--amqp-url", "--config", "--participants", "--queue-type", "--schema-prefix"} {
				if f == reserved || strings.HasPrefix(f, reserved+"=") {
					bad("%s: flag %s is set by the runner", where, reserved)
				}
			}
		}
		for j, q := range p.Participants {
			pw := fmt.Sprintf("%s.participants[%d]", where, j)
			if !partNameRE.MatchString(q.Name) {
				bad("%s.name: %q must be letters, digits, '.', '_' or '-' (at most 63)", pw, q.Name)
			}
			if _, dup := parts[q.Name]; dup {
				bad("%s.name: participant %q is listed twice", pw, q.Name)
			}
			parts[q.Name] = q.Kind
			if !slices.Contains(simKinds, q.Kind) {
				bad("%s.kind: %q must be one of %s", pw, q.Kind, strings.Join(simKinds, ", "))
			}
			if q.SeedAccounts < 0 || q.InitialBalance < 0 || q.Prefetch < 0 || q.Concurrency < 0 {
				bad("%s: seed_accounts, initial_balance, prefetch and concurrency must not be negative", pw)
			}
			for action, f := range q.Faults {
				for _, p := range []struct {
					n string
					v float64
				}{{"fail_probability", f.FailProbability}, {"retry_probability", f.RetryProbability}, {"hang_probability", f.HangProbability}, {"crash_after_commit_probability", f.CrashAfterCommitProbability}} {
					if p.v < 0 || p.v > 1 {
						bad("%s.faults.%s.%s: %v must be between 0 and 1", pw, action, p.n, p.v)
					}
				}
			}
		}
	}
	w := s.Workload
	switch w.Kind {
	case WorkloadSaga:
		if w.Definition == "" {
			bad("workload.definition: a saga workload needs a definition file")
		}
		if len(w.Participants) > 0 {
			bad("workload.participants: only for a 2pc workload (a saga's participants are in its definition)")
		}
	case WorkloadTwoPC:
		if w.Definition != "" {
			bad("workload.definition: a 2pc workload has no definition; list workload.participants")
		}
		if len(w.Participants) < 1 {
			bad("workload.participants: a 2pc workload needs at least one participant")
		}
		for i, p := range w.Participants {
			if _, ok := parts[p]; !ok {
				bad("workload.participants[%d]: %q is not a participant of any participant_sim", i, p)
			}
		}
	default:
		bad("workload.kind: %q must be saga or 2pc", w.Kind)
	}
	if w.Count < 1 || w.Count > 1_000_000 {
		bad("workload.count: %d must be between 1 and 1000000", w.Count)
	}
	if w.Concurrency < 1 || w.Concurrency > 1024 {
		bad("workload.concurrency: %d must be between 1 and 1024", w.Concurrency)
	}
	if w.Rate < 0 || w.Rate > 100000 {
		bad("workload.rate: %v must be between 0 (unlimited) and 100000 per second", w.Rate)
	}
	in := w.Input
	if !slices.Contains([]string{GenTransfer, GenOrder, GenEmpty}, in.Generator) {
		bad("workload.input.generator: %q must be transfer, order or empty", in.Generator)
	}
	if in.Accounts < 1 || in.MinAmount < 1 || in.MaxAmount < in.MinAmount {
		bad("workload.input: accounts and min_amount must be at least 1 and max_amount at least min_amount")
	}
	for i, f := range s.Timeline {
		if err := s.validateFault(f, procs); err != nil {
			bad("timeline[%d]: %v", i, err)
		}
	}
	if r := s.RandomFaults; r != nil {
		if r.Count < 1 || r.Count > 1000 {
			bad("random_faults.count: %d must be between 1 and 1000", r.Count)
		}
		if r.To <= r.From {
			bad("random_faults: to (%s) must be after from (%s)", r.To.D(), r.From.D())
		}
		if r.MaxDuration < r.MinDuration {
			bad("random_faults: max_duration must be at least min_duration")
		}
		if len(r.Choices) == 0 {
			bad("random_faults.choices: empty")
		}
		for i, f := range r.Choices {
			if f.At != 0 || f.Duration != 0 {
				bad("random_faults.choices[%d]: at and duration are drawn; leave them out", i)
			}
			f.Duration = r.MinDuration
			if f.Kind == FaultDuplicate || f.Kind == FaultPoison {
				f.Count = max(f.Count, 1)
			}
			if err := s.validateFault(f, procs); err != nil {
				bad("random_faults.choices[%d]: %v", i, err)
			}
		}
	}
	for i, inv := range s.Invariants {
		if !slices.Contains(AllInvariants, inv) {
			bad("invariants[%d]: %q must be one of %s", i, inv, strings.Join(AllInvariants, ", "))
		}
	}
	if s.Expect.MinFailed < 0 || s.Expect.MinCompensated < 0 || s.Expect.DeadLetters < 0 {
		bad("expect: counts must not be negative")
	}
	if s.Settle.D() > time.Hour {
		bad("settle: %s is longer than an hour", s.Settle.D())
	}
	return errors.Join(errs...)
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

// ScheduledFault is a timeline entry as the runner applies it.
type ScheduledFault struct {
	Fault
	// Random marks a fault drawn by random_faults.
	Random bool `json:"random,omitempty"`
}

// Schedule returns the timeline with the random faults drawn from seed, sorted by time. The same
// scenario and seed give the same schedule.
func (s *Scenario) Schedule(seed uint64) []ScheduledFault {
	var out []ScheduledFault
	for _, f := range s.Timeline {
		out = append(out, ScheduledFault{Fault: f})
	}
	if r := s.RandomFaults; r != nil {
		rng := newRand(seed, s.Name, "faults")
		for range r.Count {
			c := r.Choices[rng.intn(len(r.Choices))]
			c.At = Duration(int64(r.From) + rng.int63n(int64(r.To-r.From)))
			c.Duration = r.MinDuration
			if r.MaxDuration > r.MinDuration {
				c.Duration += Duration(rng.int63n(int64(r.MaxDuration - r.MinDuration + 1)))
			}
			if c.Kind == FaultDuplicate || c.Kind == FaultPoison {
				c.Count = max(c.Count, 10)
			}
			if c.Kind == FaultRestart || c.Kind == FaultPGTerminate || c.Kind == FaultDuplicate || c.Kind == FaultPoison {
				c.Duration = 0
			}
			out = append(out, ScheduledFault{Fault: c, Random: true})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}
