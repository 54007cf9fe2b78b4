// Package saga holds saga definitions and the saga state machine. It knows nothing of SQL or
// AMQP: the machine takes events and returns the new state plus the commands to emit; the engine
// (internal/engine) wires it to the store and the transport.
//
// It is the coordinator's machinery, not an API for users, and may change in any release; the
// definition format users write is the gRPC API's (docs/api.md).
package saga

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
)

// Limits on definitions. Exceeding one is a validation error naming the limit.
const (
	MaxSteps           = 100
	MaxDefinitionBytes = 64 << 10
	MaxTimeout         = 24 * time.Hour
	MaxAttempts        = 1000
	// MaxDeadline bounds a saga's deadline, a definition's or the one StartSaga gives.
	MaxDeadline = 720 * time.Hour
)

// Defaults filled by WithDefaults.
const (
	DefaultTimeout        = 30 * time.Second
	DefaultMaxAttempts    = 3
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultMultiplier     = 2.0
)

// RetryPolicy says how often and how fast a step is retried. Backoff grows from InitialBackoff by
// Multiplier up to MaxBackoff; jitter (a deterministic factor between 0.5 and 1) is always applied.
type RetryPolicy struct {
	// MaxAttempts counts every attempt, the first included. Default 3.
	MaxAttempts int `json:"max_attempts"`
	// InitialBackoff is the wait before the second attempt. Default 100ms.
	InitialBackoff time.Duration `json:"initial_backoff"`
	// MaxBackoff caps the wait. Default 10s.
	MaxBackoff time.Duration `json:"max_backoff"`
	// Multiplier is the growth per attempt. Default 2.
	Multiplier float64 `json:"multiplier"`
}

// StepDefinition is one step of a saga.
type StepDefinition struct {
	Name        string `json:"name"`
	Participant string `json:"participant"`
	Action      string `json:"action"`
	// Compensation is empty when the step needs no undo.
	Compensation string `json:"compensation,omitempty"`
	// DependsOn names the steps that must succeed first. After WithDefaults it is set for every
	// step: when no step of the definition had it, each step depends on the one before.
	DependsOn         []string      `json:"depends_on,omitempty"`
	Retry             RetryPolicy   `json:"retry"`
	CompensationRetry RetryPolicy   `json:"compensation_retry"`
	Timeout           time.Duration `json:"timeout"`
	Pivot             bool          `json:"pivot,omitempty"`
}

// Definition is a versioned saga definition. Its content (everything but Version, CreatedAt and
// RegisteredBy) is immutable once registered.
type Definition struct {
	Name  string           `json:"name"`
	Steps []StepDefinition `json:"steps"`
	// Deadline is the default time a saga may run before it compensates; 0 means none.
	Deadline time.Duration `json:"deadline,omitempty"`

	Version   int       `json:"-"`
	CreatedAt time.Time `json:"-"`
	// RegisteredBy is the identity of the caller that registered this version (auth.Caller).
	RegisteredBy string `json:"-"`
}

// ValidationError is a definition problem, naming the field and the reason.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// checkName applies protocol.CheckName, the one name rule, to a field of a definition.
func checkName(field, v string) error {
	if err := protocol.CheckName(v); err != nil {
		return invalid(field, "%s", err)
	}
	return nil
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.InitialBackoff == 0 {
		p.InitialBackoff = DefaultInitialBackoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	return p
}

func (p RetryPolicy) validate(field string) error {
	switch {
	case p.MaxAttempts < 1 || p.MaxAttempts > MaxAttempts:
		return invalid(field+".max_attempts", "is %d; it must be between 1 and %d", p.MaxAttempts, MaxAttempts)
	case p.InitialBackoff < time.Millisecond:
		return invalid(field+".initial_backoff", "is %s; it must be at least 1ms", p.InitialBackoff)
	case p.MaxBackoff < p.InitialBackoff:
		return invalid(field+".max_backoff", "is %s; it must be at least initial_backoff (%s)", p.MaxBackoff, p.InitialBackoff)
	case p.MaxBackoff > MaxTimeout:
		return invalid(field+".max_backoff", "is %s; the limit is %s", p.MaxBackoff, MaxTimeout)
	case !(p.Multiplier >= 1 && p.Multiplier <= 10): // also NaN, which JSON cannot encode
		return invalid(field+".multiplier", "is %g; it must be between 1 and 10", p.Multiplier)
	}
	return nil
}

// Backoff returns the wait before attempt number next (2 for the first retry), with jitter taken
// from key so that it is deterministic for a given saga, step and attempt.
func (p RetryPolicy) Backoff(next int, key string) time.Duration {
	d := float64(p.InitialBackoff)
	for i := 2; i < next && d < float64(p.MaxBackoff); i++ {
		d *= p.Multiplier
	}
	if d > float64(p.MaxBackoff) {
		d = float64(p.MaxBackoff)
	}
	h := sha256.Sum256([]byte(key))
	frac := float64(uint16(h[0])<<8|uint16(h[1])) / 65536.0 // [0,1)
	return time.Duration(d * (0.5 + frac/2))
}

// WithDefaults returns a copy of d with every default filled in. It does not validate.
func (d Definition) WithDefaults() Definition {
	out := d
	out.Steps = make([]StepDefinition, len(d.Steps))
	anyDeps := false
	for _, s := range d.Steps {
		if len(s.DependsOn) > 0 {
			anyDeps = true
		}
	}
	for i, s := range d.Steps {
		s.Retry = s.Retry.withDefaults()
		if s.CompensationRetry == (RetryPolicy{}) {
			s.CompensationRetry = s.Retry
		} else {
			s.CompensationRetry = s.CompensationRetry.withDefaults()
		}
		if s.Timeout == 0 {
			s.Timeout = DefaultTimeout
		}
		if anyDeps {
			s.DependsOn = append([]string(nil), s.DependsOn...)
		} else if i > 0 {
			s.DependsOn = []string{d.Steps[i-1].Name}
		} else {
			s.DependsOn = nil
		}
		out.Steps[i] = s
	}
	return out
}

// Validate checks a definition that has had its defaults filled. Its error is a
// *ValidationError naming the first problem's field.
func (d Definition) Validate() error {
	if err := checkName("name", d.Name); err != nil {
		return err
	}
	if len(d.Steps) == 0 {
		return invalid("steps", "a saga needs at least one step")
	}
	if len(d.Steps) > MaxSteps {
		return invalid("steps", "has %d steps; the limit is %d", len(d.Steps), MaxSteps)
	}
	if d.Deadline < 0 || d.Deadline > MaxDeadline {
		return invalid("deadline", "is %s; it must be between 0 (none) and %s", d.Deadline, MaxDeadline)
	}
	index, err := d.validateSteps()
	if err != nil {
		return err
	}
	if err := d.validateDeps(index); err != nil {
		return err
	}
	if err := d.validateGraph(); err != nil {
		return err
	}
	if n := len(d.CanonicalJSON()); n > MaxDefinitionBytes {
		return invalid("definition", "is %d bytes encoded; the limit is %d", n, MaxDefinitionBytes)
	}
	return nil
}

// validateSteps checks each step on its own and returns the position of each step name.
func (d Definition) validateSteps() (map[string]int, error) {
	index := make(map[string]int, len(d.Steps))
	pivots := 0
	for i, s := range d.Steps {
		f := fmt.Sprintf("steps[%d]", i)
		if err := s.validate(f); err != nil {
			return nil, err
		}
		if j, dup := index[s.Name]; dup {
			return nil, invalid(f+".name", "%q is already the name of steps[%d]; step names must be unique", s.Name, j)
		}
		index[s.Name] = i
		if s.Pivot {
			pivots++
			if pivots > 1 {
				return nil, invalid(f+".pivot", "a saga has at most one pivot step")
			}
		}
	}
	return index, nil
}

// validate checks one step's own fields; f names it.
func (s StepDefinition) validate(f string) error {
	if err := checkName(f+".name", s.Name); err != nil {
		return err
	}
	if err := checkName(f+".participant", s.Participant); err != nil {
		return err
	}
	if err := checkName(f+".action", s.Action); err != nil {
		return err
	}
	if s.Compensation != "" {
		if err := checkName(f+".compensation", s.Compensation); err != nil {
			return err
		}
	}
	if s.Timeout < time.Millisecond || s.Timeout > MaxTimeout {
		return invalid(f+".timeout", "is %s; it must be between 1ms and %s", s.Timeout, MaxTimeout)
	}
	if err := s.Retry.validate(f + ".retry"); err != nil {
		return err
	}
	return s.CompensationRetry.validate(f + ".compensation_retry")
}

// validateDeps checks that every depends_on names another step, once.
func (d Definition) validateDeps(index map[string]int) error {
	for i, s := range d.Steps {
		seen := map[string]bool{}
		for k, dep := range s.DependsOn {
			f := fmt.Sprintf("steps[%d].depends_on[%d]", i, k)
			j, ok := index[dep]
			switch {
			case !ok:
				return invalid(f, "unknown step %q", dep)
			case j == i:
				return invalid(f, "step %q depends on itself", dep)
			case seen[dep]:
				return invalid(f, "%q is listed twice", dep)
			}
			seen[dep] = true
		}
	}
	return nil
}

// validateGraph checks that the dependencies have no cycle and that the pivot, if any, is
// ordered with every other step.
func (d Definition) validateGraph() error {
	g := d.Graph()
	if cycle := g.cycle(); cycle != nil {
		names := make([]string, len(cycle))
		for i, c := range cycle {
			names[i] = d.Steps[c].Name
		}
		return invalid("steps", "depends_on has a cycle: %s", strings.Join(names, " -> "))
	}
	for i, s := range d.Steps {
		if !s.Pivot {
			continue
		}
		for j := range d.Steps {
			if j != i && !g.Reaches(i, j) && !g.Reaches(j, i) {
				return invalid(fmt.Sprintf("steps[%d].pivot", i),
					"step %q may run concurrently with the pivot %q; every other step must come before or after the pivot", d.Steps[j].Name, s.Name)
			}
		}
	}
	return nil
}

// Normalize fills the defaults and validates: the one entry point for outside input.
func Normalize(d Definition) (Definition, error) {
	n := d.WithDefaults()
	if err := n.Validate(); err != nil {
		return Definition{}, err
	}
	return n, nil
}

// CanonicalJSON is the stored form of the definition's content.
func (d Definition) CanonicalJSON() []byte {
	b, err := json.Marshal(d)
	if err != nil {
		panic(fmt.Sprintf("saga: marshal definition: %v", err)) // plain data: cannot fail
	}
	return b
}

// Hash identifies the content: registering the same content again is a no-op.
func (d Definition) Hash() string {
	h := sha256.Sum256(d.CanonicalJSON())
	return hex.EncodeToString(h[:])
}

// Graph is the dependency graph of a definition by step index.
type Graph struct {
	// Deps[i] are the steps i depends on; Dependents[i] the steps that depend on i.
	Deps, Dependents [][]int
}

// Graph returns the dependency graph. Unknown names are ignored (Validate reports them).
func (d Definition) Graph() Graph {
	index := make(map[string]int, len(d.Steps))
	for i, s := range d.Steps {
		index[s.Name] = i
	}
	g := Graph{Deps: make([][]int, len(d.Steps)), Dependents: make([][]int, len(d.Steps))}
	for i, s := range d.Steps {
		for _, dep := range s.DependsOn {
			if j, ok := index[dep]; ok && j != i {
				g.Deps[i] = append(g.Deps[i], j)
				g.Dependents[j] = append(g.Dependents[j], i)
			}
		}
	}
	return g
}

// Reaches reports whether to depends, directly or transitively, on from.
func (g Graph) Reaches(from, to int) bool {
	seen := make([]bool, len(g.Deps))
	stack := []int{from}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, m := range g.Dependents[n] {
			if m == to {
				return true
			}
			if !seen[m] {
				seen[m] = true
				stack = append(stack, m)
			}
		}
	}
	return false
}

func (g Graph) cycle() []int {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(g.Deps))
	parent := make([]int, len(g.Deps))
	var found []int
	var visit func(n int) bool
	visit = func(n int) bool {
		color[n] = grey
		for _, m := range g.Dependents[n] {
			if color[m] == grey {
				found = []int{m}
				for c := n; c != m; c = parent[c] {
					found = append(found, c)
				}
				found = append(found, m)
				for i, j := 0, len(found)-1; i < j; i, j = i+1, j-1 {
					found[i], found[j] = found[j], found[i]
				}
				return true
			}
			if color[m] == white {
				parent[m] = n
				if visit(m) {
					return true
				}
			}
		}
		color[n] = black
		return false
	}
	for i := range g.Deps {
		if color[i] == white && visit(i) {
			return found
		}
	}
	return nil
}
