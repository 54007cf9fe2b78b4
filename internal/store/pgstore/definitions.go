package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// RegisterDefinition implements store.Definitions.
func (s *Store) RegisterDefinition(ctx context.Context, def saga.Definition) (saga.Definition, bool, error) {
	content := def.CanonicalJSON()
	hash := def.Hash()
	var out saga.Definition
	created := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		created = false
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('sagacoord.definition:' || $1))`, def.Name); err != nil {
			return err
		}
		var version int
		var createdAt time.Time
		// Identical to the latest version is a no-op; anything else, even an older version's
		// content, becomes the next version (re-registering A after B makes A the latest again).
		var by string
		err := tx.QueryRow(ctx, `SELECT version, created_at, registered_by FROM saga_definitions WHERE name = $1 AND hash = $2
			AND version = (SELECT max(version) FROM saga_definitions WHERE name = $1)`, def.Name, hash).Scan(&version, &createdAt, &by)
		if err == nil {
			out = def
			out.Version, out.CreatedAt, out.RegisteredBy = version, createdAt, by
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO saga_definitions (name, version, hash, content, registered_by)
			SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4 FROM saga_definitions WHERE name = $1
			RETURNING version, created_at`, def.Name, hash, content, def.RegisteredBy).Scan(&version, &createdAt)
		if err != nil {
			return err
		}
		out = def
		out.Version, out.CreatedAt = version, createdAt
		created = true
		return nil
	})
	if err != nil {
		return saga.Definition{}, false, fmt.Errorf("register definition %q: %w", def.Name, err)
	}
	return out, created, nil
}

// GetDefinition implements store.Definitions.
func (s *Store) GetDefinition(ctx context.Context, name string, version int) (saga.Definition, error) {
	var row pgx.Row
	if version > 0 {
		row = s.pool.QueryRow(ctx, `SELECT name, version, content, created_at, registered_by FROM saga_definitions WHERE name = $1 AND version = $2`, name, version)
	} else {
		row = s.pool.QueryRow(ctx, `SELECT name, version, content, created_at, registered_by FROM saga_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1`, name)
	}
	def, err := scanDefinition(row)
	if errors.Is(err, pgx.ErrNoRows) {
		if version > 0 {
			return saga.Definition{}, fmt.Errorf("definition %q version %d: %w", name, version, store.ErrNotFound)
		}
		return saga.Definition{}, fmt.Errorf("definition %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return saga.Definition{}, fmt.Errorf("get definition %q: %w", name, err)
	}
	return def, nil
}

// ListDefinitions implements store.Definitions.
func (s *Store) ListDefinitions(ctx context.Context, f store.DefinitionFilter) ([]saga.Definition, error) {
	var limit *int
	if f.Limit > 0 {
		limit = &f.Limit
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (name) name, version, content, created_at, registered_by FROM saga_definitions
		WHERE name > $1 ORDER BY name, version DESC LIMIT $2`, f.AfterName, limit)
	if err != nil {
		return nil, fmt.Errorf("list definitions: %w", err)
	}
	defer rows.Close()
	var out []saga.Definition
	for rows.Next() {
		def, err := scanDefinition(rows)
		if err != nil {
			return nil, fmt.Errorf("list definitions: %w", err)
		}
		out = append(out, def)
	}
	return out, rows.Err()
}

func scanDefinition(row pgx.Row) (saga.Definition, error) {
	var (
		def     saga.Definition
		name    string
		version int
		content []byte
		created time.Time
		by      string
	)
	if err := row.Scan(&name, &version, &content, &created, &by); err != nil {
		return def, err
	}
	if err := json.Unmarshal(content, &def); err != nil {
		return def, fmt.Errorf("decode definition %q version %d: %w", name, version, err)
	}
	def.Version, def.CreatedAt, def.RegisteredBy = version, created, by
	return def, nil
}
