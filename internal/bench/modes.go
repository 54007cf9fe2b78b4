package bench

import (
	"encoding/json"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sagacoord/sagacoord/internal/cli"
)

// HalfPeak is the result of --half-peak: the closed loop, then the open loop at half its rate.
type HalfPeak struct {
	Peak     *Result `json:"peak"`
	HalfPeak *Result `json:"half_peak"`
}

func runHalfPeak(cmd *cobra.Command, app *cli.App, cfg Config, asJSON bool) error {
	closed := cfg
	closed.Baselines = false // taken once, after the second run
	peak, err := Run(cmd.Context(), closed)
	if err != nil {
		return &cli.ExitError{Code: 2, Err: fmt.Errorf("peak: %w", err)}
	}
	open := cfg
	open.Rate = peak.SagasPerSecond / 2
	open.PrefillFinished = 0 // the tables were filled by the first run
	fmt.Fprintf(cfg.Log, "peak %.0f sagas/s; now the open loop at %.0f/s\n", peak.SagasPerSecond, open.Rate)
	half, err := Run(cmd.Context(), open)
	if err != nil {
		return &cli.ExitError{Code: 2, Err: fmt.Errorf("half the peak: %w", err)}
	}
	if asJSON || app.JSON() {
		enc := json.NewEncoder(app.Stdout())
		enc.SetIndent("", "  ")
		return enc.Encode(HalfPeak{Peak: peak, HalfPeak: half})
	}
	fmt.Fprintln(app.Stdout(), "peak:")
	printTable(app, peak)
	fmt.Fprintln(app.Stdout(), "\nhalf the peak:")
	printTable(app, half)
	return nil
}

// runSweep runs the open loop at each rate in turn, on the same system, and prints one result
// per rate (a JSON array with --json). Baselines are taken once, after the last rate.
func runSweep(cmd *cobra.Command, app *cli.App, cfg Config, rates []float64, asJSON bool) error {
	var results []*Result
	for i, rate := range rates {
		if rate <= 0 {
			return &cli.ExitError{Code: 1, Err: fmt.Errorf("--sweep: rate %v must be positive", rate)}
		}
		run := cfg
		run.Rate = rate
		run.Baselines = cfg.Baselines && i == len(rates)-1
		if i > 0 {
			run.PrefillFinished = 0 // the tables were filled by the first run
		}
		fmt.Fprintf(cfg.Log, "open loop at %.0f sagas/s (%d of %d)\n", rate, i+1, len(rates))
		res, err := Run(cmd.Context(), run)
		if err != nil {
			return &cli.ExitError{Code: 2, Err: fmt.Errorf("rate %v: %w", rate, err)}
		}
		results = append(results, res)
	}
	if asJSON || app.JSON() {
		enc := json.NewEncoder(app.Stdout())
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	printCurve(app, results)
	return nil
}

// Bound is the result of --p99-bound: the highest open-loop rate at which p99 stayed under the
// bound and every offered saga completed, and every rate tried on the way.
type Bound struct {
	BoundMillis float64   `json:"p99_bound_ms"`
	Peak        *Result   `json:"peak"`
	Rate        float64   `json:"latency_bounded_rate"`
	Curve       []*Result `json:"curve"`
}

// boundProbes is the number of open-loop runs the bisection makes after the peak.
const boundProbes = 6

// runBound measures the closed-loop peak, then bisects the open-loop rate between 0 and the
// peak for the highest rate whose p99 stays under bound and whose sagas keep up with the offer.
func runBound(cmd *cobra.Command, app *cli.App, cfg Config, bound time.Duration, asJSON bool) error {
	closed := cfg
	closed.Baselines = false
	peak, err := Run(cmd.Context(), closed)
	if err != nil {
		return &cli.ExitError{Code: 2, Err: fmt.Errorf("peak: %w", err)}
	}
	res := Bound{BoundMillis: float64(bound.Milliseconds()), Peak: peak}
	lo, hi := 0.0, peak.SagasPerSecond
	for i := range boundProbes {
		rate := (lo + hi) / 2
		if i == 0 {
			rate = hi * 0.9 // most systems hold most of their peak: try high first
		}
		open := cfg
		open.Rate, open.Baselines, open.PrefillFinished = rate, false, 0
		fmt.Fprintf(cfg.Log, "open loop at %.0f sagas/s (probe %d of %d, p99 bound %s)\n", rate, i+1, boundProbes, bound)
		r, err := Run(cmd.Context(), open)
		if err != nil {
			return &cli.ExitError{Code: 2, Err: fmt.Errorf("rate %.0f: %w", rate, err)}
		}
		res.Curve = append(res.Curve, r)
		if withinBound(r, bound) {
			lo, res.Rate = rate, rate
		} else {
			hi = rate
		}
	}
	sort.Slice(res.Curve, func(i, j int) bool { return res.Curve[i].TargetRate < res.Curve[j].TargetRate })
	if asJSON || app.JSON() {
		enc := json.NewEncoder(app.Stdout())
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintln(app.Stdout(), "peak:")
	printTable(app, peak)
	fmt.Fprintf(app.Stdout(), "\nthe latency curve (open loop):\n")
	printCurve(app, res.Curve)
	fmt.Fprintf(app.Stdout(), "\nlatency-bounded throughput (p99 < %s): %.0f sagas/s\n", bound, res.Rate)
	return nil
}

// withinBound reports whether an open-loop run kept p99 under bound and completed what it
// offered (within 5%: the window's edges).
func withinBound(r *Result, bound time.Duration) bool {
	return r.LatencyP99Millis < float64(bound.Milliseconds()) && r.SagasPerSecond >= 0.95*r.TargetRate && r.Unfinished == 0
}

// printCurve prints one line per open-loop run.
func printCurve(app *cli.App, results []*Result) {
	w := tabwriter.NewWriter(app.Stdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "offered/s\tcompleted/s\tp50 ms\tp95 ms\tp99 ms\tcommits/saga\tmachine CPU ms/saga")
	for _, r := range results {
		fmt.Fprintf(w, "%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\n", r.TargetRate, r.SagasPerSecond,
			r.LatencyP50Millis, r.LatencyP95Millis, r.LatencyP99Millis, r.CommitsPerSaga, r.CPUMillisPerSaga)
	}
	_ = w.Flush()
}
