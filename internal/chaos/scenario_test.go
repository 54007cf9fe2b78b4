package chaos

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const minimal = `
name: tiny
topology:
  participant_sims:
    - name: banks
      participants:
        - {name: bank-a, kind: transfer, seed_accounts: 5}
        - {name: bank-b, kind: transfer, seed_accounts: 5}
workload:
  definition: transfer.yaml
  count: 10
`

func TestEveryScenarioFileParses(t *testing.T) {
	ss, err := LoadDir(filepath.Join("..", "..", "scenarios"))
	if err != nil {
		t.Fatal(err)
	}
	catalogue := map[int]bool{}
	for _, s := range ss {
		for _, c := range s.Catalogue {
			catalogue[c] = true
		}
		def := s.Workload.Definition
		if def != "" {
			if _, err := os.Stat(filepath.Join(s.dir, def)); err != nil {
				t.Errorf("%s: workload.definition: %v", s.Name, err)
			}
		}
	}
	for i := 1; i <= 18; i++ {
		if !catalogue[i] {
			t.Errorf("no scenario covers catalogue entry %d", i)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	s, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if s.Seed != 1 || s.Settle.D().Seconds() != 60 || len(s.Topology.Coordinators) != 1 || s.Topology.Coordinators[0].Name != "c1" {
		t.Errorf("defaults not filled: %+v", s)
	}
	if s.Workload.Kind != WorkloadSaga || s.Workload.Concurrency != 8 || s.Workload.Input.Generator != GenTransfer {
		t.Errorf("workload defaults not filled: %+v", s.Workload)
	}
	if !reflect.DeepEqual(s.Invariants, []string{G1, G2, G3, G4, G5, G6, G7, G8, G9}) {
		t.Errorf("invariants = %v", s.Invariants)
	}
}

func TestParseRefusesUnknownFields(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"top level", minimal + "settel: 10s\n", `field settel not found`},
		{"topology", strings.Replace(minimal, "topology:\n", "topology:\n  private_postgress: true\n", 1), `field private_postgress not found`},
		{"participant", strings.Replace(minimal, "seed_accounts: 5}", "seed_acounts: 5}", 1), `field seed_acounts not found`},
		{"fault knob", strings.Replace(minimal, "seed_accounts: 5}\n        - {name: bank-b", "seed_accounts: 5, faults: {debit: {fail_probabilty: 0.1}}}\n        - {name: bank-b", 1), `field fail_probabilty not found`},
		{"timeline", minimal + "timeline:\n  - {at: 1s, kind: sigkill, target: c1, durration: 1s}\n", `field durration not found`},
		{"workload", strings.Replace(minimal, "count: 10", "count: 10\n  concurency: 3", 1), `field concurency not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "line ") {
				t.Errorf("err = %v: does not name the line", err)
			}
		})
	}
}

func TestParseRefusesBadScenarios(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"empty", "", "empty scenario"},
		{"two documents", minimal + "---\nname: x\n", "one YAML document"},
		{"duplicate key", minimal + "topology: {}\n", `"topology" already defined`},
		{"bare number duration", minimal + "settle: 10\n", `a duration is a string`},
		{"unknown kind", minimal + "timeline:\n  - {at: 1s, kind: explode, target: c1}\n", `timeline[0].kind: "explode"`},
		{"unknown target", minimal + "timeline:\n  - {at: 1s, kind: sigkill, target: c9}\n", `target "c9" of sigkill`},
		{"sigstop without duration", minimal + "timeline:\n  - {at: 1s, kind: sigstop, target: banks}\n", "sigstop needs a duration"},
		{"bad link", minimal + "timeline:\n  - {at: 1s, kind: link_down, target: banks->redis, duration: 1s}\n", "PROCESS->postgres or PROCESS->rabbitmq"},
		{"latency without latency", minimal + "timeline:\n  - {at: 1s, kind: latency, target: c1->postgres, duration: 1s}\n", "latency needs latency"},
		{"broker fault on the shared broker", minimal + "timeline:\n  - {at: 1s, kind: memory_alarm, target: rabbitmq, duration: 1s}\n", "private_rabbitmq: true"},
		{"postgres restart on the shared database", minimal + "timeline:\n  - {at: 1s, kind: postgres_restart, target: postgres}\n", "private_postgres: true"},
		{"poison to an unknown participant", minimal + "timeline:\n  - {at: 1s, kind: inject_poison, target: participant:bank-z}\n", "participant:NAME"},
		{"bad invariant", minimal + "invariants: [G10]\n", `invariants[0]: "G10"`},
		{"probability", strings.Replace(minimal, "seed_accounts: 5}", "seed_accounts: 5, faults: {debit: {fail_probability: 2}}}", 1), "fail_probability: 2 must be between 0 and 1"},
		{"2pc with definition", strings.Replace(minimal, "workload:\n", "workload:\n  kind: 2pc\n", 1), "a 2pc workload has no definition"},
		{"2pc unknown participant", strings.Replace(minimal, "  definition: transfer.yaml\n", "  kind: 2pc\n  participants: [bank-q]\n", 1), `workload.participants[0]: "bank-q"`},
		{"duplicate process", strings.Replace(minimal, "name: banks", "name: c1", 1), `"c1" is taken`},
		{"reserved flag", strings.Replace(minimal, "topology:\n", "topology:\n  coordinators: [{name: c1, flags: [--listen=1.2.3.4:1]}]\n", 1), "--listen is set by the runner"},
		{"random choices with times", minimal + "random_faults: {count: 1, from: 1s, to: 2s, choices: [{at: 1s, kind: sigkill, target: c1}]}\n", "at and duration are drawn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestSameSeedSameWorkloadAndSchedule(t *testing.T) {
	s, err := LoadFile(filepath.Join("..", "..", "scenarios", "19-mixed-long.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := s.Schedule(1), s.Schedule(1), s.Schedule(2)
	if !reflect.DeepEqual(a, b) {
		t.Error("the same seed drew two schedules")
	}
	if reflect.DeepEqual(a, c) {
		t.Error("seeds 1 and 2 drew the same schedule")
	}
	for i := 1; i < len(a); i++ {
		if a[i].At < a[i-1].At {
			t.Fatalf("schedule not sorted at %d", i)
		}
	}
	w1, w2, w3 := s.generate(7, s.Workload), s.generate(7, s.Workload), s.generate(8, s.Workload)
	if !reflect.DeepEqual(w1, w2) {
		t.Error("the same seed generated two workloads")
	}
	if reflect.DeepEqual(w1, w3) {
		t.Error("seeds 7 and 8 generated the same workload")
	}
	ids := map[string]bool{}
	for _, r := range w1 {
		if ids[r.ID] {
			t.Fatalf("id %s drawn twice", r.ID)
		}
		ids[r.ID] = true
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "scenarios", "*.yaml"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(minimal))
	f.Add([]byte("settle: !!int 5\n"))
	f.Add([]byte("timeline: [{at: 1s, kind: latency, target: c1->postgres, latency: 1ms, duration: 1s}]\n"))
	f.Add([]byte(minimal + "timeline: [{at: 1s, every: 2s, for: 10s, kind: pg_terminate, target: c1}]\n"))
	f.Add([]byte(mixedMinimal))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			if s != nil {
				t.Fatal("an error with a scenario")
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
		for _, f := range s.Schedule(s.Seed) {
			if f.At < 0 || f.Duration < 0 {
				t.Fatalf("negative time in schedule: %+v", f)
			}
		}
		for _, w := range s.Workloads {
			if w.Count <= 1000 {
				if got := len(s.generate(s.Seed, w)); got != w.Count {
					t.Fatalf("generated %d requests, want %d", got, w.Count)
				}
			}
		}
	})
}

// Only the coordinators started with a --test-* flag need the test build of the coordinator.
func TestUsesTestHooks(t *testing.T) {
	for file, want := range map[string]bool{
		"00-baseline.yaml":                       false,
		"01-coordinator-kill-after-commit.yaml":  true,
		"02-coordinator-kill-after-confirm.yaml": true,
		"05-duplicates.yaml":                     false,
		"11-twopc-crash-before-decision.yaml":    true,
	} {
		s, err := LoadFile(filepath.Join("..", "..", "scenarios", file))
		if err != nil {
			t.Fatal(err)
		}
		if got := s.usesTestHooks(); got != want {
			t.Errorf("%s: usesTestHooks = %v, want %v", file, got, want)
		}
	}
	c := CoordinatorSpec{Name: "c2", Flags: []string{"--db-max-conns=4"}}
	if c.usesTestHooks() {
		t.Error("a coordinator without --test-* flags uses the test build")
	}
}
