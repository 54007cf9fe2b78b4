package conformance

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

const checked = "conformance"

// startGoWorker runs Contract on the Go SDK on a fresh schema and vhost, and returns the vhost.
func startGoWorker(t *testing.T) string {
	t.Helper()
	pool, dbURL := testenv.Pool(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	schema := u.Query().Get("search_path")
	amqpURL := testenv.VHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tr, err := amqptransport.New(ctx, amqptransport.Config{URL: amqpURL, Heartbeat: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	w, err := participant.New(participant.Config{
		Name: checked, Transport: tr, DB: pool, Schema: schema,
		QueryInterval: 200 * time.Millisecond, PreparedSilence: time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	c := &Contract{Schema: schema}
	c.Register(w)
	require.NoError(t, w.Migrate(ctx))
	require.NoError(t, c.Migrate(ctx, pool))
	require.NoError(t, w.Start(ctx))
	t.Cleanup(w.Stop)
	return amqpURL
}

// TestGoWorkerPasses runs the kit against the Go SDK's implementation of the contract: every
// case must pass.
func TestGoWorkerPasses(t *testing.T) {
	amqpURL := startGoWorker(t)
	var out strings.Builder
	results, err := Run(context.Background(), Config{AMQPURL: amqpURL, Participant: checked}, &out)
	require.NoError(t, err)
	t.Log("\n" + out.String())
	require.Len(t, results, len(cases))
	for _, r := range results {
		require.True(t, r.Passed, "%s: %s", r.Name, r.Why)
	}
}
