// Command sagactl is the client CLI of the sagacoord coordinator: it registers saga definitions,
// starts, inspects and steers sagas, and inspects two-phase-commit transactions. Run
// `sagactl --help` for the commands and exit codes; the implementation is internal/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sagacoord/sagacoord/internal/bench"
	"github.com/sagacoord/sagacoord/internal/chaos"
	"github.com/sagacoord/sagacoord/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Options{Commands: []cli.CommandFunc{bench.Command, chaos.Command}})
	stop()
	os.Exit(code)
}
