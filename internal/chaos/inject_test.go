package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/internal/sandbox"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
)

// The tap connection of inject_duplicate survives a broker restart: after the node is killed
// and started again, a duplicate fault publishes the copies the durable tap queue kept and
// those of messages published after the restart.
func TestTapsSurviveABrokerRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a RabbitMQ node of its own; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := sandbox.MkdirTemp("chaos-taptest-") // reachable by the rabbitmq user
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	mq, err := startPrivateRabbit(ctx, dir, "taptest")
	if errors.Is(err, ErrSkipped) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer mq.stop()
	url := mq.AdminURL()
	publish := func(body string) {
		t.Helper()
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		for _, ex := range []string{protocol.ExchangeCommands, protocol.ExchangeReplies} {
			if err := ch.ExchangeDeclare(ex, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, protocol.ExchangeCommands, "bank-a", false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: body, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := conf.WaitContext(ctx); err != nil || !ok {
			t.Fatalf("publish %s not confirmed: %v", body, err)
		}
	}
	publish("before") // declares the exchanges the taps bind to

	s, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []string
	tp, err := newTaps(ctx, url, s, func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, format)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.close(ctx)
	publish("before-tapped")

	if err := mq.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := mq.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The watcher may not have reconnected yet: duplicate waits for it (tapWait) and the bindings
	// are durable, so this message reaches the tap either way.
	publish("after")

	// What the duplicate fault publishes lands here (and in the tap again, which is bound to the
	// same key: hence only 2 copies are asked for).
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	check, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(check.Name, "bank-a", protocol.ExchangeCommands, false, nil); err != nil {
		t.Fatal(err)
	}

	n, err := tp.duplicate(ctx, "commands", 2)
	if err != nil || n != 2 {
		t.Fatalf("duplicate after the restart: %d copies, %v; want 2", n, err)
	}
	var ids []string
	for range 2 {
		d, ok, err := ch.Get(check.Name, true)
		if err != nil || !ok {
			t.Fatalf("copy %d not delivered: %v", len(ids)+1, err)
		}
		ids = append(ids, d.MessageId)
	}
	if !slices.Equal(ids, []string{"before-tapped", "after"}) {
		t.Errorf("copies of %v, want the message tapped before the restart and the one after", ids)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(events, "\n"), "tap connection back") {
		t.Errorf("events %q: the tap connection was not re-established", events)
	}
}

// Two duplicate faults due at the same moment share the tap channel one at a time: each
// publishes all its copies (interleaved on one channel, the broker closed it mid-way).
func TestConcurrentDuplicatesShareTheTapChannel(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("uses the machine's RabbitMQ; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := testenv.VHost(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range []string{protocol.ExchangeCommands, protocol.ExchangeReplies} {
		if err := ch.ExchangeDeclare(ex, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := newTaps(ctx, url, s, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.close(ctx)
	const n = 40
	// Bodies of many frames each: a publish writes its method, header and body frames one at a
	// time, so another use of the channel can come between them.
	body := []byte(strings.Repeat("x", 1<<20))
	for i := range n {
		for _, to := range [][2]string{{protocol.ExchangeCommands, "bank-a"}, {protocol.ExchangeReplies, protocol.RoutingKeyReplies}} {
			if err := ch.PublishWithContext(ctx, to[0], to[1], false, false, amqp.Publishing{MessageId: fmt.Sprint(i), Body: body}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Publishing is asynchronous: wait until both tap queues hold every message.
	for _, q := range []string{tapCommands, tapReplies} {
		for deadline := time.Now().Add(30 * time.Second); ; {
			st, err := ch.QueueDeclarePassive(q, true, false, false, false, amqp.Table{"x-max-length": int32(10000)})
			if err != nil {
				t.Fatal(err)
			}
			if st.Messages == n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %d messages, want %d", q, st.Messages, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	got := map[string]int{}
	var mu sync.Mutex
	for _, target := range []string{"commands", "replies"} {
		wg.Go(func() {
			k, err := tp.duplicate(ctx, target, n)
			mu.Lock()
			defer mu.Unlock()
			got[target] = k
			if err != nil {
				t.Errorf("duplicate %s: %d copies, then %v", target, k, err)
			}
		})
	}
	wg.Wait()
	if got["commands"] != n || got["replies"] != n {
		t.Errorf("copies %v, want %d of each", got, n)
	}
}
