package amqptransport_test

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// TestDialWaitsForTheBroker: Dial, started while nothing answers at the broker's address, logs
// its retries and returns a working transport once the broker answers there.
func TestDialWaitsForTheBroker(t *testing.T) {
	broker := testenv.ServiceLater(t, testenv.VHost(t))
	logs := &testenv.Buffer{}
	type dialed struct {
		tr  *amqptransport.Transport
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		tr, err := amqptransport.Dial(context.Background(), amqptransport.Config{URL: broker.URL, Logger: slog.New(slog.NewTextHandler(logs, nil)),
			ReconnectBackoffMin: 20 * time.Millisecond, ReconnectBackoffMax: 200 * time.Millisecond})
		done <- dialed{tr, err}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "RabbitMQ is not reachable yet") {
		if time.Now().After(deadline) {
			t.Fatalf("no retry logged; log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	broker.Up(t)
	select {
	case d := <-done:
		if d.err != nil {
			t.Fatalf("Dial: %v", d.err)
		}
		defer d.tr.Close()
		if err := d.tr.DeclareTopology(context.Background()); err != nil {
			t.Fatalf("the transport Dial returned does not work: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Dial still waits after the broker came up; log:\n%s", logs.String())
	}
}

// TestDialRefusesAWrongPasswordAtOnce: a broker that refuses the user is not waited for.
func TestDialRefusesAWrongPasswordAtOnce(t *testing.T) {
	u, err := url.Parse(testenv.VHost(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "not-the-password")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := amqptransport.Dial(ctx, amqptransport.Config{URL: u.String()})
	if err == nil {
		_ = tr.Close()
		t.Fatal("Dial with a wrong password succeeded")
	}
	if !amqptransport.Refused(err) || ctx.Err() != nil {
		t.Fatalf("Dial with a wrong password: %v (want a refusal, at once)", err)
	}
}
