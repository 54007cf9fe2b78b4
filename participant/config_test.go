package participant

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{}.WithDefaults()
	require.Equal(t, DefaultSchema, c.Schema)
	require.Equal(t, DefaultPrefetch, c.Prefetch)
	require.Equal(t, DefaultPrefetch, c.Concurrency, "Concurrency follows Prefetch")
	require.Equal(t, DefaultRetryBackoff, c.RetryBackoff)
	require.Equal(t, DefaultMaxBatch, c.MaxBatch)
	require.NotNil(t, c.Logger)

	c = Config{Prefetch: 4}.WithDefaults()
	require.Equal(t, 4, c.Concurrency)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := Config{Name: "bank-a", Transport: noTransport{}, DB: &pgxpool.Pool{}}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"ok", func(*Config) {}, ""},
		{"no name", func(c *Config) { c.Name = "" }, "Config.Name must not be empty"},
		{"bad name", func(c *Config) { c.Name = "bank a" }, "Config.Name \"bank a\" may contain only letters"},
		{"no transport", func(c *Config) { c.Transport = nil }, "Config.Transport is nil"},
		{"no db", func(c *Config) { c.DB = nil }, "Config.DB is nil"},
		{"bad schema", func(c *Config) { c.Schema = `x"; drop table y` }, "not a lower-case SQL identifier"},
		{"upper-case schema", func(c *Config) { c.Schema = "Sim" }, "not a lower-case SQL identifier"},
		{"negative prefetch", func(c *Config) { c.Prefetch = -1 }, "Prefetch -1 must be at least 1"},
		{"negative concurrency", func(c *Config) { c.Concurrency = -2 }, "Concurrency -2 must be at least 1"},
		{"max batch 1", func(c *Config) { c.MaxBatch = 1 }, ""},
		{"negative max batch", func(c *Config) { c.MaxBatch = -1 }, "MaxBatch -1 must be between 1 and 64"},
		{"max batch past the subtransaction cache", func(c *Config) { c.MaxBatch = 65 }, "MaxBatch 65 must be between 1 and 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.change(&c)
			_, err := New(c)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestFailClassifies(t *testing.T) {
	t.Parallel()
	base := errors.New("insufficient funds")
	require.True(t, IsBusiness(Fail(base)))
	require.True(t, IsBusiness(fmt.Errorf("debit: %w", Fail(base))), "wrapping keeps the class")
	require.ErrorIs(t, Fail(base), base)
	require.Equal(t, "business failure", Fail(nil).Error())
	require.False(t, IsBusiness(base))
	require.False(t, IsBusiness(nil))
	require.Equal(t, "no sku x", Failf("no sku %s", "x").Error())
}

func TestHandleRejectsProgrammingErrors(t *testing.T) {
	t.Parallel()
	w, err := New(Config{Name: "p", Transport: noTransport{}, DB: &pgxpool.Pool{}})
	require.NoError(t, err)
	h := (&recorder{}).handle
	w.Handle("debit", h)
	require.Panics(t, func() { w.Handle("debit", h) })
	require.Panics(t, func() { w.Handle("", h) })
	require.Panics(t, func() { w.Handle("credit", nil) })
	require.NotNil(t, w.handler("debit"))
	require.Nil(t, w.handler("credit"))
	w.HandleDefault(h)
	require.NotNil(t, w.handler("credit"))
	w.Stop()
	w.Stop() // idempotent, and a no-op before Start
}

func TestLockWaitForACommand(t *testing.T) {
	for _, c := range []struct {
		configured, timeout, want time.Duration
	}{
		{0, 300 * time.Millisecond, 300 * time.Millisecond}, // default: the command's timeout
		{0, 0, 0}, // no timeout, no bound
		{time.Second, 300 * time.Millisecond, 300 * time.Millisecond},
		{time.Second, 5 * time.Second, time.Second},
		{time.Second, 0, time.Second},
		{-1, 300 * time.Millisecond, 0}, // negative: never bounded
	} {
		b := newBarrier(nil, DefaultSchema, 0, c.configured)
		require.Equal(t, c.want, b.lockWaitFor(c.timeout), "LockWait %v, timeout %v", c.configured, c.timeout)
	}
}
