package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func appliedFault(kind, target string, at time.Duration, err string) AppliedFault {
	f := Fault{Kind: kind, Target: target, At: Duration(at)}
	if kind == FaultSIGSTOP {
		f.Duration = Duration(time.Second)
	}
	return AppliedFault{ScheduledFault: ScheduledFault{Fault: f}, AppliedAt: at.Seconds(), HealedAt: at.Seconds() + 1, Error: err}
}

func TestRunVerdict(t *testing.T) {
	held := []InvariantResult{{Name: G1, Passed: true}, {Name: G5, Passed: true}}
	violated := []InvariantResult{{Name: G1, Passed: true}, {Name: G5, Passed: false}}
	ok := appliedFault(FaultSIGKILL, "c1", 2*time.Second, "")
	stop := appliedFault(FaultSIGSTOP, "bank-b", 5*time.Second, "bank-b is not running")
	heal := appliedFault(FaultSIGSTOP, "bank-a", 7*time.Second, "heal: bank-a is not running")
	for _, tc := range []struct {
		name   string
		invs   []InvariantResult
		faults []AppliedFault
		status string
		want   []string
	}{
		{"all good", held, []AppliedFault{ok}, StatusPassed, nil},
		{"no faults", held, nil, StatusPassed, nil},
		{"a fault did not apply", held, []AppliedFault{ok, stop}, StatusInconclusive,
			[]string{"fault 2 (sigstop bank-b for 1s at 5s): bank-b is not running"}},
		{"a heal failed", held, []AppliedFault{heal, ok}, StatusInconclusive,
			[]string{"fault 1 (sigstop bank-a for 1s at 7s): heal: bank-a is not running"}},
		{"a violation wins", violated, []AppliedFault{stop}, StatusFailed,
			[]string{"fault 1 (sigstop bank-b for 1s at 5s): bank-b is not running"}},
		{"a violation alone", violated, []AppliedFault{ok}, StatusFailed, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, ineffective := runVerdict(tc.invs, tc.faults)
			if status != tc.status || strings.Join(ineffective, "|") != strings.Join(tc.want, "|") {
				t.Errorf("verdict = %s %q, want %s %q", status, ineffective, tc.status, tc.want)
			}
		})
	}
}

// An inconclusive run shows as such, naming the fault and why, in the text summary, the HTML
// and the JSON, and gives its own exit code; a failed run still wins.
func TestInconclusiveInTheReport(t *testing.T) {
	rep := sampleReport(t)
	x := rep.Results[0]
	x.Status = StatusInconclusive
	x.Ineffective = []string{"fault 2 (sigstop bank-b for 1s at 5s): bank-b is not running"}
	x.Faults = append(x.Faults, appliedFault(FaultSIGSTOP, "bank-b", 5*time.Second, "bank-b is not running"))
	rep.Results = rep.Results[:1]

	var sum bytes.Buffer
	rep.WriteSummary(&sum)
	for _, want := range []string{"INCONCLUSIVE", "not every fault took effect", x.Ineffective[0]} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
	var html bytes.Buffer
	if err := rep.HTML(&html); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<td class="inconclusive">INCONCLUSIVE</td>`, "<li>" + x.Ineffective[0] + "</li>", `<tr class="inconclusive"><td>sigstop`} {
		if !strings.Contains(html.String(), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if r := back.Results[0]; r.Status != "inconclusive" || len(r.Ineffective) != 1 || r.Ineffective[0] != x.Ineffective[0] {
		t.Errorf("JSON round trip: status %q, ineffective %q", r.Status, r.Ineffective)
	}
	if rep.Passed() || rep.ExitCode() != ExitInconclusive {
		t.Errorf("an inconclusive report: passed %v, exit code %d; want false, %d", rep.Passed(), rep.ExitCode(), ExitInconclusive)
	}
	failed := sampleReport(t).Results[1]
	rep.Results = append(rep.Results, failed)
	if rep.ExitCode() != ExitViolated {
		t.Errorf("inconclusive and failed: exit code %d, want %d", rep.ExitCode(), ExitViolated)
	}
	if ExitInconclusive == ExitViolated || ExitInconclusive <= 2 {
		t.Error("the inconclusive exit code is taken")
	}
}

// sleeper is a process of the runner's kind running sleep, so that signals reach a real child.
func sleeper(t *testing.T) *process {
	t.Helper()
	bin, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	p := &process{name: "sleeper", bin: bin, args: func(bool) []string { return []string{"60"} },
		logPath: filepath.Join(t.TempDir(), "sleeper.log"), event: func(string, ...any) {}}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.shutdown(time.Second) })
	return p
}

// A SIGSTOP or SIGKILL does not take effect on a process that is down, or being stopped by a
// restart or kill: the fault must fail, so the run cannot pass as if it had.
func TestSigstopOfAProcessMidRestartFails(t *testing.T) {
	p := sleeper(t)
	if err := p.signal(syscall.SIGTERM); err != nil { // what a restart fault's terminate sends first
		t.Fatal(err)
	}
	if _, err := p.stop(); err == nil || !strings.Contains(err.Error(), "is being stopped") {
		t.Errorf("SIGSTOP while it is being stopped: %v, want refused", err)
	}
	if err := p.kill(); err == nil || !strings.Contains(err.Error(), "is being stopped") {
		t.Errorf("SIGKILL while it is being stopped: %v, want refused", err)
	}
	<-p.exited
	if _, err := p.stop(); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("SIGSTOP while it is down: %v, want refused", err)
	}
	r := &run{procs: map[string]*process{"sleeper": p}}
	if _, err := r.inject(context.Background(), ScheduledFault{Fault: Fault{Kind: FaultSIGSTOP, Target: "sleeper", Duration: Duration(time.Second)}}); err == nil {
		t.Error("the sigstop fault did not fail")
	}
}

// The SIGCONT of a freeze goes to the instance it froze, never to the one that replaced it.
func TestSigcontSparesAReplacedInstance(t *testing.T) {
	p := sleeper(t)
	var events []string
	p.event = func(format string, args ...any) { events = append(events, fmt.Sprintf(format, args...)) }
	instance, err := p.stop()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.cont(instance); err != nil {
		t.Errorf("SIGCONT after the frozen instance was killed: %v, want nothing to do", err)
	}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.stop(); err != nil { // another fault freezes the new instance
		t.Fatal(err)
	}
	if err := p.cont(instance); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	if !paused {
		t.Error("the SIGCONT of the first freeze went to the new instance, which another fault froze")
	}
	if !strings.Contains(strings.Join(events, "\n"), "killed while frozen") {
		t.Errorf("events %q do not say why no SIGCONT was sent", events)
	}
}
