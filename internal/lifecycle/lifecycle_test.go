package lifecycle_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5/pgconn"
	amqp "github.com/rabbitmq/amqp091-go"
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

func TestConnectRetriesUntilItWorks(t *testing.T) {
	var calls atomic.Int32
	err := lifecycle.Connect(context.Background(), slog.New(slog.DiscardHandler), "the thing", func(context.Context) error {
		if calls.Add(1) < 3 {
			return errors.New("connection refused")
		}
		return nil
	})
	require.NoError(t, err)
	require.EqualValues(t, 3, calls.Load())
}

func TestConnectReturnsAPermanentErrorAtOnce(t *testing.T) {
	var calls atomic.Int32
	bad := errors.New("malformed URL")
	err := lifecycle.Connect(context.Background(), slog.New(slog.DiscardHandler), "the thing", func(context.Context) error {
		calls.Add(1)
		return lifecycle.Permanent(bad)
	})
	require.ErrorIs(t, err, bad)
	require.NotErrorAs(t, err, new(*backoff.PermanentError), "the marker is removed")
	require.EqualValues(t, 1, calls.Load())
}

func TestConnectGivesUpWhenTheContextEndsAndSaysWhy(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	err := lifecycle.Connect(ctx, slog.New(slog.DiscardHandler), "the broker", func(context.Context) error {
		cancel()
		return errors.New("connection refused")
	})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "the broker")
	require.ErrorContains(t, err, "connection refused")
}

func TestConnectDoesNotRetryARefusal(t *testing.T) {
	for name, refusal := range map[string]error{
		"PostgreSQL password": fmt.Errorf("connect: %w", &pgconn.PgError{Code: "28P01", Message: "password authentication failed"}),
		"RabbitMQ password":   fmt.Errorf("connect: %w", &amqp.Error{Code: amqp.AccessRefused, Reason: "username or password not allowed"}),
		"certificate":         fmt.Errorf("handshake: %w", x509.UnknownAuthorityError{}),
	} {
		var calls atomic.Int32
		err := lifecycle.Connect(context.Background(), slog.New(slog.DiscardHandler), "the thing", func(context.Context) error {
			calls.Add(1)
			return refusal
		})
		require.ErrorIs(t, err, refusal, name)
		require.EqualValues(t, 1, calls.Load(), name)
	}
}
