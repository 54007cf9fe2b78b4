package chaos

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/sagacoord/sagacoord/internal/sandbox"
)

// startPrivatePostgres starts the PostgreSQL of one scenario, for the postgres_restart fault: a
// sandbox instance without TLS that trusts every connection, in parent/postgres on a free port.
func startPrivatePostgres(ctx context.Context, bin, parent string) (*sandbox.Postgres, error) {
	// Room for every process's pool: the scenario's alone, unlike the shared server's 100.
	pg, err := sandbox.StartPostgres(ctx, sandbox.PostgresConfig{Dir: filepath.Join(parent, "postgres"), Bin: bin, MaxConnections: 300})
	if errors.Is(err, sandbox.ErrMissing) {
		return nil, fmt.Errorf("%w: %v (or pass --postgres-bin)", ErrSkipped, err)
	}
	return pg, err
}

// postgresURL is the URL of the database postgres on a private PostgreSQL.
func postgresURL(pg *sandbox.Postgres) string { return pg.URL("", "postgres", sandbox.Pair{}) }
