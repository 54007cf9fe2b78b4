package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sampleReport is a report with two compared results, faults and samples, made without running
// anything.
func sampleReport(t *testing.T) *Report {
	t.Helper()
	mk := func(name, kind string, passed bool) *Result {
		s, err := Parse([]byte(strings.Replace(minimal, "name: tiny", "name: "+name+"\ncompare: cap-base", 1)))
		if err != nil {
			t.Fatal(err)
		}
		s.Workload.Kind = kind
		res := &Result{Scenario: s, Seed: 1, Status: StatusPassed, Final: map[string]int{"COMPLETED": 9, "COMPENSATED": 1},
			LastHeal: 3, Converged: 4.5, Convergence: 1.5, Elapsed: 7}
		res.Workload.Requested, res.Workload.Accepted = 10, 10
		res.Faults = []AppliedFault{{ScheduledFault: ScheduledFault{Fault: Fault{Kind: FaultBlackhole, Target: "banks->rabbitmq", Duration: Duration(2 * time.Second)}}, AppliedAt: 1, HealedAt: 3}}
		for i := range 20 {
			res.Samples = append(res.Samples, Sample{T: float64(i) * 0.25, Open: 10 - i/2, Completed: i / 2, MoneyInFlight: int64(i * 10), Accepted: 10})
		}
		for _, n := range s.Invariants {
			res.Invariants = append(res.Invariants, InvariantResult{Name: n, Title: invariantTitles[n], Passed: passed || n != G1, Checked: 10})
		}
		if !passed {
			res.Status = StatusFailed
			res.Invariants[0].Violations, res.Invariants[0].Offending = 1, []string{"<script>alert(1)</script>: RUNNING"}
		}
		return res
	}
	return &Report{StartedAt: time.Now(), Elapsed: 14, Seeds: []uint64{1}, Results: []*Result{mk("cap-saga", WorkloadSaga, true), mk("cap-2pc", WorkloadTwoPC, false)}}
}

func TestReportHTMLIsSelfContained(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport(t).HTML(&b); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, banned := range []string{"http://", "https://", "<script", "src="} {
		if banned == "http://" {
			html2 := strings.ReplaceAll(html, `xmlns="http://www.w3.org/2000/svg"`, "")
			if strings.Contains(html2, banned) {
				t.Errorf("report refers to the network (%s)", banned)
			}
			continue
		}
		if strings.Contains(html, banned) {
			t.Errorf("report contains %q", banned)
		}
	}
	if !strings.Contains(html, "&lt;script&gt;") {
		t.Error("offending ids are not escaped")
	}
	var sum bytes.Buffer
	sampleReport(t).WriteSummary(&sum)
	for _, want := range []string{"cap-saga", "cap-2pc", `comparison "cap-base, seed 1"`, "worst money in flight", "G1 violated"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
}

// The report renders in a real browser: headless Chromium loads the file and the charts and
// tables are in the DOM it builds.
func TestReportRendersInChromium(t *testing.T) {
	t.Parallel()
	chromium := ""
	for _, c := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(c); err == nil {
			chromium = c
		}
	}
	if chromium == "" {
		t.Skip("chromium is not installed (apt-get install -y chromium): cannot check that report.html renders")
	}
	dir := t.TempDir()
	if err := sampleReport(t).Write(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "report.json")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--dump-dom", "file://"+filepath.Join(dir, "report.html"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v: %s", err, stderr.String())
	}
	dom := stdout.String()
	for _, want := range []struct {
		what string
		n    int
	}{
		{`<svg xmlns="http://www.w3.org/2000/svg" class="chart-status"`, 4},
		{`<svg xmlns="http://www.w3.org/2000/svg" class="chart-money"`, 4},
		{`class="series" data-series="completed"`, 2},
		{`class="series" data-series="committed"`, 2},
		{`<rect class="fault"`, 8},
		{`<table id="summary">`, 1},
		{`class="result-row"`, 2},
		{`<section class="comparison" id="compare-cap-base-1">`, 1},
	} {
		if got := strings.Count(dom, want.what); got < want.n {
			t.Errorf("rendered DOM has %d of %q, want at least %d", got, want.what, want.n)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%.3000s", dom)
	}
}

// The settings the runner passes to each process (pool sizes, the workers' prefetch,
// concurrency and max_batch) are in the summary, the page and report.json, defaults included.
func TestReportListsProcessSettings(t *testing.T) {
	rep := sampleReport(t)
	rep.Results[1].Scenario.Topology.Sims[0].DBMaxConns = 40
	rep.Results[1].Scenario.Topology.Sims[0].Participants[1].MaxBatch = 8
	var sum bytes.Buffer
	rep.WriteSummary(&sum)
	for _, want := range []string{
		"cap-saga: c1 db_max_conns=6; banks db_max_conns=8 (bank-a prefetch=32 concurrency=32 max_batch=1, bank-b prefetch=32 concurrency=32 max_batch=1)",
		"cap-2pc: c1 db_max_conns=6; banks db_max_conns=40 (bank-a prefetch=32 concurrency=32 max_batch=1, bank-b prefetch=32 concurrency=32 max_batch=8)",
	} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
	var page bytes.Buffer
	if err := rep.HTML(&page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), `<p class="settings">Settings passed to the processes: c1 db_max_conns=6; banks db_max_conns=40`) {
		t.Error("the page does not list the settings")
	}
	b, err := json.Marshal(rep.Results[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"db_max_conns":6`, `"db_max_conns":8`, `"prefetch":32`, `"concurrency":32`, `"max_batch":1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report.json lacks %s", want)
		}
	}
}

// Each run's database dump, or why there is none, is named in the summary and on the page.
func TestReportNamesTheDatabaseDump(t *testing.T) {
	rep := sampleReport(t)
	rep.Results[0].DatabaseDump = "/tmp/r/dumps/cap-saga-seed1-0a1b2c3d.sql"
	rep.Results[1].DumpError = "pg_dump is neither in /x nor on PATH"
	var sum bytes.Buffer
	rep.WriteSummary(&sum)
	for _, want := range []string{"cap-saga (seed 1): /tmp/r/dumps/cap-saga-seed1-0a1b2c3d.sql", "cap-2pc (seed 1): none: pg_dump is neither"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
	var page bytes.Buffer
	if err := rep.HTML(&page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), `<code class="dump">/tmp/r/dumps/cap-saga-seed1-0a1b2c3d.sql</code>`) || !strings.Contains(page.String(), "no database dump: pg_dump is neither") {
		t.Error("the page does not name the dump")
	}
}
