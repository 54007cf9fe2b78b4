package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/sagacoord/sagacoord/internal/cmdline"
	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/migrations"
)

const migrateWant = "want up, down [N] or status"

func newMigrateCommand(stdout io.Writer) *cobra.Command {
	var (
		cfg      coordinator.Config
		logLevel string
	)
	m := &cobra.Command{
		Use:   "migrate up|down [N]|status [flags]",
		Short: "apply, revert or show the schema migrations (up, down [N], status)",
		Args:  cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fail(exitUsage, "coordinator migrate: %s", migrateWant)
			}
			return fail(exitUsage, "coordinator migrate: unknown subcommand %q; %s", args[0], migrateWant)
		},
	}
	commonFlags(m.PersistentFlags(), &cfg, &logLevel)
	// sub makes a subcommand that runs do with the migrator of the database.
	sub := func(use, short string, do func(ctx context.Context, m *migrations.Migrator, args []string) error) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := cmdline.ApplyEnv(cmd.Flags(), os.Getenv); err != nil {
					return fail(exitUsage, "coordinator: %v", err)
				}
				pool, err := coordinator.OpenPool(cmd.Context(), cfg.DatabaseURL, 2)
				if err != nil {
					return fail(exitFailed, "coordinator: %v", err)
				}
				defer pool.Close()
				return do(cmd.Context(), &migrations.Migrator{Pool: pool}, args)
			},
		}
	}
	m.AddCommand(
		sub("up", "apply every pending migration", func(ctx context.Context, m *migrations.Migrator, _ []string) error {
			return migrateUp(ctx, m, stdout)
		}),
		sub("down [N]", "revert migrations down to version N (default: one step)", func(ctx context.Context, m *migrations.Migrator, args []string) error {
			return migrateDown(ctx, m, args, stdout)
		}),
		sub("status", "print the applied and the latest version (exit 3 when they differ)", func(ctx context.Context, m *migrations.Migrator, _ []string) error {
			return migrateStatus(ctx, m, stdout)
		}),
	)
	return m
}

func migrateUp(ctx context.Context, m *migrations.Migrator, stdout io.Writer) error {
	applied, err := m.Up(ctx)
	if err != nil {
		return fail(exitFailed, "coordinator: migrate up: %v", err)
	}
	fmt.Fprintf(stdout, "applied %d migration(s); schema at version %d\n", len(applied), migrations.Latest())
	return nil
}

func migrateDown(ctx context.Context, m *migrations.Migrator, args []string, stdout io.Writer) error {
	cur, err := m.Current(ctx)
	if err != nil {
		return fail(exitFailed, "coordinator: %v", err)
	}
	target := cur - 1
	if len(args) > 0 {
		if target, err = strconv.Atoi(args[0]); err != nil || target < 0 {
			return fail(exitUsage, "coordinator: migrate down: %q is not a version number", args[0])
		}
	}
	target = max(target, 0)
	reverted, err := m.Down(ctx, target)
	if err != nil {
		return fail(exitFailed, "coordinator: migrate down: %v", err)
	}
	fmt.Fprintf(stdout, "reverted %d migration(s); schema at version %d\n", len(reverted), target)
	return nil
}

func migrateStatus(ctx context.Context, m *migrations.Migrator, stdout io.Writer) error {
	cur, err := m.Current(ctx)
	if err != nil {
		return fail(exitFailed, "coordinator: %v", err)
	}
	fmt.Fprintf(stdout, "schema version %d; this binary's latest %d\n", cur, migrations.Latest())
	if cur != migrations.Latest() {
		return &exitError{code: exitBehind}
	}
	return nil
}
