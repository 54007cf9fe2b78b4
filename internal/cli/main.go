package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"

	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/internal/telemetry/traceexport"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Main runs prog as the process: on its command-line arguments, until SIGINT or SIGTERM, and with
// its gRPC calls traced when OTEL_EXPORTER_OTLP_ENDPOINT is set, so a saga it starts is one trace
// from the command line on (docs/observability.md). It returns the exit code for os.Exit.
func Main(prog Program) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var opts Options
	if ep := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); ep != "" {
		tp, err := startTracing(ctx, prog.Name, ep)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: OTEL_EXPORTER_OTLP_ENDPOINT: %v\n", prog.Name, err)
			return ExitUsage
		}
		defer func() { _ = tp.Shutdown(context.Background()) }() // flushes the spans
		opts.DialOptions = append(opts.DialOptions, grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(telemetry.Propagator))))
	}
	return RunProgram(ctx, prog, os.Args[1:], opts)
}

func startTracing(ctx context.Context, service, endpoint string) (*sdktrace.TracerProvider, error) {
	res, err := traceexport.Resource(service, service)
	if err != nil {
		return nil, err
	}
	return traceexport.OTLP(ctx, endpoint, res, nil)
}
