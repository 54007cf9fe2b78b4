package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/migrations"
)

// TestConfiguredPoolKeepsUsingTheIndexAsTheTableGrows runs Mutate often enough on a nearly
// empty table for PostgreSQL to settle on a plan for its prepared statements, grows the table
// without analyzing it, as a busy coordinator's first minute does, and checks that the next
// Mutate reads its rows through the index, not by scanning the table.
func TestConfiguredPoolKeepsUsingTheIndexAsTheTableGrows(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, dbURL := testenv.Pool(t)
	pc, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	pgstore.ConfigurePool(pc)
	pc.MaxConns = 1 // one backend: the one whose plans and table statistics the test reads
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	defer pool.Close()
	_, err = (&migrations.Migrator{Pool: pool}).Up(ctx)
	require.NoError(t, err)
	s := pgstore.New(pool, pgstore.Config{})
	def := registerDefinition(t, s, "grow", 1)
	ids := make([]uuid.UUID, 10) // a batch, as a coordinator under load sends
	for i := range ids {
		ids[i] = uuid.New()
	}
	createSagas(t, s, def, ids)

	touch := func() {
		t.Helper()
		_, err := s.Mutate(ctx, ids, func(_ time.Time, sagas []*store.Saga) ([]store.Change, error) {
			changes := make([]store.Change, len(sagas))
			for i, sg := range sagas {
				sg.State.Reason = uuid.NewString()
				changes[i] = store.Change{Row: sg}
			}
			return changes, nil
		})
		require.NoError(t, err)
	}
	for range 8 { // more than the five custom plans after which PostgreSQL may go generic
		touch()
	}
	_, err = pool.Exec(ctx, `INSERT INTO sagas (id, definition_name, definition_version, status, input, request_hash, state, version, created_at, updated_at)
		SELECT gen_random_uuid(), definition_name, definition_version, status, input, request_hash, state, 1, created_at, updated_at
		FROM sagas, generate_series(1, 2000)`)
	require.NoError(t, err)

	seqScans := func() int64 {
		t.Helper()
		// The backend's counters reach the shared statistics when it next goes idle.
		_, err := pool.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
		require.NoError(t, err)
		var n int64
		require.NoError(t, pool.QueryRow(ctx,
			`SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'sagas'::regclass`).Scan(&n))
		return n
	}
	before := seqScans()
	touch()
	require.Equal(t, before, seqScans(),
		"Mutate scanned the whole sagas table (20,010 rows) to change ten sagas: its prepared statements kept a plan made when the table was nearly empty")
}
