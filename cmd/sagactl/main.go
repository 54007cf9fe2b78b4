// Command sagactl is the client CLI of the sagacoord coordinator: it registers saga definitions,
// starts, inspects and steers sagas, and inspects two-phase-commit transactions. Run
// `sagactl --help` for the commands and exit codes; the implementation is internal/cli.
//
// With OTEL_EXPORTER_OTLP_ENDPOINT set, sagactl traces its calls, so a saga it starts is one trace
// from the command line on (docs/observability.md).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"

	"github.com/sagacoord/sagacoord/internal/bench"
	"github.com/sagacoord/sagacoord/internal/chaos"
	"github.com/sagacoord/sagacoord/internal/cli"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/internal/telemetry/otelsetup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	opts := cli.Options{Commands: []cli.CommandFunc{bench.Command, chaos.Command}}
	var tel *otelsetup.Telemetry
	if ep := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); ep != "" {
		var err error
		if tel, err = otelsetup.Start(ctx, otelsetup.Config{ServiceName: "sagactl", OTLPEndpoint: ep}); err != nil {
			fmt.Fprintln(os.Stderr, "sagactl: OTEL_EXPORTER_OTLP_ENDPOINT:", err)
			os.Exit(1)
		}
		opts.DialOptions = append(opts.DialOptions, grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(tel.TracerProvider), otelgrpc.WithPropagators(telemetry.Propagator))))
	}
	code := cli.Run(ctx, os.Args[1:], opts)
	stop()
	if tel != nil {
		_ = tel.Shutdown(context.Background()) // flushes the spans
	}
	os.Exit(code)
}
