package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// TestConnectWaitsForTheDatabaseAndTheBroker: started while nothing answers at the database's and
// the broker's addresses, the simulator logs its retries and connects once both answer.
func TestConnectWaitsForTheDatabaseAndTheBroker(t *testing.T) {
	_, dbURL := testenv.Pool(t)
	db, broker := testenv.ServiceLater(t, dbURL), testenv.ServiceLater(t, testenv.VHost(t))
	logs := &testenv.Buffer{}
	o := options{databaseURL: db.URL, amqpURL: broker.URL, queueType: amqptransport.QueueTypeClassic, dbMaxConns: 2}
	type conns struct {
		tr  *amqptransport.Transport
		err error
	}
	done := make(chan conns, 1)
	go func() {
		pool, tr, err := connect(context.Background(), o, slog.New(slog.NewTextHandler(logs, nil)), nil, nil)
		if err == nil {
			pool.Close()
		}
		done <- conns{tr, err}
	}()
	requireLogged(t, logs, "connect to database")
	db.Up(t)
	requireLogged(t, logs, "connect to RabbitMQ")
	broker.Up(t)
	select {
	case c := <-done:
		require.NoError(t, c.err)
		require.NoError(t, c.tr.Close())
	case <-time.After(waitFor):
		t.Fatalf("connect still waits after both services came up; log:\n%s", logs.String())
	}
}

// TestConnectRefusesAMalformedURLAtOnce: no retry mends a URL, so connect does not wait.
func TestConnectRefusesAMalformedURLAtOnce(t *testing.T) {
	o := options{databaseURL: "postgres://127.0.0.1:5432/test", amqpURL: "http://not-amqp", queueType: amqptransport.QueueTypeClassic}
	_, _, err := connect(context.Background(), o, slog.New(slog.DiscardHandler), nil, nil)
	require.ErrorContains(t, err, "--amqp-url")
}

func requireLogged(t *testing.T, logs *testenv.Buffer, what string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !strings.Contains(logs.String(), what) {
		require.True(t, time.Now().Before(deadline), "no retry logged for %q; log:\n%s", what, logs.String())
		time.Sleep(10 * time.Millisecond)
	}
}
