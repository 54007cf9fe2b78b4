package cli

import (
	"bytes"
	"strconv"
	"strings"
	"time"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// definitionFileHelp documents the file format in `definition apply --help`. The struct types below
// are the format: keep both in step.
const definitionFileHelp = `A definition file is YAML or JSON (chosen by the extension .yaml, .yml or .json,
otherwise by the first character: '{' means JSON). Durations are Go duration strings
(500ms, 5s, 1m30s). Unknown or misspelt fields are an error that names the field and line.

  name: order                  # required
  deadline: 5m                 # optional: default deadline of each saga; none when left out
  steps:
    - name: reserve            # required, unique within the definition
      participant: inventory   # required: the participant queue that runs the step
      action: reserve          # required
      compensation: release    # optional: the action that undoes it
      depends_on: []           # optional: step names; when no step has it, steps run in order
      timeout: 5s              # optional: per attempt (default 30s)
      pivot: false             # optional: once it succeeded, later steps retry forward
      retry:                   # optional; a field left out or 0 means its default
        max_attempts: 3        # attempts in all, the first included (default 3)
        initial_backoff: 100ms # default 100ms
        max_backoff: 5s        # default 10s
        multiplier: 2          # default 2.0
      compensation_retry:      # optional, fields as retry (default: the action's retry)
        max_attempts: 10

The fields version, created_at and registered_by, which 'definition get' prints, are accepted
and ignored (the server assigns them), so the output of 'definition get' can be edited and
applied again.`

// definitionFile is the file format of a saga definition. The json tags define the format (the
// strict decoders read them); the yaml tags only keep the field order when printing.
type definitionFile struct {
	Name     string         `json:"name" yaml:"name"`
	Deadline durationString `json:"deadline,omitempty" yaml:"deadline,omitempty"`
	Steps    []stepFile     `json:"steps" yaml:"steps"`
	// Version, CreatedAt and RegisteredBy are read-only: printed by `definition get`, ignored by
	// apply.
	Version      int32  `json:"version,omitempty" yaml:"version,omitempty"`
	CreatedAt    string `json:"created_at,omitempty" yaml:"created_at,omitempty"`
	RegisteredBy string `json:"registered_by,omitempty" yaml:"registered_by,omitempty"`
}

type stepFile struct {
	Name              string         `json:"name" yaml:"name"`
	Participant       string         `json:"participant" yaml:"participant"`
	Action            string         `json:"action" yaml:"action"`
	Compensation      string         `json:"compensation,omitempty" yaml:"compensation,omitempty"`
	DependsOn         []string       `json:"depends_on,omitempty" yaml:"depends_on,omitempty"`
	Timeout           durationString `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	Pivot             bool           `json:"pivot,omitempty" yaml:"pivot,omitempty"`
	Retry             *retryFile     `json:"retry,omitempty" yaml:"retry,omitempty"`
	CompensationRetry *retryFile     `json:"compensation_retry,omitempty" yaml:"compensation_retry,omitempty"`
}

type retryFile struct {
	MaxAttempts    int32          `json:"max_attempts,omitempty" yaml:"max_attempts,omitempty"`
	InitialBackoff durationString `json:"initial_backoff,omitempty" yaml:"initial_backoff,omitempty"`
	MaxBackoff     durationString `json:"max_backoff,omitempty" yaml:"max_backoff,omitempty"`
	Multiplier     float64        `json:"multiplier,omitempty" yaml:"multiplier,omitempty"`
}

// ParseDefinition parses a saga definition file (YAML or JSON, see sniffFormat) into the message
// RegisterDefinition takes. name is used in error messages only. Errors are *FileError values that
// name the file, the line when known and the field. It checks the format, not the content: the
// server validates names, participants and the step graph and answers InvalidArgument.
func ParseDefinition(name string, data []byte) (*sagacoordv1.SagaDefinition, error) {
	var f definitionFile
	loc, err := decodeFile(name, data, &f)
	if err != nil {
		return nil, err
	}
	def := &sagacoordv1.SagaDefinition{Name: f.Name}
	if def.Deadline, err = durationField(loc, "deadline", f.Deadline); err != nil {
		return nil, err
	}
	for i, s := range f.Steps {
		p := "steps." + strconv.Itoa(i)
		step := &sagacoordv1.StepDefinition{
			Name:         s.Name,
			Participant:  s.Participant,
			Action:       s.Action,
			Compensation: s.Compensation,
			DependsOn:    s.DependsOn,
			Pivot:        s.Pivot,
		}
		if step.Timeout, err = durationField(loc, p+".timeout", s.Timeout); err != nil {
			return nil, err
		}
		if step.Retry, err = retryPolicy(loc, p+".retry", s.Retry); err != nil {
			return nil, err
		}
		if step.CompensationRetry, err = retryPolicy(loc, p+".compensation_retry", s.CompensationRetry); err != nil {
			return nil, err
		}
		def.Steps = append(def.Steps, step)
	}
	return def, nil
}

func durationField(loc *locator, path string, s durationString) (*durationpb.Duration, error) {
	d, set, err := parseDuration(loc, path, s)
	if err != nil || !set || d == 0 {
		return nil, err
	}
	return durationpb.New(d), nil
}

func retryPolicy(loc *locator, path string, r *retryFile) (*sagacoordv1.RetryPolicy, error) {
	if r == nil {
		return nil, nil
	}
	if r.MaxAttempts < 0 {
		return nil, loc.errorf(path+".max_attempts", "must not be negative (0 means the default, 3)")
	}
	if r.Multiplier < 0 {
		return nil, loc.errorf(path+".multiplier", "must not be negative (0 means the default, 2.0)")
	}
	p := &sagacoordv1.RetryPolicy{MaxAttempts: r.MaxAttempts, Multiplier: r.Multiplier}
	var err error
	if p.InitialBackoff, err = durationField(loc, path+".initial_backoff", r.InitialBackoff); err != nil {
		return nil, err
	}
	if p.MaxBackoff, err = durationField(loc, path+".max_backoff", r.MaxBackoff); err != nil {
		return nil, err
	}
	return p, nil
}

// definitionYAML renders a definition in the file format, so that it can be applied again.
func definitionYAML(def *sagacoordv1.SagaDefinition) ([]byte, error) {
	f := definitionFile{
		Name:         def.GetName(),
		Deadline:     formatDurationPB(def.GetDeadline()),
		Version:      def.GetVersion(),
		RegisteredBy: def.GetRegisteredBy(),
		Steps:        []stepFile{},
	}
	if def.GetCreatedAt() != nil {
		f.CreatedAt = formatTime(def.GetCreatedAt().AsTime())
	}
	for _, s := range def.GetSteps() {
		f.Steps = append(f.Steps, stepFile{
			Name:              s.GetName(),
			Participant:       s.GetParticipant(),
			Action:            s.GetAction(),
			Compensation:      s.GetCompensation(),
			DependsOn:         s.GetDependsOn(),
			Timeout:           formatDurationPB(s.GetTimeout()),
			Pivot:             s.GetPivot(),
			Retry:             retryFileOf(s.GetRetry()),
			CompensationRetry: retryFileOf(s.GetCompensationRetry()),
		})
	}
	// Encoding the struct, not a map, keeps the order of the format (name first).
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func retryFileOf(p *sagacoordv1.RetryPolicy) *retryFile {
	if p == nil {
		return nil
	}
	return &retryFile{
		MaxAttempts:    p.GetMaxAttempts(),
		InitialBackoff: formatDurationPB(p.GetInitialBackoff()),
		MaxBackoff:     formatDurationPB(p.GetMaxBackoff()),
		Multiplier:     p.GetMultiplier(),
	}
}

func formatDurationPB(d *durationpb.Duration) durationString {
	if d == nil {
		return ""
	}
	return durationString(shortDuration(d.AsDuration()))
}

// shortDuration prints 5m rather than Go's 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
