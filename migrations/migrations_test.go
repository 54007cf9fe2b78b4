package migrations_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/migrations"
)

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	m := &migrations.Migrator{Pool: pool}

	require.ErrorIs(t, m.Check(ctx), migrations.ErrSchemaOutOfDate)

	applied, err := m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, applied, migrations.Latest())
	require.NoError(t, m.Check(ctx))

	again, err := m.Up(ctx)
	require.NoError(t, err)
	require.Empty(t, again, "a second up applies nothing")

	reverted, err := m.Down(ctx, 0)
	require.NoError(t, err)
	require.Len(t, reverted, migrations.Latest())
	cur, err := m.Current(ctx)
	require.NoError(t, err)
	require.Zero(t, cur)
	var tables int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'sagacoord_schema_migrations'`).Scan(&tables))
	require.Zero(t, tables, "down to zero leaves no tables behind")

	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Check(ctx))
}

func TestCheckRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	m := &migrations.Migrator{Pool: pool}
	_, err := m.Up(ctx)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO sagacoord_schema_migrations (version, name) VALUES ($1, 'future')`, migrations.Latest()+1)
	require.NoError(t, err)
	err = m.Check(ctx)
	require.True(t, errors.Is(err, migrations.ErrSchemaTooNew), "got %v", err)
	require.Contains(t, err.Error(), "newer coordinator")
}

func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testenv.Pool(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := (&migrations.Migrator{Pool: pool}).Up(ctx)
			errs <- err
		}()
	}
	for range 4 {
		require.NoError(t, <-errs)
	}
	require.NoError(t, (&migrations.Migrator{Pool: pool}).Check(ctx))
}
