package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
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
