package chaos

import "fmt"

// Result statuses.
const (
	StatusPassed  = "passed"
	StatusFailed  = "failed"
	StatusSkipped = "skipped"
	StatusError   = "error"
	// StatusInconclusive: every invariant held, but a fault did not take effect (or its heal
	// failed), so the run did not test what the scenario says.
	StatusInconclusive = "inconclusive"
)

// Result is the outcome of one scenario run.
type Result struct {
	Scenario *Scenario `json:"scenario"`
	Seed     uint64    `json:"seed"`
	Broken   bool      `json:"broken,omitempty"`
	// Status is passed (every invariant held and every fault took effect), failed (an invariant
	// did not hold), inconclusive (every invariant held but a fault did not take effect or was
	// not healed; Ineffective says which and why), skipped (a private instance's binaries are
	// missing; Reason says which) or error (the run itself broke).
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Ineffective names each fault that did not take effect, or whose heal failed, and why. It
	// makes a run inconclusive, and is listed with a failed one too.
	Ineffective []string `json:"ineffective_faults,omitempty"`

	Invariants []InvariantResult `json:"invariants"`
	Workload   workloadResult    `json:"workload"`
	// Final counts sagas (or transactions) by status.
	Final map[string]int `json:"final"`

	Faults  []AppliedFault `json:"faults"`
	Events  []Event        `json:"events"`
	Samples []Sample       `json:"samples"`

	// LastFault is when the last fault began (was applied, or a process crashed on its own), in
	// seconds from the start of the workload.
	LastFault float64 `json:"last_fault_s"`
	// LastHeal is when the last fault was healed (seconds).
	LastHeal float64 `json:"last_heal_s"`
	// Converged is when the last saga or transaction reached its final state (seconds).
	Converged float64 `json:"converged_s"`
	// ConvergedBeforeHeal is when everything started before the last heal was final (seconds):
	// the work the faults could have touched.
	ConvergedBeforeHeal float64 `json:"converged_before_heal_s"`
	// Convergence is ConvergedBeforeHeal - LastHeal and ConvergenceFromFault is
	// ConvergedBeforeHeal - LastFault (each at least 0): how long after the last heal, and after
	// the last fault began, that work was all final; -1 if not everything finished (G1 failed).
	Convergence          float64 `json:"convergence_s"`
	ConvergenceFromFault float64 `json:"convergence_from_fault_s"`
	// Figures compares runs under a partition (the CAP/BASE pair).
	Figures Figures `json:"figures"`
	// Elapsed is the whole run, setup and checks included (seconds).
	Elapsed float64 `json:"elapsed_s"`
	LogDir  string  `json:"log_dir"`
	// DatabaseDump is the pg_dump (plain SQL) of the run's coordinator and participant schemas,
	// taken after the checks and before cleanup; DumpError says why there is none.
	DatabaseDump string `json:"database_dump,omitempty"`
	DumpError    string `json:"database_dump_error,omitempty"`
}

// Figures are the numbers the CAP/BASE comparison puts side by side.
type Figures struct {
	// FaultFrom and FaultTo are the first fault's start and the last heal (seconds).
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

func (res *Result) invariant(name string) *InvariantResult {
	for i := range res.Invariants {
		if res.Invariants[i].Name == name {
			return &res.Invariants[i]
		}
	}
	return nil
}

// runVerdict decides the status of a run whose checks ran: failed when an invariant was violated,
// else inconclusive when a fault did not take effect or was not healed, else passed. It returns
// the faults that went wrong, each named with why.
func runVerdict(invariants []InvariantResult, faults []AppliedFault) (string, []string) {
	var ineffective []string
	for i, a := range faults {
		if a.Error != "" {
			ineffective = append(ineffective, fmt.Sprintf("fault %d (%s at %s): %s", i+1, describe(a.ScheduledFault), a.At.D(), a.Error))
		}
	}
	for _, inv := range invariants {
		if !inv.Passed {
			return StatusFailed, ineffective
		}
	}
	if len(ineffective) > 0 {
		return StatusInconclusive, ineffective
	}
	return StatusPassed, nil
}
