package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
	"github.com/sagacoord/sagacoord/internal/store/storetest"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/migrations"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newStore returns a store on a fresh, migrated schema of the test database.
func newStore(tb testing.TB, cfg pgstore.Config) *pgstore.Store {
	tb.Helper()
	pool, _ := testenv.Pool(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := (&migrations.Migrator{Pool: pool}).Up(ctx)
	require.NoError(tb, err, "migrate")
	return pgstore.New(pool, cfg)
}

// TestConformance runs the store conformance suite against PostgreSQL.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return newStore(t, pgstore.Config{OutboxLease: storetest.NewRowLease})
	})
}
