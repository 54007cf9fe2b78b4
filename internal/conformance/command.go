package conformance

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sagacoord/sagacoord/internal/cli"
)

// ExitCaseFailed is `sagalab participant-check`'s exit code when a case failed.
const ExitCaseFailed = 7

// Command is `sagalab participant-check` (cmd/sagalab).
func Command(app *cli.App) *cobra.Command {
	var cfg Config
	cmd := &cobra.Command{
		Use:   "participant-check --participant NAME [--amqp-url URL]",
		Short: "Check a running participant against the wire protocol, over the broker only",
		Long: `participant-check tests a running worker black-box: it publishes step and two-phase-commit
commands to the worker's queues on sagacoord.commands as a coordinator would, and reads the replies
and dead letters from queues of its own. The worker must implement the test contract of
docs/conformance.md (actions check.ok, check.echo, check.fail, check.fail-first, check.retry-once,
check.undo; a PREPARE votes as its payload's "vote" says) and consume a vhost where no coordinator
runs. It prints PASS or FAIL and why for each case, and exits 7 when a case failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Participant == "" {
				return &cli.ExitError{Code: cli.ExitUsage, Err: fmt.Errorf("--participant is required")}
			}
			results, err := Run(cmd.Context(), cfg, app.Stdout())
			if err != nil {
				return &cli.ExitError{Code: cli.ExitServer, Err: err}
			}
			failed := 0
			for _, r := range results {
				if !r.Passed {
					failed++
				}
			}
			fmt.Fprintf(app.Stdout(), "%d of %d cases passed\n", len(results)-failed, len(results))
			if failed > 0 {
				return &cli.ExitError{Code: ExitCaseFailed}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	amqpURL := os.Getenv("SAGACOORD_AMQP_URL")
	if amqpURL == "" {
		amqpURL = "amqp://guest:guest@127.0.0.1:5672/sagacoord-check"
	}
	fs.StringVar(&cfg.AMQPURL, "amqp-url", amqpURL, "the broker and vhost the worker consumes; no coordinator may run on it (env SAGACOORD_AMQP_URL)")
	fs.StringVar(&cfg.Participant, "participant", "", "the worker's participant name")
	fs.DurationVar(&cfg.CaseTimeout, "case-timeout", 10*time.Second, "time limit of each case")
	fs.DurationVar(&cfg.QueryTimeout, "query-timeout", 30*time.Second, "how long a prepared worker left without a decision may take to ask for it, on top of --case-timeout")
	return cmd
}
