// Package chaos runs fault-injection scenarios against real coordinator and participant-sim
// processes and checks the invariants G1-G9 and T1 (defined in docs/guarantees.md; how they are
// checked is in docs/chaos.md) at quiescence.
//
// A scenario (a YAML file, see scenarios/README.md) names a topology, a workload, a timeline of
// faults, the invariants to check and how long the system may take to settle. Run starts the
// processes, drives the workload over gRPC, applies the faults, waits, checks, and returns a
// Result; a Report gathers the results of several runs, and Report.Write renders it as
// report.json and a self-contained report.html.
package chaos

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as a Go duration string ("250ms", "1m30s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML accepts a duration string; a bare number is refused so that "10" is never read as
// ten nanoseconds. Its errors are valueErrors, which parse places at their field.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!int" || n.Tag == "!!float" {
		return &valueError{line: n.Line, col: n.Column, msg: fmt.Sprintf("a duration is a string with a unit such as \"10s\" or \"250ms\", not %q", n.Value)}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &valueError{line: n.Line, col: n.Column, msg: err.Error()}
	}
	if v < 0 {
		return &valueError{line: n.Line, col: n.Column, msg: fmt.Sprintf("duration %s must not be negative", n.Value)}
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
	// Catalogue lists the entries of the failure catalogue (1-18, docs/guarantees.md) that the
	// scenario covers.
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
	// Workloads runs a saga workload and a 2PC workload at the same time, each checked by its
	// own invariants; instead of Workload. After parsing it lists every workload (Workload alone,
	// or these), and Workload is the first.
	Workloads []Workload `yaml:"workloads" json:"workloads,omitempty"`
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
	// mixedGiven: the file gave workloads:; bothGiven: it gave workload: too (an error).
	mixedGiven, bothGiven bool
}

// workloadOf returns the scenario's workload of kind, nil without one.
func (s *Scenario) workloadOf(kind string) *Workload {
	for i := range s.Workloads {
		if s.Workloads[i].Kind == kind {
			return &s.Workloads[i]
		}
	}
	if len(s.Workloads) == 0 && s.Workload.Kind == kind {
		return &s.Workload
	}
	return nil
}

// hasKind reports whether the scenario runs a workload of kind.
func (s *Scenario) hasKind(kind string) bool { return s.workloadOf(kind) != nil }

// mixed reports whether the scenario runs saga and 2PC load at once.
func (s *Scenario) mixed() bool { return s.hasKind(WorkloadSaga) && s.hasKind(WorkloadTwoPC) }

// KindLabel names the scenario's workload kinds for reports: saga, 2pc or saga+2pc.
func (s *Scenario) KindLabel() string {
	if s.mixed() {
		return WorkloadSaga + "+" + WorkloadTwoPC
	}
	return s.Workload.Kind
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
	// DBMaxConns is the coordinator's --db-max-conns. Default DefaultCoordinatorDBConns: small,
	// because the machine's PostgreSQL is shared (max_connections 100).
	DBMaxConns int `yaml:"db_max_conns" json:"db_max_conns"`
}

// Defaults of the settings the runner passes to every process; the report lists them.
const (
	// DefaultCoordinatorDBConns is a coordinator's database pool size.
	DefaultCoordinatorDBConns = 6
	// DefaultSimDBConns is a participant-sim's database pool size: each handler in flight holds
	// one connection, so a hanging handler (hang_probability) holds one too.
	DefaultSimDBConns = 8
	// maxDBConns bounds both: the shared PostgreSQL has 100 connections.
	maxDBConns = 90
)

// SimSpec is one participant-sim process with its participants.
type SimSpec struct {
	Name         string           `yaml:"name" json:"name"`
	Participants []SimParticipant `yaml:"participants" json:"participants"`
	// Flags are added to the participant-sim command line.
	Flags []string `yaml:"flags" json:"flags,omitempty"`
	// RestartOnExit restarts the process this long after it exits on its own (an injected
	// crash_after_commit); zero leaves it down.
	RestartOnExit Duration `yaml:"restart_on_exit" json:"restart_on_exit,omitempty"`
	// DBMaxConns is participant-sim's --db-max-conns, shared by its participants. Default
	// DefaultSimDBConns.
	DBMaxConns int `yaml:"db_max_conns" json:"db_max_conns"`
}

// SimParticipant is one simulated participant: the participant-sim config file's entry.
type SimParticipant struct {
	Name           string `yaml:"name" json:"name"`
	Kind           string `yaml:"kind" json:"kind"`
	SeedAccounts   int    `yaml:"seed_accounts" json:"seed_accounts,omitempty"`
	InitialBalance int64  `yaml:"initial_balance" json:"initial_balance,omitempty"`
	// Prefetch, Concurrency and MaxBatch of the participant's worker (participant.Config).
	// Defaults: participant.DefaultPrefetch (32), Prefetch, and participant.DefaultMaxBatch (1:
	// a local transaction per command).
	Prefetch    int                  `yaml:"prefetch" json:"prefetch"`
	Concurrency int                  `yaml:"concurrency" json:"concurrency"`
	MaxBatch    int                  `yaml:"max_batch" json:"max_batch"`
	Faults      map[string]SimFaults `yaml:"faults" json:"faults,omitempty"`
}

// SimFaults are participant-sim's fault knobs of one action (see participant-sim --help).
type SimFaults struct {
	FailProbability  float64  `yaml:"fail_probability" json:"fail_probability,omitempty"`
	RetryProbability float64  `yaml:"retry_probability" json:"retry_probability,omitempty"`
	Latency          Duration `yaml:"latency" json:"latency,omitempty"`
	HangProbability  float64  `yaml:"hang_probability" json:"hang_probability,omitempty"`
	// HangFor bounds each hang: the handler blocks this long, then goes on and replies late
	// (participant-sim keeps the SDK's handler deadline for it). Nil: hangs last until shutdown.
	HangFor                     *Duration `yaml:"hang_for" json:"hang_for,omitempty"`
	CrashAfterCommitProbability float64   `yaml:"crash_after_commit_probability" json:"crash_after_commit_probability,omitempty"`
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
	// Every repeats the entry: at At, then every Every, either For long (each repetition starts
	// before At+For) or Times times. The parser expands it into one entry per repetition.
	Every Duration `yaml:"every" json:"every,omitempty"`
	For   Duration `yaml:"for" json:"for,omitempty"`
	Times int      `yaml:"times" json:"times,omitempty"`
	// When triggers the fault by the state of the run's database instead of at a time: from At
	// on, the condition is polled every 100ms, and the fault applied as soon as it holds; if it
	// does not hold within Timeout (default 60s) the fault did not take effect (INCONCLUSIVE).
	When    *Condition `yaml:"when" json:"when,omitempty"`
	Timeout Duration   `yaml:"timeout" json:"timeout,omitempty"`
	// Repetition numbers the entries expanded from one with every: (1 to Repetitions); zero for
	// an entry written once.
	Repetition  int `yaml:"-" json:"repetition,omitempty"`
	Repetitions int `yaml:"-" json:"repetitions,omitempty"`
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
	// Recovered names processes that a fault kills, freezes or restarts (or that crash on their
	// own and restart): R1 requires that each runs again at the end, is healthy (a coordinator's
	// gRPC health SERVING, a participant-sim's current instance ready) and did work after its
	// last fault healed (its metrics: steps answered and work finished by a coordinator, commands
	// decided by a participant-sim).
	Recovered []string `yaml:"recovered" json:"recovered,omitempty"`
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

// takesDuration reports whether a fault of kind k can last (healed after its duration); the
// others are instantaneous, and a duration on them would be ignored, so it is refused.
func takesDuration(k string) bool {
	switch k {
	case FaultRestart, FaultPGTerminate, FaultDuplicate, FaultPoison:
		return false
	}
	return true
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
	G8 = "G8"
	G9 = "G9"
	T1 = "T1"
)

// AllInvariants lists the invariants and checks in report order.
var AllInvariants = []string{G1, G2, G3, G4, G5, G6, G7, G8, G9, T1, R1}

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
