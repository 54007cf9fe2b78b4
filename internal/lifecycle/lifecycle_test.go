package lifecycle_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/lifecycle"
)

func TestGroupStopsAndWaits(t *testing.T) {
	var g lifecycle.Group
	ctx, err := g.Start(context.Background())
	require.NoError(t, err)
	var done atomic.Int32
	for range 3 {
		g.Go(func() { <-ctx.Done(); done.Add(1) })
	}
	_, err = g.Start(context.Background())
	require.ErrorIs(t, err, lifecycle.ErrStarted)
	require.True(t, g.Stop())
	require.EqualValues(t, 3, done.Load(), "Stop waits for every goroutine")
	require.False(t, g.Stop(), "Stop is idempotent")
	_, err = g.Start(context.Background())
	require.ErrorIs(t, err, lifecycle.ErrStopped)
}

func TestStopWithoutStart(t *testing.T) {
	var g lifecycle.Group
	require.False(t, g.Stop())
	_, err := g.Start(context.Background())
	require.ErrorIs(t, err, lifecycle.ErrStopped, "a group stopped before it started never starts")
}
