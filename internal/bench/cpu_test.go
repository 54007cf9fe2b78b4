package bench

import (
	"os"
	"strconv"
	"testing"
)

func TestProcessGroup(t *testing.T) {
	for comm, want := range map[string]string{
		"postgres":                     "postgres",
		"postgres: 15/main: walwriter": "postgres",
		"beam.smp":                     "rabbitmq",
		"erl_child_setup":              "rabbitmq",
		"coordinator":                  "coordinator",
		"participant-sim":              "participant-sim",
		"sagalab":                      "sagalab",
		"sagactl":                      "sagactl",
		"kworker/1:1H":                 "other",
	} {
		if got := processGroup(comm); got != want {
			t.Errorf("processGroup(%q) = %q, want %q", comm, got, want)
		}
	}
}

func TestCPUByGroup(t *testing.T) {
	before := map[string]procCPU{
		"1": {"postgres", 10, 100},
		"2": {"coordinator", 5, 50},
		"3": {"other", 1, 7}, // exits before the second reading
	}
	after := map[string]procCPU{
		"1": {"postgres", 14, 140},
		"2": {"coordinator", 6, 70},
		"4": {"postgres", 2, 20}, // a backend started in the window counts from zero
		"5": {"rabbitmq", 0, 0},  // idle: no entry
	}
	got := cpuByGroup(before, after, 2)
	want := map[string]float64{"postgres": 3, "coordinator": 0.5, "total": 3.5}
	if len(got) != len(want) {
		t.Fatalf("cpuByGroup = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("cpuByGroup[%q] = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

func TestMachineCPUReadsThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system: machine CPU is read on Linux only")
	}
	m := machineCPU()
	me, ok := m[strconv.Itoa(os.Getpid())]
	if !ok {
		t.Fatalf("machineCPU has no entry for this process (pid %d) among %d", os.Getpid(), len(m))
	}
	if me.group != "other" || me.seconds < 0 {
		t.Errorf("this process reads as %+v, want group other and non-negative seconds", me)
	}
}

func TestParseStat(t *testing.T) {
	// A command name may hold spaces and parentheses; the fields count from the last ')'.
	line := "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0"
	comm, secs, ok := parseStat(line)
	if !ok || comm != "my (odd) name" || secs != 3.25 {
		t.Fatalf("parseStat = %q, %v, %v; want \"my (odd) name\", 3.25 (250 + 75 ticks), true", comm, secs, ok)
	}
	if _, _, ok := parseStat("4242 (truncated) S 1"); ok {
		t.Error("a line with too few fields parses")
	}
}

func TestSwitchesByGroup(t *testing.T) {
	before := map[string]procCPU{"1": {"postgres", 0, 100}, "2": {"coordinator", 0, 50}}
	after := map[string]procCPU{"1": {"postgres", 0, 140}, "2": {"coordinator", 0, 70}, "4": {"postgres", 0, 20}}
	got := switchesByGroup(before, after, 10)
	want := map[string]float64{"postgres": 6, "coordinator": 2, "total": 8}
	if len(got) != len(want) {
		t.Fatalf("switchesByGroup = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("switchesByGroup[%s] = %v, want %v", k, got[k], v)
		}
	}
}
