// Package migrations holds sagacoord's database schema as numbered SQL files embedded in the
// binary, and the Migrator that applies them. Each migration runs in its own transaction together
// with its row in sagacoord_schema_migrations, under an advisory lock so that concurrent
// migrators (several coordinators starting with --migrate) take turns.
//
// It is the coordinator's machinery, not an API for users: run `coordinator migrate` instead.
// The schema is the coordinator's own and may change in any release, with a migration.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed *.sql
var files embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	Up      string
	Down    string
}

var filePattern = regexp.MustCompile(`^(\d+)_([a-z0-9_]+)\.(up|down)\.sql$`)

// All returns the embedded migrations in version order.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, err
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		m := filePattern.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migrations: file %q is not NNN_name.up.sql or NNN_name.down.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(files, e.Name())
		if err != nil {
			return nil, err
		}
		mig := byVersion[v]
		if mig == nil {
			mig = &Migration{Version: v, Name: m[2]}
			byVersion[v] = mig
		}
		if m[3] == "up" {
			mig.Up = string(body)
		} else {
			mig.Down = string(body)
		}
	}
	out := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		if m.Up == "" || m.Down == "" {
			return nil, fmt.Errorf("migrations: version %d needs both an up and a down file", m.Version)
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrations: versions must be 1, 2, 3, ...; found %d at position %d", m.Version, i+1)
		}
	}
	return out, nil
}

// Latest returns the newest embedded version.
func Latest() int {
	all, err := All()
	if err != nil || len(all) == 0 {
		return 0
	}
	return all[len(all)-1].Version
}

// ErrSchemaOutOfDate is returned by Check when the database needs migrating.
var ErrSchemaOutOfDate = errors.New("database schema is out of date")

// ErrSchemaTooNew is returned by Check when the database was migrated by a newer sagacoord.
var ErrSchemaTooNew = errors.New("database schema is newer than this binary")

// advisoryKey serialises migrators across processes.
const advisoryKey = 0x5a6a_c00d

// Migrator applies the embedded migrations to one database (the connections' search_path).
type Migrator struct {
	Pool *pgxpool.Pool
}

const createVersionTable = `CREATE TABLE IF NOT EXISTS sagacoord_schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`

// Current returns the applied version (0 for an empty database).
func (m *Migrator) Current(ctx context.Context) (int, error) {
	var exists bool
	if err := m.Pool.QueryRow(ctx, `SELECT to_regclass('sagacoord_schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := m.Pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM sagacoord_schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// Check returns nil when the database is at exactly the embedded latest version, and otherwise an
// error that says what to run.
func (m *Migrator) Check(ctx context.Context) error {
	cur, err := m.Current(ctx)
	if err != nil {
		return err
	}
	latest := Latest()
	switch {
	case cur < latest:
		return fmt.Errorf("%w: it is at version %d and this binary needs %d; run `coordinator migrate up` (or start with --migrate)", ErrSchemaOutOfDate, cur, latest)
	case cur > latest:
		return fmt.Errorf("%w: it is at version %d and this binary knows only up to %d; run a newer coordinator", ErrSchemaTooNew, cur, latest)
	}
	return nil
}

// Up applies every migration not yet applied and returns the versions it applied.
func (m *Migrator) Up(ctx context.Context) ([]int, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	var applied []int
	for _, mig := range all {
		did, err := m.step(ctx, mig, true)
		if err != nil {
			return applied, err
		}
		if did {
			applied = append(applied, mig.Version)
		}
	}
	return applied, nil
}

// Down reverts migrations until the database is at version target (0 reverts everything) and
// returns the versions it reverted.
func (m *Migrator) Down(ctx context.Context, target int) ([]int, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	var reverted []int
	for i := len(all) - 1; i >= 0 && all[i].Version > target; i-- {
		did, err := m.step(ctx, all[i], false)
		if err != nil {
			return reverted, err
		}
		if did {
			reverted = append(reverted, all[i].Version)
		}
	}
	return reverted, nil
}

// step applies (up) or reverts (down) one migration in its own transaction, if needed.
func (m *Migrator) step(ctx context.Context, mig Migration, up bool) (bool, error) {
	did := false
	err := pgx.BeginFunc(ctx, m.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, advisoryKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, createVersionTable); err != nil {
			return err
		}
		var present bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sagacoord_schema_migrations WHERE version = $1)`, mig.Version).Scan(&present); err != nil {
			return err
		}
		if present == up {
			return nil
		}
		if up {
			if _, err := tx.Exec(ctx, mig.Up); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO sagacoord_schema_migrations (version, name) VALUES ($1, $2)`, mig.Version, mig.Name); err != nil {
				return err
			}
		} else {
			if _, err := tx.Exec(ctx, mig.Down); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM sagacoord_schema_migrations WHERE version = $1`, mig.Version); err != nil {
				return err
			}
		}
		did = true
		return nil
	})
	if err != nil {
		dir := "up"
		if !up {
			dir = "down"
		}
		return false, fmt.Errorf("migration %d_%s %s: %w", mig.Version, mig.Name, dir, err)
	}
	return did, nil
}
