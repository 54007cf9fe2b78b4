package coordinator

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
)

// TestOpenPoolPlansWithTheIndexes checks that the coordinator's connections price sequential
// scans out (pgstore.ConfigurePool), and that an enable_seqscan in the database URL wins.
func TestOpenPoolPlansWithTheIndexes(t *testing.T) {
	on, err := url.Parse(testenv.DatabaseURL())
	require.NoError(t, err)
	q := on.Query()
	q.Set("enable_seqscan", "on")
	on.RawQuery = q.Encode()
	for _, tc := range []struct{ url, want string }{
		{testenv.DatabaseURL(), "off"},
		{on.String(), "on"},
	} {
		pool, err := OpenPool(t.Context(), tc.url, 1)
		require.NoError(t, err)
		var mode string
		require.NoError(t, pool.QueryRow(t.Context(), `SHOW enable_seqscan`).Scan(&mode))
		pool.Close()
		require.Equal(t, tc.want, mode, "database URL %s", tc.url)
	}
}
