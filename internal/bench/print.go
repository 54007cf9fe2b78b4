package bench

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/sagacoord/sagacoord/internal/cli"
)

func printTable(app *cli.App, r *Result) {
	w := tabwriter.NewWriter(app.Stdout(), 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(w, "%s\t%v\n", k, v) }
	if r.Mode == "burst" {
		row("mode", fmt.Sprintf("burst of %d sagas, %d start calls at a time", r.Burst, r.Concurrency))
		row("started in / all finished after", fmt.Sprintf("%.1fs / %.1fs", r.BurstStartSeconds, r.BurstEndSeconds))
		row("most in flight", fmt.Sprintf("%d", r.BurstInFlightPeak))
		row("started / errors / shed", fmt.Sprintf("%d / %d / %d", r.Started, r.StartErrors, r.Shed))
		row("completed / failed (parked for an operator)", fmt.Sprintf("%d / %d", r.Completed, r.Unfinished))
		row("sagas/s (start of burst to last finish)", fmt.Sprintf("%.0f", r.SagasPerSecond))
		row("coordinator RSS / peak", fmt.Sprintf("%.0f MB / %.0f MB", r.CoordinatorRSSMB, r.CoordinatorPeakMB))
		_ = w.Flush()
		return
	}
	if r.Mode == "open" {
		row("mode", fmt.Sprintf("open loop, %.0f sagas/s offered", r.TargetRate))
	} else {
		row("mode", fmt.Sprintf("closed loop, %d in flight", r.Concurrency))
	}
	row("window", fmt.Sprintf("%.1fs", r.DurationSeconds))
	row("rows in sagas", fmt.Sprintf("%d", r.SagaRows))
	row("started / errors / shed", fmt.Sprintf("%d / %d / %d", r.Started, r.StartErrors, r.Shed))
	row("completed sagas/s", fmt.Sprintf("%.0f", r.SagasPerSecond))
	row("latency p50 / p95 / p99 / max", fmt.Sprintf("%.1f / %.1f / %.1f / %.1f ms", r.LatencyP50Millis, r.LatencyP95Millis, r.LatencyP99Millis, r.LatencyMaxMillis))
	row("unfinished after drain", fmt.Sprintf("%d (drain %.1fs)", r.Unfinished, r.DrainSeconds))
	row("PostgreSQL commits per saga", fmt.Sprintf("%.2f", r.CommitsPerSaga))
	if r.MessagesPerSaga != nil {
		row("messages per saga", fmt.Sprintf("%.2f", *r.MessagesPerSaga))
	} else {
		row("messages per saga", "unknown (see warnings)")
	}
	if r.CoordinatorCPU > 0 || r.CoordinatorRSSMB > 0 {
		row("coordinator CPU / RSS / peak", fmt.Sprintf("%.2f cores / %.0f MB / %.0f MB", r.CoordinatorCPU, r.CoordinatorRSSMB, r.CoordinatorPeakMB))
	}
	if total := r.CPUByProcess["total"]; total > 0 {
		var parts []string
		for _, g := range groups {
			if c := r.CPUByProcess[g]; c > 0 {
				parts = append(parts, fmt.Sprintf("%s %.2f", g, c))
			}
		}
		row("machine CPU (cores)", fmt.Sprintf("%.2f: %s", total, strings.Join(parts, ", ")))
		row("machine CPU per saga", fmt.Sprintf("%.2f ms", r.CPUMillisPerSaga))
	}
	if r.BaselinePublish > 0 {
		row("baseline confirmed publishes/s", fmt.Sprintf("%.0f", r.BaselinePublish))
		row("baseline single-row inserts/s", fmt.Sprintf("%.0f", r.BaselineInserts))
		if r.MessagesPerSaga != nil {
			row("broker efficiency", fmt.Sprintf("%.2f", r.BrokerEfficiency))
		} else {
			row("broker efficiency", "unknown (no message count)")
		}
	}
	printBreakdown(row, r.Breakdown)
	for _, warning := range r.Warnings {
		row("warning", warning)
	}
	_ = w.Flush()
}

// groups are the process groups in the order they are printed.
var groups = []string{"postgres", "rabbitmq", "coordinator", "participant-sim", "sagalab", "sagactl", "other"}

// printBreakdown prints where a saga's cost goes.
func printBreakdown(row func(string, any), b *Breakdown) {
	if b == nil {
		return
	}
	for _, db := range []string{"coordinator", "participants"} {
		line := fmt.Sprintf("%.2f transactions", b.Transactions[db])
		if s, ok := b.Statements[db]; ok {
			line += fmt.Sprintf(", %.1f statements, %.2f commits", s, b.Commits[db])
		}
		row("per saga, "+db+" database", line)
	}
	row("per saga, WAL", fmt.Sprintf("%.2f syncs, %.1f kB", b.WALSyncs, b.WALBytes/1024))
	if br := b.Broker; br != nil {
		row("per saga, broker", fmt.Sprintf("%.2f published, %.2f confirmed, %.2f delivered, %.2f acked", br.Published, br.Confirmed, br.Delivered, br.Acked))
	}
	row("per saga, context switches", byGroup(b.ContextSwitches, "%.0f"))
	row("per saga, CPU ms", byGroup(b.CPUMillis, "%.2f"))
}

// byGroup formats figures by process group, total first.
func byGroup(m map[string]float64, format string) string {
	if len(m) == 0 {
		return "unknown"
	}
	parts := []string{fmt.Sprintf(format, m["total"])}
	var rest []string
	for _, g := range groups {
		if v, ok := m[g]; ok && v > 0 {
			rest = append(rest, g+" "+fmt.Sprintf(format, v))
		}
	}
	return parts[0] + ": " + strings.Join(rest, ", ")
}
