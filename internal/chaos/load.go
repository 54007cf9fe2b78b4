package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sagacoord/sagacoord/participant"
)

// LoadFile reads and checks a scenario file, its saga definition file included. Each problem
// is an error of its own that names the file and the line.
func LoadFile(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := parse(b, filepath.Dir(path))
	if err != nil {
		return nil, inFile(path, err)
	}
	if s.Name == "" {
		s.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	return s, nil
}

// inFile prefixes each of the errors joined in err with the scenario file's path.
func inFile(path string, err error) error {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("scenario %s: %w", path, e)
	}
	return errors.Join(out...)
}

// LoadDir reads every *.yaml and *.yml scenario of dir, sorted by file name. With an error it
// also returns the scenarios that loaded.
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
		return out, err
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
// fills the defaults, checks it (each problem names its line) and expands the repeated faults
// (every:) of the timeline. The saga definition file is not read: LoadFile does that.
func Parse(data []byte) (*Scenario, error) { return parse(data, "") }

// parse is Parse; with dir, the directory of the scenario file, it also checks the definition.
func parse(data []byte, dir string) (*Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var s Scenario
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty scenario")
		}
		var ve *valueError
		if errors.As(err, &ve) {
			var root yaml.Node
			if yaml.Unmarshal(data, &root) == nil {
				return nil, &lineError{line: ve.line, path: fieldAt(&root, ve.line, ve.col), msg: ve.msg}
			}
		}
		return nil, err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("a scenario file holds one YAML document; found a second after '---'")
	}
	// The same document as a tree of nodes, which know their lines: problems found below are
	// reported at the line of their field.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	s.withDefaults()
	bad := s.check()
	if dir != "" {
		s.dir = dir
		s.checkDefinition(&bad, dir)
	}
	if err := bad.err(&root); err != nil {
		return nil, err
	}
	s.Timeline = expandRepeats(s.Timeline)
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
	t.withDefaults()
	s.mixedGiven = len(s.Workloads) > 0
	s.bothGiven = s.mixedGiven && !reflect.DeepEqual(s.Workload, Workload{})
	if !s.mixedGiven {
		s.Workloads = []Workload{s.Workload}
	}
	for i := range s.Workloads {
		s.Workloads[i].withDefaults()
	}
	s.Workload = s.Workloads[0]
	for i := range s.Timeline {
		if (s.Timeline[i].Kind == FaultDuplicate || s.Timeline[i].Kind == FaultPoison) && s.Timeline[i].Count == 0 {
			s.Timeline[i].Count = 10
		}
	}
	if len(s.Invariants) == 0 {
		s.Invariants = s.defaultInvariants()
	}
	if s.Expect.MinFailed > 0 {
		s.Expect.AllowFailed = true
	}
}

// defaultInvariants are every invariant that applies to the scenario's workloads, and R1 with
// expect.recovered.
func (s *Scenario) defaultInvariants() []string {
	var out []string
	if s.hasKind(WorkloadSaga) {
		out = []string{G1, G2, G3, G4, G5, G6, G7, G8, G9}
	}
	if s.hasKind(WorkloadTwoPC) {
		if out == nil {
			out = []string{G1, G4, G5, G6}
		}
		out = append(out, T1)
	}
	if len(s.Expect.Recovered) > 0 {
		out = append(out, R1)
	}
	return out
}

// withDefaults fills a workload's defaults.
func (w *Workload) withDefaults() {
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
}

// withDefaults fills the settings the runner passes to each process.
func (t *Topology) withDefaults() {
	for i := range t.Coordinators {
		if t.Coordinators[i].DBMaxConns == 0 {
			t.Coordinators[i].DBMaxConns = DefaultCoordinatorDBConns
		}
	}
	for i := range t.Sims {
		sim := &t.Sims[i]
		if sim.DBMaxConns == 0 {
			sim.DBMaxConns = DefaultSimDBConns
		}
		for j := range sim.Participants {
			p := &sim.Participants[j]
			if p.Prefetch == 0 {
				p.Prefetch = participant.DefaultPrefetch
			}
			if p.Concurrency == 0 {
				p.Concurrency = p.Prefetch
			}
			if p.MaxBatch == 0 {
				p.MaxBatch = participant.DefaultMaxBatch
			}
		}
	}
}
