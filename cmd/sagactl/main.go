// Command sagactl is the client CLI of the sagacoord coordinator: it registers saga definitions,
// starts, inspects and steers sagas, and inspects two-phase-commit transactions. Run
// `sagactl --help` for the commands and exit codes; the implementation is internal/cli. It is a
// gRPC client only: the chaos lab and the benchmark are sagalab's (cmd/sagalab).
//
// With OTEL_EXPORTER_OTLP_ENDPOINT set, sagactl traces its calls, so a saga it starts is one trace
// from the command line on (docs/observability.md).
package main

import (
	"os"

	"github.com/sagacoord/sagacoord/internal/cli"
)

func main() {
	os.Exit(cli.Main(cli.Sagactl()))
}
