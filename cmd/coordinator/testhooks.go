//go:build testhooks

package main

import (
	"log/slog"
	"os"
	"syscall"

	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/sagacoord/sagacoord/internal/coordinator"
)

// This file gives `coordinator serve` the flags of the chaos suite's crash points. It is compiled
// only with -tags testhooks (make build-testhooks: bin/testhooks/coordinator), so the binary that
// ships has neither the flags nor their help; the chaos runner and the end-to-end tests use the
// test build.

func init() { testHooks = registerTestHooks }

// registerTestHooks registers the test-hook flags on serve's flags and returns what sets
// coordinator.Config.Test from them once they are parsed.
func registerTestHooks(fs *pflag.FlagSet) func(cfg *coordinator.Config, log *slog.Logger) {
	disableOutbox := fs.Bool("test-disable-outbox", false, "TEST ONLY: never publish (proves the chaos checks catch lost messages)")
	crashAfterConfirm := fs.Bool("test-crash-after-confirm", false, "TEST ONLY: SIGKILL self after the first confirmed publish, before its outbox rows are deleted")
	crashBeforeDecision := fs.Bool("test-crash-before-decision", false, "TEST ONLY: SIGKILL self when a 2PC transaction's last YES vote arrives, before its COMMIT decision is logged")
	return func(cfg *coordinator.Config, log *slog.Logger) {
		cfg.Test.DisableOutbox = *disableOutbox
		if *crashAfterConfirm {
			cfg.Test.AfterConfirm = func() {
				log.Warn("test crash point reached: after confirm, before the outbox rows are deleted")
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
		if *crashBeforeDecision {
			cfg.Test.BeforeCommitDecision = func(txID uuid.UUID) {
				// The chaos runner reads this line (internal/chaos, crashPointMessage).
				log.Warn("test crash point reached: every vote YES, before the COMMIT decision is logged", "tx_id", txID)
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
}
