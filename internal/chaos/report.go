package chaos

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is every result of one `chaos run`.
type Report struct {
	StartedAt time.Time `json:"started_at"`
	Elapsed   float64   `json:"elapsed_s"`
	Seeds     []uint64  `json:"seeds"`
	Results   []*Result `json:"results"`
}

// Passed reports whether every run passed (skipped ones do not count).
func (r *Report) Passed() bool { return r.ExitCode() == 0 }

// ExitCode is the exit code of `sagalab chaos run` for the report: ExitViolated if a run failed
// or broke, else ExitInconclusive if a run was inconclusive, else 0 (skipped runs do not count).
func (r *Report) ExitCode() int {
	code := 0
	for _, x := range r.Results {
		switch x.Status {
		case StatusFailed, StatusError:
			return ExitViolated
		case StatusInconclusive:
			code = ExitInconclusive
		}
	}
	return code
}

// hasConvergence reports whether the run's checks ran, so that its convergence means something.
func hasConvergence(x *Result) bool {
	return x.Status == StatusPassed || x.Status == StatusFailed || x.Status == StatusInconclusive
}

// WriteSummary prints one line per run: status, invariants, convergence.
func (r *Report) WriteSummary(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tSEED\tSTATUS\tINVARIANTS\tACCEPTED\tFINAL\tFROM-FAULT\tFROM-HEAL\tALL-FINAL-AT\tTIME")
	for _, x := range r.Results {
		var inv []string
		for _, i := range x.Invariants {
			mark := "ok"
			if !i.Passed {
				mark = "FAIL"
			}
			inv = append(inv, i.Name+":"+mark)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%.0fs\n", x.Scenario.Name, x.Seed, strings.ToUpper(x.Status), strings.Join(inv, " "),
			x.Workload.Accepted, x.Workload.Requested, finalString(x.Final),
			convergenceString(x, x.ConvergenceFromFault), convergenceString(x, x.Convergence), finalAtString(x), x.Elapsed)
	}
	tw.Flush()
	writeSettings(w, r.Results)
	writeDumps(w, r.Results)
	for _, x := range r.Results {
		switch x.Status {
		case StatusFailed:
			fmt.Fprintf(w, "\n%s (seed %d) FAILED; logs in %s\n", x.Scenario.Name, x.Seed, x.LogDir)
			for _, i := range x.Invariants {
				if i.Passed {
					continue
				}
				fmt.Fprintf(w, "  %s violated (%s): %d offender(s). %s\n", i.Name, i.Title, i.Violations, i.Detail)
				for _, o := range i.Offending {
					fmt.Fprintf(w, "    %s\n", o)
				}
			}
			writeIneffective(w, x)
		case StatusInconclusive:
			fmt.Fprintf(w, "\n%s (seed %d) INCONCLUSIVE: every invariant held, but not every fault took effect; logs in %s\n", x.Scenario.Name, x.Seed, x.LogDir)
			writeIneffective(w, x)
		case StatusError, StatusSkipped:
			fmt.Fprintf(w, "\n%s (seed %d) %s: %s\n", x.Scenario.Name, x.Seed, strings.ToUpper(x.Status), x.Reason)
		}
	}
	for _, g := range r.groups() {
		fmt.Fprintf(w, "\ncomparison %q:\n", g.Name)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprint(tw, "FIGURE")
		for _, x := range g.Results {
			fmt.Fprintf(tw, "\t%s (%s)", x.Scenario.Name, x.Scenario.KindLabel())
		}
		fmt.Fprintln(tw)
		for _, row := range comparisonRows {
			fmt.Fprint(tw, row.Name)
			for _, x := range g.Results {
				fmt.Fprintf(tw, "\t%s", row.value(x))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
}

// writeSettings prints, once per scenario, the settings the runner passed to its processes.
func writeSettings(w io.Writer, results []*Result) {
	seen := map[string]bool{}
	for _, x := range results {
		if seen[x.Scenario.Name] {
			continue
		}
		if seen[x.Scenario.Name] = true; len(seen) == 1 {
			fmt.Fprintln(w, "\nsettings passed to the processes:")
		}
		fmt.Fprintf(w, "  %s: %s\n", x.Scenario.Name, settingsString(x.Scenario))
	}
}

// writeDumps prints where each run's database dump is, or why it has none.
func writeDumps(w io.Writer, results []*Result) {
	said := false
	for _, x := range results {
		if x.DatabaseDump == "" && x.DumpError == "" {
			continue
		}
		if !said {
			fmt.Fprintln(w, "\ndatabase dumps (the run's schemas, taken before cleanup):")
			said = true
		}
		if x.DatabaseDump != "" {
			fmt.Fprintf(w, "  %s (seed %d): %s\n", x.Scenario.Name, x.Seed, x.DatabaseDump)
		} else {
			fmt.Fprintf(w, "  %s (seed %d): none: %s\n", x.Scenario.Name, x.Seed, x.DumpError)
		}
	}
}

// settingsString lists the database pools and the workers' settings of a scenario's processes.
func settingsString(s *Scenario) string {
	var parts []string
	for _, c := range s.Topology.Coordinators {
		parts = append(parts, fmt.Sprintf("%s db_max_conns=%d", c.Name, c.DBMaxConns))
	}
	for _, sim := range s.Topology.Sims {
		var ps []string
		for _, p := range sim.Participants {
			ps = append(ps, fmt.Sprintf("%s prefetch=%d concurrency=%d max_batch=%d", p.Name, p.Prefetch, p.Concurrency, p.MaxBatch))
		}
		parts = append(parts, fmt.Sprintf("%s db_max_conns=%d (%s)", sim.Name, sim.DBMaxConns, strings.Join(ps, ", ")))
	}
	return strings.Join(parts, "; ")
}

// convergenceString renders a convergence time of x (Convergence or ConvergenceFromFault).
func convergenceString(x *Result, conv float64) string {
	switch {
	case !hasConvergence(x):
		return "-"
	case conv < 0:
		return "not converged"
	}
	return fmt.Sprintf("%.1fs", conv)
}

// finalAtString renders when everything started before the last heal was final, and says so
// when that was before the last fault began (the convergence times then read 0).
func finalAtString(x *Result) string {
	switch {
	case !hasConvergence(x):
		return "-"
	case x.Convergence < 0:
		return "never"
	case len(x.Faults) > 0 && x.ConvergedBeforeHeal < x.LastFault:
		return fmt.Sprintf("%.1fs (before the last fault)", x.ConvergedBeforeHeal)
	}
	return fmt.Sprintf("%.1fs", x.ConvergedBeforeHeal)
}

// writeIneffective lists the faults of a run that did not take effect, and why.
func writeIneffective(w io.Writer, x *Result) {
	if len(x.Ineffective) == 0 {
		return
	}
	fmt.Fprintf(w, "  %d fault(s) did not take effect:\n", len(x.Ineffective))
	for _, f := range x.Ineffective {
		fmt.Fprintf(w, "    %s\n", f)
	}
}

func finalString(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

type comparisonRow struct {
	Name  string
	value func(*Result) string
}

var comparisonRows = []comparisonRow{
	{"fault window", func(x *Result) string {
		return fmt.Sprintf("%.1fs-%.1fs", x.Figures.FaultFrom, x.Figures.FaultTo)
	}},
	{"requests accepted during the fault", func(x *Result) string { return fmt.Sprint(x.Figures.AcceptedDuringFaults) }},
	{"finished during the fault", func(x *Result) string { return fmt.Sprint(x.Figures.FinishedDuringFaults) }},
	{"throughput during the fault (/s)", func(x *Result) string { return fmt.Sprintf("%.1f", x.Figures.ThroughputDuring) }},
	{"throughput overall (/s)", func(x *Result) string { return fmt.Sprintf("%.1f", x.Figures.ThroughputOverall) }},
	{"worst money in flight", func(x *Result) string { return fmt.Sprint(x.Figures.WorstMoneyInFlight) }},
	{"most money held by prepared transactions", func(x *Result) string { return fmt.Sprint(x.Figures.WorstHeld) }},
	{"time to converge after the fault began", func(x *Result) string { return convergenceString(x, x.ConvergenceFromFault) }},
	{"time to converge after the heal", func(x *Result) string { return convergenceString(x, x.Convergence) }},
	{"all started before the heal final at", finalAtString},
	{"participants blocked while prepared (total / longest)", func(x *Result) string {
		if !x.Scenario.hasKind(WorkloadTwoPC) {
			return "0 (sagas never block)"
		}
		return fmt.Sprintf("%.1fs / %.1fs", x.Figures.BlockedPrepared, x.Figures.BlockedPreparedMax)
	}},
	{"final", func(x *Result) string { return finalString(x.Final) }},
	{"status", func(x *Result) string { return x.Status }},
}

// group is the results that share a Compare name.
type group struct {
	Name    string
	Results []*Result
}

func (r *Report) groups() []group {
	var out []group
	idx := map[string]int{}
	for _, x := range r.Results {
		c := x.Scenario.Compare
		if c == "" {
			continue
		}
		c = fmt.Sprintf("%s, seed %d", c, x.Seed)
		i, ok := idx[c]
		if !ok {
			i = len(out)
			idx[c] = i
			out = append(out, group{Name: c})
		}
		out[i].Results = append(out[i].Results, x)
	}
	var full []group
	for _, g := range out {
		if len(g.Results) > 1 {
			full = append(full, g)
		}
	}
	return full
}

// Write writes report.json and report.html into dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.html"))
	if err != nil {
		return err
	}
	if err := r.HTML(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// HTML renders the report as one self-contained page: inline CSS and SVG charts, no script,
// nothing fetched.
func (r *Report) HTML(w io.Writer) error {
	return reportTemplate.Execute(w, r)
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"upper":     strings.ToUpper,
	"final":     finalString,
	"chart":     statusChart,
	"money":     moneyChart,
	"rows":      func() []comparisonRow { return comparisonRows },
	"groups":    func(r *Report) []group { return r.groups() },
	"seconds":   func(f float64) string { return fmt.Sprintf("%.1fs", f) },
	"conv":      func(x *Result) string { return convergenceString(x, x.Convergence) },
	"convFault": func(x *Result) string { return convergenceString(x, x.ConvergenceFromFault) },
	"finalAt":   finalAtString,
	"anchor":    func(x *Result) string { return fmt.Sprintf("s-%s-%d", x.Scenario.Name, x.Seed) },
	"slug":      func(s string) string { return strings.NewReplacer(", seed ", "-", " ", "-").Replace(s) },
	"cell":      func(row comparisonRow, x *Result) string { return row.value(x) },
	"settings":  settingsString,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sagacoord chaos report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.passed{color:#186a00;font-weight:bold}.failed,.error{color:#b00000;font-weight:bold}.skipped{color:#8a6d00;font-weight:bold}.inconclusive{color:#6a3d9a;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:1em}.side{display:flex;gap:2em}.side>div{flex:1 1 0;min-width:0}
svg{max-width:100%;height:auto}
code{background:#f5f5f5;padding:0 3px}section{border-top:2px solid #ddd;margin-top:2em}
.legend span{margin-right:1em}.off{font-family:monospace;font-size:12px}
</style></head><body>
<h1>sagacoord chaos report</h1>
<p>Started {{.StartedAt.Format "2006-01-02 15:04:05 MST"}}, {{seconds .Elapsed}} in all. Seeds: {{range .Seeds}}{{.}} {{else}}each scenario's own{{end}}</p>
<table id="summary"><tr><th>scenario</th><th>seed</th><th>status</th><th>invariants</th><th>accepted</th><th>final</th><th title="from the start of the last fault until everything started before the last heal was final">converged after the last fault began</th><th title="from the last heal until everything started before it was final">after the last heal</th><th>all started before the heal final at</th><th>time</th></tr>
{{range .Results}}<tr class="result-row"><td><a href="#{{anchor .}}">{{.Scenario.Name}}</a></td><td>{{.Seed}}</td><td class="{{.Status}}">{{upper .Status}}</td>
<td>{{range .Invariants}}<span class="{{if .Passed}}passed{{else}}failed{{end}}">{{.Name}}</span> {{end}}</td>
<td>{{.Workload.Accepted}}/{{.Workload.Requested}}</td><td>{{final .Final}}</td><td class="conv-fault">{{convFault .}}</td><td class="conv-heal">{{conv .}}</td><td class="final-at">{{finalAt .}}</td><td>{{seconds .Elapsed}}</td></tr>
{{end}}</table>
{{range groups .}}<section class="comparison" id="compare-{{slug .Name}}"><h2>Side by side: {{.Name}}</h2>
<table><tr><th>figure</th>{{range .Results}}<th>{{.Scenario.Name}} ({{.Scenario.KindLabel}})</th>{{end}}</tr>
{{$g := .}}{{range rows}}{{$row := .}}<tr><td>{{.Name}}</td>{{range $g.Results}}<td>{{cell $row .}}</td>{{end}}</tr>{{end}}</table>
<div class="side">{{range .Results}}<div><h3>{{.Scenario.Name}}</h3>{{chart .}}{{money .}}</div>{{end}}</div></section>
{{end}}
{{range .Results}}<section class="scenario" id="{{anchor .}}"><h2>{{.Scenario.Name}} <span class="{{.Status}}">{{upper .Status}}</span></h2>
<p>{{.Scenario.Description}}</p>
<p>Seed {{.Seed}}{{if .Broken}}, <b>broken build</b> (--test-disable-outbox){{end}}{{if .Scenario.Catalogue}}; failure catalogue entries {{range .Scenario.Catalogue}}{{.}} {{end}}{{end}}. Logs: <code>{{.LogDir}}</code>{{if .DatabaseDump}}; database dump (the run's schemas before cleanup): <code class="dump">{{.DatabaseDump}}</code>{{end}}{{if .DumpError}}; no database dump: {{.DumpError}}{{end}}{{if and .Reason (not .Ineffective)}}<br>{{.Reason}}{{end}}</p>
<p class="settings">Settings passed to the processes: {{settings .Scenario}}</p>
{{if .Ineffective}}<div class="ineffective"><p class="inconclusive">{{len .Ineffective}} fault(s) did not take effect{{if eq .Status "inconclusive"}}: the invariants held, but the run did not test all it was meant to{{end}}:</p><ul>{{range .Ineffective}}<li>{{.}}</li>{{end}}</ul></div>{{end}}
<p>Workload: {{.Workload.Accepted}} of {{.Workload.Requested}} accepted, {{.Workload.Rejected}} rejected, {{.Workload.Retries}} retried call(s). The last fault began at {{seconds .LastFault}} and the last was healed at {{seconds .LastHeal}}; every {{.Scenario.KindLabel}} started before that heal was final at {{finalAt .}}: convergence {{convFault .}} after the last fault began, {{conv .}} after the last heal. The very last finished at {{seconds .Converged}}.</p>
<div class="charts">{{chart .}}{{money .}}</div>
<table><tr><th>invariant</th><th>result</th><th>checked</th><th>violations</th><th>detail and offending ids</th></tr>
{{range .Invariants}}<tr class="invariant"><td title="{{.Title}}">{{.Name}}: {{.Title}}</td><td class="{{if .Passed}}passed{{else}}failed{{end}}">{{if .Passed}}pass{{else}}FAIL{{end}}</td><td>{{.Checked}}</td><td>{{.Violations}}</td>
<td>{{.Detail}}{{range .Offending}}<div class="off">{{.}}</div>{{end}}</td></tr>{{end}}</table>
{{if .Faults}}<table><tr><th>fault</th><th>target</th><th>applied</th><th>healed</th><th>error</th></tr>
{{range .Faults}}<tr{{if .Error}} class="inconclusive"{{end}}><td>{{.Kind}}{{if .Random}} (random){{end}}</td><td>{{.Target}}</td><td>{{seconds .AppliedAt}}</td><td>{{seconds .HealedAt}}</td><td>{{.Error}}</td></tr>{{end}}</table>{{end}}
<details><summary>{{len .Events}} event(s)</summary><table>{{range .Events}}<tr><td>{{seconds .At}}</td><td>{{.Text}}</td></tr>{{end}}</table></details>
</section>
{{end}}</body></html>
`))

// chart geometry
const (
	chartW, chartH = 560.0, 220.0
	padL, padR     = 50.0, 10.0
	padT, padB     = 10.0, 30.0
)

type series struct {
	name, color string
	values      []float64
}

// statusChart draws the sagas or transactions by state over time, with the accepted requests
// and the fault windows shaded.
func statusChart(x *Result) template.HTML {
	ss := []series{
		{"accepted", "#888888", nil},
		{"open", "#1f77b4", nil},
		{"completed", "#2ca02c", nil},
		{"compensated", "#ff7f0e", nil},
		{"failed", "#d62728", nil},
	}
	if x.Scenario.Workload.Kind == WorkloadTwoPC {
		ss[2].name, ss[3].name = "committed", "aborted"
	}
	var ts []float64
	for _, s := range x.Samples {
		ts = append(ts, s.T)
		ss[0].values = append(ss[0].values, float64(s.Accepted))
		ss[1].values = append(ss[1].values, float64(s.Open))
		ss[2].values = append(ss[2].values, float64(s.Completed))
		ss[3].values = append(ss[3].values, float64(s.Compensated))
		ss[4].values = append(ss[4].values, float64(s.Failed))
	}
	return svgChart("chart-status", "states over time", ts, ss, x)
}

// moneyChart draws the money debited but not yet credited or refunded, over time.
func moneyChart(x *Result) template.HTML {
	s := series{"money in flight", "#9467bd", nil}
	h := series{"held by prepared 2PC transactions", "#8c564b", nil}
	var ts []float64
	for _, sm := range x.Samples {
		ts = append(ts, sm.T)
		s.values = append(s.values, float64(sm.MoneyInFlight))
		h.values = append(h.values, float64(sm.Held))
	}
	ss := []series{s}
	if x.Scenario.hasKind(WorkloadTwoPC) {
		ss = append(ss, h)
	}
	return svgChart("chart-money", "money in flight (initial total − balances)", ts, ss, x)
}

func svgChart(class, title string, ts []float64, ss []series, x *Result) template.HTML {
	var b strings.Builder
	maxT, maxV := 1.0, 1.0
	for _, t := range ts {
		maxT = max(maxT, t)
	}
	for _, f := range x.Faults {
		maxT = max(maxT, f.HealedAt)
	}
	for _, s := range ss {
		for _, v := range s.values {
			maxV = max(maxV, v)
		}
	}
	minV := 0.0
	for _, s := range ss {
		for _, v := range s.values {
			minV = min(minV, v)
		}
	}
	px := func(t float64) float64 { return padL + (chartW-padL-padR)*t/maxT }
	py := func(v float64) float64 { return padT + (chartH-padT-padB)*(1-(v-minV)/(maxV-minV)) }
	fmt.Fprintf(&b, `<figure class="chart %s"><figcaption>%s</figcaption><svg xmlns="http://www.w3.org/2000/svg" class="%s" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`,
		class, template.HTMLEscapeString(title), class, chartW, chartH, chartW, chartH)
	for _, f := range x.Faults {
		x0, x1 := px(f.AppliedAt), px(max(f.HealedAt, f.AppliedAt+maxT/200))
		fmt.Fprintf(&b, `<rect class="fault" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#d62728" fill-opacity="0.12"><title>%s</title></rect>`,
			x0, padT, x1-x0, chartH-padT-padB, template.HTMLEscapeString(describe(f.ScheduledFault)))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#444"/>`, padL, chartH-padB, chartW-padR, chartH-padB)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#444"/>`, padL, padT, padL, chartH-padB)
	for i := 0; i <= 4; i++ {
		v := minV + (maxV-minV)*float64(i)/4
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="end">%.0f</text>`, padL-4, py(v)+3, v)
		t := maxT * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%.0fs</text>`, px(t), chartH-padB+14, t)
	}
	for _, s := range ss {
		if len(s.values) == 0 {
			continue
		}
		var pts []string
		for i, v := range s.values {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(ts[i]), py(v)))
		}
		fmt.Fprintf(&b, `<polyline class="series" data-series="%s" fill="none" stroke="%s" stroke-width="1.5" points="%s"><title>%s</title></polyline>`,
			template.HTMLEscapeString(s.name), s.color, strings.Join(pts, " "), template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg><div class="legend">`)
	for _, s := range ss {
		fmt.Fprintf(&b, `<span style="color:%s">■ %s</span>`, s.color, template.HTMLEscapeString(s.name))
	}
	if len(x.Faults) > 0 {
		b.WriteString(`<span style="color:#d62728">▮ fault</span>`)
	}
	b.WriteString(`</div></figure>`)
	return template.HTML(b.String())
}
