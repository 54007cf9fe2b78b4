package chaos

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A repeated entry becomes one scheduled fault per repetition, numbered, merged in time order
// with the others.
func TestEveryExpandsIntoTheSchedule(t *testing.T) {
	s, err := Parse([]byte(minimal + `timeline:
  - {at: 1s, every: 2s, for: 30s, kind: pg_terminate, target: c1}
  - {at: 4s, kind: sigkill, target: banks, duration: 1s}
  - {at: 500ms, every: 1s, times: 3, kind: sigstop, target: banks, duration: 200ms}
`))
	if err != nil {
		t.Fatal(err)
	}
	var terms, stops []ScheduledFault
	sched := s.Schedule(s.Seed)
	for i, f := range sched {
		if i > 0 && f.At < sched[i-1].At {
			t.Fatalf("schedule not sorted at %d", i)
		}
		switch f.Kind {
		case FaultPGTerminate:
			terms = append(terms, f)
		case FaultSIGSTOP:
			stops = append(stops, f)
		}
	}
	if len(sched) != 15+1+3 || len(terms) != 15 || len(stops) != 3 {
		t.Fatalf("%d faults (%d pg_terminate, %d sigstop), want 19 (15, 3)", len(sched), len(terms), len(stops))
	}
	for k, f := range terms {
		if want := time.Second + time.Duration(k)*2*time.Second; f.At.D() != want || f.Repetition != k+1 || f.Repetitions != 15 {
			t.Errorf("pg_terminate %d: at %s, repetition %d/%d; want at %s, %d/15", k, f.At.D(), f.Repetition, f.Repetitions, want, k+1)
		}
		if f.Every != 0 || f.For != 0 || f.Times != 0 || f.Duration != 0 {
			t.Errorf("pg_terminate %d keeps its repeat settings: %+v", k, f.Fault)
		}
	}
	if stops[2].At.D() != 2500*time.Millisecond || stops[2].Duration.D() != 200*time.Millisecond {
		t.Errorf("third sigstop: %+v", stops[2].Fault)
	}
	if err := s.Validate(); err != nil {
		t.Errorf("the expanded scenario does not validate: %v", err)
	}
	if got := describe(terms[2]); !strings.Contains(got, "3/15") {
		t.Errorf("describe = %q, want the repetition", got)
	}
}

func TestEveryIsChecked(t *testing.T) {
	const entry = "timeline:\n  - {at: 1s, kind: pg_terminate, target: c1, %s}\n"
	for _, tc := range []struct{ settings, want string }{
		{"every: 2s", "line 13: timeline[0].every: every: needs for: (how long to repeat) or times: (how many times)"},
		{"for: 30s", "line 13: timeline[0].for: for: needs every:"},
		{"times: 3", "line 13: timeline[0].times: times: needs every:"},
		{"every: 2s, for: 30s, times: 3", "line 13: timeline[0].times: give for: or times:, not both"},
		{"every: 2s, times: -1", "line 13: timeline[0].times: -1 must be at least 1"},
		{"every: 2s, times: 1001", "line 13: timeline[0].times: 1001 repetitions; at most 1000"},
		{"every: 10ms, for: 20s", "line 13: timeline[0].for: 2000 repetitions; at most 1000"},
		{"every: 1ms, for: 1s", "line 13: timeline[0].every: 1ms is shorter than 10ms"},
		{"every: 0s, for: 1s", "line 13: timeline[0].for: for: needs every:"},
		{"every: -2s, for: 1s", "line 13: timeline[0].every: duration -2s must not be negative"},
		{"every: 2, for: 1s", "a duration is a string"},
		{"every: 1h, times: 30", "timeline[0].every: the last repetition would start at 29h0m1s, after 24h"},
	} {
		t.Run(tc.settings, func(t *testing.T) {
			_, err := Parse([]byte(minimal + strings.Replace(entry, "%s", tc.settings, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	_, err := Parse([]byte(minimal + "timeline:\n  - {at: 1s, every: 1s, times: 5, kind: sigstop, target: banks, duration: 1s}\n"))
	if err == nil || !strings.Contains(err.Error(), "timeline[0].duration: 1s must be shorter than every (1s)") {
		t.Fatalf("overlapping repetitions: err = %v", err)
	}
	_, err = Parse([]byte(minimal + "random_faults: {count: 1, from: 1s, to: 2s, choices: [{kind: pg_terminate, target: c1, every: 1s, times: 2}]}\n"))
	if err == nil || !strings.Contains(err.Error(), "random_faults.choices[0]: every, for, times, when and timeout are only for timeline entries") {
		t.Fatalf("every in a random choice: err = %v", err)
	}
}

// 06 was five copied restart entries; its every: form must give the same schedule.
func TestCompensationOvertakesScheduleIsUnchanged(t *testing.T) {
	s, err := LoadFile(filepath.Join("..", "..", "scenarios", "06-compensation-overtakes-action.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var got []time.Duration
	for _, f := range s.Schedule(1) {
		if f.Kind != FaultRestart || f.Target != "bank-b" {
			t.Errorf("unexpected fault %+v", f.Fault)
		}
		got = append(got, f.At.D())
	}
	want := []time.Duration{2500 * time.Millisecond, 5 * time.Second, 7500 * time.Millisecond, 10 * time.Second, 12500 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Errorf("restarts at %v, want %v", got, want)
	}
}
