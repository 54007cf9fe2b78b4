// Command sagalab is the developers' lab of sagacoord: `sagalab chaos` runs the fault-injection
// scenarios of scenarios/ against real coordinator and participant-sim processes
// (internal/chaos, docs/chaos.md), `sagalab bench` measures a running system
// (internal/bench, docs/performance.md), `sagalab sandbox` runs a PostgreSQL and a RabbitMQ
// that take only TLS (internal/sandbox, docs/security.md), and `sagalab participant-check` checks
// a running participant against the wire protocol over the broker (internal/conformance,
// docs/conformance.md). They need PostgreSQL, RabbitMQ (amqp091-go) and toxiproxy's library,
// which is why they live here and not in sagactl, the user's gRPC client. Global flags, error
// format and exit codes 0, 1, 2 and 130 are sagactl's (internal/cli).
package main

import (
	"os"

	"github.com/sagacoord/sagacoord/internal/bench"
	"github.com/sagacoord/sagacoord/internal/chaos"
	"github.com/sagacoord/sagacoord/internal/cli"
	"github.com/sagacoord/sagacoord/internal/conformance"
	"github.com/sagacoord/sagacoord/internal/sandbox"
)

// lab is sagalab's root command.
var lab = cli.Program{
	Name:  "sagalab",
	Short: "Chaos scenarios and benchmark of sagacoord, for its developers",
	Long: `sagalab runs the chaos scenarios (sagalab chaos) and the benchmark (sagalab bench) of
sagacoord against real processes, PostgreSQL and RabbitMQ, and a PostgreSQL and a RabbitMQ that
take only TLS (sagalab sandbox, for make demo-tls). sagalab participant-check checks a running
participant against the wire protocol (docs/conformance.md). The user's client is sagactl.

Exit codes:
  0  success (chaos run: every invariant of every run held and every fault took effect)
  1  usage error: bad flags or arguments, or a bad scenario file
  2  bench: the coordinator could not be reached or a measurement failed; participant-check: the
     broker could not be reached
  5  chaos run: a scenario failed (an invariant was violated) or could not run
  6  chaos run: no scenario failed, but one was inconclusive (a fault did not take effect)
  7  participant-check: a case failed
  130 interrupted`,
	Commands: []cli.CommandFunc{chaos.Command, bench.Command, sandbox.Command, conformance.Command},
}

func main() {
	os.Exit(cli.Main(lab))
}
