package chaos

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Condition is a timeline entry's when: the state of the run's database that triggers the
// fault. Exactly one of its fields is set.
type Condition struct {
	// TwoPCCommittingAtLeast: at least this many 2PC transactions are COMMITTING (decided,
	// decision not yet acknowledged by every participant).
	TwoPCCommittingAtLeast *int `yaml:"twopc_committing_at_least" json:"twopc_committing_at_least,omitempty"`
	// OutboxRowsAbove: the coordinators' outbox holds more than this many rows.
	OutboxRowsAbove *int `yaml:"outbox_rows_above" json:"outbox_rows_above,omitempty"`
	// SagasOpenAtLeast: at least this many sagas are not final (RUNNING or COMPENSATING).
	SagasOpenAtLeast *int `yaml:"sagas_open_at_least" json:"sagas_open_at_least,omitempty"`
	// StepDispatched: a saga of the definition has had the step sent (the step is past PENDING).
	StepDispatched *StepRef `yaml:"step_dispatched" json:"step_dispatched,omitempty"`
}

// StepRef names a step of a saga definition.
type StepRef struct {
	Definition string `yaml:"definition" json:"definition"`
	Step       string `yaml:"step" json:"step"`
}

// conditionKeys are the keys of when:, in the order the errors list them.
var conditionKeys = []string{"twopc_committing_at_least", "outbox_rows_above", "sagas_open_at_least", "step_dispatched"}

// Defaults and bounds of a state-triggered fault.
const (
	defaultWhenTimeout = 60 * time.Second
	// whenPoll is how often the condition is read from the run's database.
	whenPoll = 100 * time.Millisecond
)

// UnmarshalYAML refuses an unknown condition with its line and the known ones; the decoder
// would only say the field is not found.
func (c *Condition) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &valueError{line: n.Line, col: n.Column, msg: fmt.Sprintf("when: is a mapping with one of %s", strings.Join(conditionKeys, ", "))}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !containsString(conditionKeys, k.Value) {
			return &valueError{line: k.Line, col: k.Column, msg: fmt.Sprintf("unknown condition %q: when: takes one of %s", k.Value, strings.Join(conditionKeys, ", "))}
		}
	}
	type plain Condition
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*c = Condition(p)
	return nil
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// set lists the conditions given.
func (c *Condition) set() []string {
	var out []string
	if c.TwoPCCommittingAtLeast != nil {
		out = append(out, "twopc_committing_at_least")
	}
	if c.OutboxRowsAbove != nil {
		out = append(out, "outbox_rows_above")
	}
	if c.SagasOpenAtLeast != nil {
		out = append(out, "sagas_open_at_least")
	}
	if c.StepDispatched != nil {
		out = append(out, "step_dispatched")
	}
	sort.Strings(out)
	return out
}

// String describes the condition for the report.
func (c *Condition) String() string {
	switch {
	case c.TwoPCCommittingAtLeast != nil:
		return fmt.Sprintf("twopc_committing_at_least %d", *c.TwoPCCommittingAtLeast)
	case c.OutboxRowsAbove != nil:
		return fmt.Sprintf("outbox_rows_above %d", *c.OutboxRowsAbove)
	case c.SagasOpenAtLeast != nil:
		return fmt.Sprintf("sagas_open_at_least %d", *c.SagasOpenAtLeast)
	case c.StepDispatched != nil:
		return fmt.Sprintf("step_dispatched %s/%s", c.StepDispatched.Definition, c.StepDispatched.Step)
	}
	return "(no condition)"
}

// validateWhen checks a timeline entry's when: and timeout: (at where).
func (s *Scenario) validateWhen(bad *problems, where string, f Fault) {
	if f.When == nil {
		if f.Timeout != 0 {
			bad.at(where+".timeout", "timeout: is how long a when: condition is awaited; it needs when:")
		}
		return
	}
	if f.Every != 0 {
		bad.at(where+".when", "a fault triggered by when: happens once; leave every: out")
	}
	if f.Timeout.D() > 24*time.Hour {
		bad.at(where+".timeout", "%s is longer than 24h", f.Timeout.D())
	}
	c := f.When
	switch set := c.set(); {
	case len(set) == 0:
		bad.at(where+".when", "give one condition: %s", strings.Join(conditionKeys, ", "))
		return
	case len(set) > 1:
		bad.at(where+".when", "one condition per fault, not %s", strings.Join(set, " and "))
		return
	}
	positive := func(field string, n int, atLeast int) {
		if n < atLeast || n > 1_000_000 {
			bad.at(where+".when."+field, "%d must be between %d and 1000000", n, atLeast)
		}
	}
	switch {
	case c.TwoPCCommittingAtLeast != nil:
		positive("twopc_committing_at_least", *c.TwoPCCommittingAtLeast, 1)
		if !s.hasKind(WorkloadTwoPC) {
			bad.at(where+".when.twopc_committing_at_least", "the scenario runs no 2pc workload")
		}
	case c.OutboxRowsAbove != nil:
		positive("outbox_rows_above", *c.OutboxRowsAbove, 0)
	case c.SagasOpenAtLeast != nil:
		positive("sagas_open_at_least", *c.SagasOpenAtLeast, 1)
		if !s.hasKind(WorkloadSaga) {
			bad.at(where+".when.sagas_open_at_least", "the scenario runs no saga workload")
		}
	case c.StepDispatched != nil:
		if c.StepDispatched.Definition == "" || c.StepDispatched.Step == "" {
			bad.at(where+".when.step_dispatched", "give definition: and step:")
		}
		if !s.hasKind(WorkloadSaga) {
			bad.at(where+".when.step_dispatched", "the scenario runs no saga workload")
		}
	}
}

// checkStepConditions checks that each step_dispatched names the workload's definition (def,
// read from its file) and one of its steps.
func (s *Scenario) checkStepConditions(bad *problems, name string, steps []string) {
	for i, f := range s.Timeline {
		if f.When == nil || f.When.StepDispatched == nil {
			continue
		}
		where := fmt.Sprintf("timeline[%d].when.step_dispatched", i)
		ref := f.When.StepDispatched
		if ref.Definition != name {
			bad.at(where+".definition", "%q is not the saga workload's definition, %q", ref.Definition, name)
		}
		if !containsString(steps, ref.Step) {
			bad.at(where+".step", "%q is not a step of %s (%s)", ref.Step, name, strings.Join(steps, ", "))
		}
	}
}

// awaitCondition polls the run's database from now until f's condition holds, f's timeout
// passes (an error: the fault did not apply) or ctx ends.
func (r *run) awaitCondition(ctx context.Context, f ScheduledFault) error {
	timeout := f.Timeout.D()
	if timeout == 0 {
		timeout = defaultWhenTimeout
	}
	deadline := time.Now().Add(timeout)
	var last error
	for {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := r.conditionHolds(qctx, f.When)
		cancel()
		if ok {
			return nil
		}
		if err != nil {
			last = err // the database may be down on purpose: keep polling
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("condition %s not met within %s after %s", f.When, timeout, f.At.D())
			if last != nil {
				msg += fmt.Sprintf(" (last read failed: %v)", last)
			}
			return fmt.Errorf("%s", msg)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(whenPoll):
		}
	}
}

// conditionHolds reads the condition from the run's database once.
func (r *run) conditionHolds(ctx context.Context, c *Condition) (bool, error) {
	var n int
	switch {
	case c.TwoPCCommittingAtLeast != nil:
		err := r.admin.QueryRow(ctx, `SELECT count(*) FROM `+r.table("transactions")+` WHERE status = 'COMMITTING'`).Scan(&n)
		return err == nil && n >= *c.TwoPCCommittingAtLeast, err
	case c.OutboxRowsAbove != nil:
		err := r.admin.QueryRow(ctx, `SELECT count(*) FROM `+r.table("outbox")).Scan(&n)
		return err == nil && n > *c.OutboxRowsAbove, err
	case c.SagasOpenAtLeast != nil:
		err := r.admin.QueryRow(ctx, `SELECT count(*) FROM `+r.table("sagas")+` WHERE status IN ('RUNNING', 'COMPENSATING')`).Scan(&n)
		return err == nil && n >= *c.SagasOpenAtLeast, err
	case c.StepDispatched != nil:
		var ok bool
		err := r.admin.QueryRow(ctx, `SELECT EXISTS (
	SELECT 1 FROM `+r.table("sagas")+` s JOIN `+r.table("saga_definitions")+` d ON d.name = s.definition_name AND d.version = s.definition_version,
	       jsonb_array_elements(d.content->'steps') WITH ORDINALITY AS st(step, i)
	 WHERE d.name = $1 AND st.step->>'name' = $2
	   AND s.state->'steps'->((st.i - 1)::int)->>'status' NOT IN ('PENDING', 'SKIPPED'))`,
			c.StepDispatched.Definition, c.StepDispatched.Step).Scan(&ok)
		return err == nil && ok, err
	}
	return false, fmt.Errorf("no condition")
}
