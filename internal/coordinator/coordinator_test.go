package coordinator

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
)

// TestOpenPoolPlansForTheTableAsItIs checks that the coordinator's connections make custom plans
// (pgstore.ConfigurePool), and that a plan_cache_mode in the database URL wins.
func TestOpenPoolPlansForTheTableAsItIs(t *testing.T) {
	auto, err := url.Parse(testenv.DatabaseURL())
	require.NoError(t, err)
	q := auto.Query()
	q.Set("plan_cache_mode", "auto")
	auto.RawQuery = q.Encode()
	for _, tc := range []struct{ url, want string }{
		{testenv.DatabaseURL(), "force_custom_plan"},
		{auto.String(), "auto"},
	} {
		pool, err := OpenPool(t.Context(), tc.url, 1)
		require.NoError(t, err)
		var mode string
		require.NoError(t, pool.QueryRow(t.Context(), `SHOW plan_cache_mode`).Scan(&mode))
		pool.Close()
		require.Equal(t, tc.want, mode, "database URL %s", tc.url)
	}
}
