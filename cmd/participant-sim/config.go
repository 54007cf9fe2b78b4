package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sagacoord/sagacoord/protocol"
)

// Kinds of simulated participant.
const (
	kindTransfer  = "transfer"
	kindInventory = "inventory"
	kindPayment   = "payment"
	kindNoop      = "noop"
	// kindConformance implements the test contract of sagalab participant-check
	// (docs/conformance.md).
	kindConformance = "conformance"
)

var kinds = []string{kindTransfer, kindInventory, kindPayment, kindNoop, kindConformance}

// wildcard is the faults key that applies to every action without an entry of its own.
const wildcard = "*"

// simConfig is everything the simulator runs: from --config, or built from the flags.
type simConfig struct {
	// Seed makes every fault decision reproducible (see faults.go).
	Seed uint64 `yaml:"seed"`
	// SchemaPrefix prefixes each participant's schema: <prefix><name>. Default "sim_".
	SchemaPrefix string              `yaml:"schema_prefix"`
	Participants []participantConfig `yaml:"participants"`
	// SkipDeclare is --skip-declare: the workers declare nothing on the broker
	// (participant.Config.SkipDeclare).
	SkipDeclare bool `yaml:"-"`
}

// participantConfig is one simulated participant.
type participantConfig struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
	// SeedAccounts creates acct-1..acct-N (transfer) or sku-1..sku-N (inventory) with
	// InitialBalance, once: existing rows are left as they are, so a restart keeps the books.
	SeedAccounts   int   `yaml:"seed_accounts"`
	InitialBalance int64 `yaml:"initial_balance"`
	// Prefetch, Concurrency and MaxBatch (commands decided in one local transaction) of the
	// participant's worker; 0 takes the SDK defaults.
	Prefetch    int `yaml:"prefetch"`
	Concurrency int `yaml:"concurrency"`
	MaxBatch    int `yaml:"max_batch"`
	// Faults by action or compensation name; "*" covers the actions without their own entry.
	Faults map[string]faults `yaml:"faults"`
}

// faults are the fault knobs of one action. Probabilities are in [0, 1].
type faults struct {
	// FailProbability: the handler fails for business reasons (the saga compensates).
	FailProbability float64 `yaml:"fail_probability"`
	// RetryProbability: the handler fails transiently (the coordinator retries).
	RetryProbability float64 `yaml:"retry_probability"`
	// Latency is added before the handler runs.
	Latency duration `yaml:"latency"`
	// HangProbability: the handler hangs. Without HangFor it blocks until shutdown and never
	// replies; a redelivered command does not hang again, so a restart unblocks it. A participant
	// with such unbounded hangs turns off the SDK's handler deadline (participant.Config.
	// HandlerTimeout), which would end them at the step's timeout: failure catalogue entry 6
	// (docs/guarantees.md) needs the action held while its compensation overtakes it.
	HangProbability float64 `yaml:"hang_probability"`
	// HangFor bounds each hang: the handler blocks this long, then goes on as normal and replies
	// late. A bounded hang keeps the SDK's handler deadline: a slow handler that honours its
	// context, so a hang longer than the command's timeout ends at it and is answered "retry"
	// with no effect (a PREPARE votes NO), as the coordinator has given the attempt up by then.
	// Unset: hangs last until shutdown. It needs HangProbability and must be positive.
	HangFor *duration `yaml:"hang_for"`
	// CrashAfterCommitProbability: the process exits with status 137 after the local commit,
	// before the reply is published and the command acked (failure catalogue entry 3).
	CrashAfterCommitProbability float64 `yaml:"crash_after_commit_probability"`
}

// duration is a time.Duration written as a Go duration string ("25ms", "1.5s").
type duration time.Duration

// UnmarshalYAML reads a duration string; a bare number is refused, so that 20 is never read as
// twenty nanoseconds.
func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf("line %d: a duration is a string such as \"25ms\", not %s", n.Line, n.Value)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = duration(v)
	return nil
}

// loadConfigFile reads a YAML or JSON config file; unknown fields are errors that name their
// line, so a typo in a fault knob does not silently disable it.
func loadConfigFile(path string) (simConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return simConfig{}, err
	}
	var c simConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			err = errors.New(strings.Join(te.Errors, "; "))
		}
		return simConfig{}, fmt.Errorf("config file %s: %w", path, err)
	}
	return c, nil
}

// parseParticipants parses the --participants spec: comma-separated names, each optionally
// followed by =kind. A bare name takes its kind from its prefix (see inferKind).
func parseParticipants(spec string) ([]participantConfig, error) {
	var ps []participantConfig
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, kind, explicit := strings.Cut(item, "=")
		name, kind = strings.TrimSpace(name), strings.TrimSpace(kind)
		if !explicit {
			kind = inferKind(name)
		}
		ps = append(ps, participantConfig{Name: name, Kind: kind})
	}
	if len(ps) == 0 {
		return nil, errors.New("--participants is empty: give names such as bank-a=transfer,inventory")
	}
	return ps, nil
}

// inferKind maps a bare participant name to a kind: bank* is transfer, inventory* and stock* are
// inventory, pay* is payment, anything else is noop.
func inferKind(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.HasPrefix(n, "bank"):
		return kindTransfer
	case strings.HasPrefix(n, "inventory"), strings.HasPrefix(n, "stock"):
		return kindInventory
	case strings.HasPrefix(n, "pay"):
		return kindPayment
	default:
		return kindNoop
	}
}

// schemaOf returns the schema of a participant: prefix + name, lower-cased, with every character
// that is not a letter, digit or underscore replaced by an underscore.
func schemaOf(prefix, name string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// withDefaults fills the schema prefix and, for participants that leave them zero, the account
// seeding given on the command line.
func (c simConfig) withDefaults(seedAccounts int, initialBalance int64) simConfig {
	if c.SchemaPrefix == "" {
		c.SchemaPrefix = "sim_"
	}
	ps := slices.Clone(c.Participants)
	for i := range ps {
		if ps[i].SeedAccounts == 0 {
			ps[i].SeedAccounts = seedAccounts
		}
		if ps[i].InitialBalance == 0 {
			ps[i].InitialBalance = initialBalance
		}
	}
	c.Participants = ps
	return c
}

func (c simConfig) validate() error {
	var errs []error
	if len(c.Participants) == 0 {
		errs = append(errs, errors.New("no participants: give --participants or a --config file listing them"))
	}
	if !regexp.MustCompile(`^[a-z_][a-z0-9_]*$`).MatchString(c.SchemaPrefix) {
		errs = append(errs, fmt.Errorf("schema_prefix %q must be a lower-case SQL identifier prefix", c.SchemaPrefix))
	}
	names, schemas := map[string]bool{}, map[string]string{}
	for i, p := range c.Participants {
		where := fmt.Sprintf("participant %d (%q)", i+1, p.Name)
		if err := protocol.CheckName(p.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: name %w", where, err))
		}
		if names[p.Name] {
			errs = append(errs, fmt.Errorf("%s: listed twice", where))
		}
		names[p.Name] = true
		s := schemaOf(c.SchemaPrefix, p.Name)
		if len(s) > 63 {
			errs = append(errs, fmt.Errorf("%s: schema name %q is longer than PostgreSQL's 63 bytes; shorten the name", where, s))
		}
		if other, dup := schemas[s]; dup && other != p.Name {
			errs = append(errs, fmt.Errorf("%s: schema %q is also the schema of %q; rename one", where, s, other))
		}
		schemas[s] = p.Name
		if !slices.Contains(kinds, p.Kind) {
			errs = append(errs, fmt.Errorf("%s: kind %q must be one of %s", where, p.Kind, strings.Join(kinds, ", ")))
		}
		if p.SeedAccounts < 0 || p.Prefetch < 0 || p.Concurrency < 0 || p.MaxBatch < 0 {
			errs = append(errs, fmt.Errorf("%s: seed_accounts, prefetch, concurrency and max_batch must not be negative", where))
		}
		for action, f := range p.Faults {
			if err := f.validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: faults of %q: %w", where, action, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (f faults) validate() error {
	var errs []error
	for _, p := range []struct {
		name string
		v    float64
	}{
		{"fail_probability", f.FailProbability},
		{"retry_probability", f.RetryProbability},
		{"hang_probability", f.HangProbability},
		{"crash_after_commit_probability", f.CrashAfterCommitProbability},
	} {
		if p.v < 0 || p.v > 1 {
			errs = append(errs, fmt.Errorf("%s %v must be between 0 and 1", p.name, p.v))
		}
	}
	if f.Latency < 0 {
		errs = append(errs, fmt.Errorf("latency %v must not be negative", time.Duration(f.Latency)))
	}
	if f.HangFor != nil {
		if *f.HangFor <= 0 {
			errs = append(errs, fmt.Errorf("hang_for %v must be positive; leave it out for hangs that last until shutdown", time.Duration(*f.HangFor)))
		}
		if f.HangProbability == 0 {
			errs = append(errs, errors.New("hang_for without hang_probability never fires; give hang_probability too"))
		}
	}
	return errors.Join(errs...)
}

// hangsUnbounded reports whether any command of p may hang until shutdown (a hang without
// hang_for): only those turn off the SDK's handler deadline.
func (p participantConfig) hangsUnbounded() bool {
	for _, f := range p.Faults {
		if f.HangProbability > 0 && f.HangFor == nil {
			return true
		}
	}
	return false
}

// faultsFor returns the knobs of action: its own entry, else the wildcard's, else none.
func (p participantConfig) faultsFor(action string) faults {
	if f, ok := p.Faults[action]; ok {
		return f
	}
	return p.Faults[wildcard]
}
