package amqptransport

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/transporttest"
)

const testParticipant = "faults"

func declared(t *testing.T, cfg Config) *Transport {
	t.Helper()
	tr := newTransport(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), transporttest.Timeout)
	defer cancel()
	if err := tr.DeclareParticipant(ctx, testParticipant); err != nil {
		t.Fatalf("DeclareParticipant: %v", err)
	}
	return tr
}

func msg(id string) transport.Outgoing {
	return transport.Outgoing{
		Exchange:   protocol.ExchangeCommands,
		RoutingKey: testParticipant,
		Message:    protocol.Message{MessageID: id, Type: protocol.TypeSagaAction, ContentType: protocol.ContentType, Body: []byte("{}")},
	}
}

// publishUntilConfirmed retries m as the outbox relay would, until the broker confirms it.
func publishUntilConfirmed(t *testing.T, tr *Transport, m transport.Outgoing) {
	t.Helper()
	var last error
	eventually(t, "a publish is confirmed", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		last = tr.Publish(ctx, []transport.Outgoing{m})[0]
		if last != nil {
			t.Logf("publish %s: %v", m.MessageID, last)
		}
		return last == nil
	})
}

func receiveMsg(t *testing.T, ch <-chan *transport.Delivery, id string) *transport.Delivery {
	t.Helper()
	select {
	case d, ok := <-ch:
		if !ok {
			t.Fatalf("delivery channel closed while waiting for %s", id)
		}
		if d.MessageID != id {
			t.Fatalf("received %s, want %s", d.MessageID, id)
		}
		return d
	case <-time.After(transporttest.Timeout):
		t.Fatalf("no delivery of %s within %s", id, transporttest.Timeout)
		return nil
	}
}

func TestDeclareWithOtherQueueTypeExplainsTheConflict(t *testing.T) {
	t.Parallel()
	vhost := testenv.VHost(t)
	declared(t, Config{URL: vhost, QueueType: QueueTypeClassic})
	quorum := newTransport(t, Config{URL: vhost, QueueType: QueueTypeQuorum})
	err := quorum.DeclareParticipant(t.Context(), testParticipant)
	if err == nil {
		t.Fatalf("declaring quorum queues over classic ones succeeded")
	}
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Code != amqp.PreconditionFailed || !strings.Contains(err.Error(), `QueueType="quorum"`) {
		t.Fatalf("error should wrap PRECONDITION_FAILED and name the QueueType: %v", err)
	}
}

func TestPublishFailsFastWhileBlocked(t *testing.T) {
	t.Parallel()
	tr := declared(t, Config{})
	publishUntilConfirmed(t, tr, msg("before"))
	s, err := tr.publisher.live()
	if s == nil || err != nil {
		t.Fatalf("no live publishing connection: %v", err)
	}
	// What the watcher records when the broker sends connection.blocked (a resource alarm
	// cannot be raised for one test without blocking every publisher on the machine).
	s.setBlocked(amqp.Blocking{Active: true, Reason: "low on memory"})
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	defer cancel()
	for i, err := range tr.Publish(ctx, []transport.Outgoing{msg("blocked-1"), msg("blocked-2")}) {
		if !errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), "low on memory") {
			t.Fatalf("message %d: got %v, want ErrBlocked with the broker's reason", i, err)
		}
	}
	s.setBlocked(amqp.Blocking{Active: false})
	publishUntilConfirmed(t, tr, msg("after"))

	ch, err := tr.Consume(t.Context(), protocol.ParticipantQueue(testParticipant), 10)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	for _, id := range []string{"before", "after"} { // nothing was sent while blocked
		if err := receiveMsg(t, ch, id).Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
}

func TestConsumerCancelledByTheBrokerSubscribesAgain(t *testing.T) {
	t.Parallel()
	vhost := testenv.VHost(t)
	tr := declared(t, Config{URL: vhost})
	queue := protocol.ParticipantQueue(testParticipant)
	ch, err := tr.Consume(t.Context(), queue, 5)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	publishUntilConfirmed(t, tr, msg("first"))
	old := receiveMsg(t, ch, "first")

	rabbitAPI(t, http.MethodDelete, queuePath(t, vhost, queue), nil)
	if err := tr.DeclareParticipant(t.Context(), testParticipant); err != nil {
		t.Fatalf("DeclareParticipant again: %v", err)
	}
	publishUntilConfirmed(t, tr, msg("second"))
	d := receiveMsg(t, ch, "second")
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack on the new subscription: %v", err)
	}
	if err := old.Ack(); !errors.Is(err, transport.ErrStale) {
		t.Fatalf("Ack of a delivery from the cancelled consumer: got %v, want ErrStale", err)
	}
}

// proxied starts an in-process toxiproxy in front of the broker of amqpURL and returns it with
// the URL that goes through it.
func proxied(t *testing.T, amqpURL string) (*toxiproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatalf("parse AMQP URL: %v", err)
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	proxy := toxiproxy.NewProxy(srv, "amqp", "127.0.0.1:0", u.Host)
	if err := proxy.Start(); err != nil {
		t.Fatalf("start toxiproxy: %v", err)
	}
	t.Cleanup(proxy.Stop)
	u.Host = proxy.Listen
	return proxy, u.String()
}

func addToxic(t *testing.T, proxy *toxiproxy.Proxy, spec string) {
	t.Helper()
	if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
		t.Fatalf("add toxic %s: %v", spec, err)
	}
}

func TestPublishReturnsByItsDeadlineOnADeadLink(t *testing.T) {
	t.Parallel()
	proxy, u := proxied(t, testenv.VHost(t))
	// A long heartbeat, so that what ends Publish is its context and not the heartbeat timeout;
	// one publish channel, so the batch goes out on an open channel and waits for confirms.
	tr := declared(t, Config{URL: u, Heartbeat: time.Minute, PublishChannels: 1})
	publishUntilConfirmed(t, tr, msg("before"))

	// Both directions swallow everything: confirms never come.
	addToxic(t, proxy, `{"name":"down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	addToxic(t, proxy, `{"name":"up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`)
	requireReturnsByDeadline(t, tr, []transport.Outgoing{msg("dead-1"), msg("dead-2")})

	proxy.Toxics.ResetToxics(t.Context())
	publishUntilConfirmed(t, tr, msg("after"))
}

func TestPublishReturnsByItsDeadlineWhenTheBrokerStopsReading(t *testing.T) {
	t.Parallel()
	proxy, u := proxied(t, testenv.VHost(t))
	tr := declared(t, Config{URL: u, Heartbeat: time.Minute})
	publishUntilConfirmed(t, tr, msg("before"))

	// 1 KB/s upstream: once the socket buffers fill, writes block, as they do when a blocked
	// broker stops reading. 1024 messages of 16 KiB are far more than the buffers hold.
	addToxic(t, proxy, `{"name":"slow","type":"bandwidth","stream":"upstream","attributes":{"rate":1}}`)
	body := make([]byte, 16<<10)
	batch := make([]transport.Outgoing, maxChunk)
	for i := range batch {
		batch[i] = msg("stalled")
		batch[i].Body = body
	}
	requireReturnsByDeadline(t, tr, batch)

	proxy.Toxics.ResetToxics(t.Context())
	publishUntilConfirmed(t, tr, msg("after"))
}

// requireReturnsByDeadline publishes with a short deadline and checks that Publish comes back
// (long before the heartbeat could rescue it) with an error for every message.
func requireReturnsByDeadline(t *testing.T, tr *Transport, batch []transport.Outgoing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	done := make(chan []error, 1)
	go func() { done <- tr.Publish(ctx, batch) }()
	select {
	case errs := <-done:
		for i, err := range errs {
			if err == nil {
				t.Fatalf("message %d confirmed through a link that carries nothing", i)
			}
		}
		t.Logf("Publish returned: %v", errs[0])
	case <-time.After(transporttest.Timeout):
		t.Fatalf("Publish did not return within %s of its 1s deadline", transporttest.Timeout)
	}
}

func TestPublishToAMissingExchangeFailsOnlyThatMessage(t *testing.T) {
	t.Parallel()
	tr := declared(t, Config{})
	bad := msg("bad")
	bad.Exchange = "no.such.exchange"
	// Twice: the second time the existing exchange is known and the missing one checked again.
	for range 2 {
		errs := tr.Publish(t.Context(), []transport.Outgoing{msg("good-1"), bad, msg("good-2")})
		if errs[0] != nil || errs[2] != nil {
			t.Fatalf("messages next to the bad one: %v, %v", errs[0], errs[2])
		}
		var amqpErr *amqp.Error
		if !errors.As(errs[1], &amqpErr) || amqpErr.Code != amqp.NotFound || !strings.Contains(errs[1].Error(), "declare the topology") {
			t.Fatalf("message to a missing exchange: got %v, want NOT_FOUND explained", errs[1])
		}
	}
	ch, err := tr.Consume(t.Context(), protocol.ParticipantQueue(testParticipant), 10)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	for _, id := range []string{"good-1", "good-2", "good-1", "good-2"} {
		if err := receiveMsg(t, ch, id).Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
}

func TestPublishReportsNacks(t *testing.T) {
	t.Parallel()
	vhost := testenv.VHost(t)
	tr := declared(t, Config{URL: vhost})
	// A full queue with overflow reject-publish makes the broker nack what it cannot take.
	conn, err := amqp.Dial(vhost)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	if _, err := ch.QueueDeclare("full", true, false, false, false, amqp.Table{"x-max-length": int64(1), "x-overflow": "reject-publish"}); err != nil {
		t.Fatalf("declare overflow queue: %v", err)
	}
	if err := ch.QueueBind("full", "full", protocol.ExchangeCommands, false, nil); err != nil {
		t.Fatalf("bind overflow queue: %v", err)
	}
	batch := []transport.Outgoing{msg("fits"), msg("overflow-1"), msg("overflow-2")}
	for i := range batch {
		batch[i].RoutingKey = "full"
	}
	errs := tr.Publish(t.Context(), batch)
	if errs[0] != nil {
		t.Errorf("first message: %v", errs[0])
	}
	for i, err := range errs[1:] {
		if !errors.Is(err, transport.ErrNacked) {
			t.Errorf("message %d to a full queue: got %v, want ErrNacked", i+1, err)
		}
	}
	// A nack leaves the channel usable.
	publishUntilConfirmed(t, tr, msg("after"))
}

func TestPublishSplitsLargeBatchesAndMatchesEveryReturn(t *testing.T) {
	t.Parallel()
	tr := declared(t, Config{PublishChannels: 1})
	const n = 2*maxChunk + 100
	batch := make([]transport.Outgoing, n)
	routable := 0
	for i := range batch {
		batch[i] = msg("large")
		batch[i].Body = nil
		if i%7 == 0 {
			batch[i].RoutingKey = "nobody"
		} else {
			routable++
		}
	}
	for i, err := range tr.Publish(t.Context(), batch) {
		if want := batch[i].RoutingKey == "nobody"; want != errors.Is(err, transport.ErrReturned) || (!want && err != nil) {
			t.Fatalf("message %d (key %s): got %v", i, batch[i].RoutingKey, err)
		}
	}
	ch, err := tr.Consume(t.Context(), protocol.ParticipantQueue(testParticipant), 500)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	for range routable {
		if err := receiveMsg(t, ch, "large").Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	publishUntilConfirmed(t, tr, msg("sentinel"))
	if err := receiveMsg(t, ch, "sentinel").Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

func TestBrokerOutageFailsFastThenRecovers(t *testing.T) {
	t.Parallel()
	proxy, u := proxied(t, testenv.VHost(t))
	tr := declared(t, Config{URL: u})
	ch, err := tr.Consume(t.Context(), protocol.ParticipantQueue(testParticipant), 5)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	publishUntilConfirmed(t, tr, msg("before"))
	if err := receiveMsg(t, ch, "before").Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}

	proxy.Stop() // drops every connection and refuses new ones, as a stopped broker does
	eventually(t, "the transport notices the lost connections", func() bool {
		s, _ := tr.publisher.live()
		return s == nil
	})
	// During the outage Publish fails, with no wait for the broker to come back.
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	defer cancel()
	for range 3 {
		if err := tr.Publish(ctx, []transport.Outgoing{msg("during")})[0]; err == nil {
			t.Fatalf("Publish succeeded while the broker was unreachable")
		} else {
			t.Logf("publish during the outage: %v", err)
		}
	}

	if err := proxy.Start(); err != nil {
		t.Fatalf("restart toxiproxy: %v", err)
	}
	publishUntilConfirmed(t, tr, msg("after"))
	// The ack of "before" may have been lost with the link: then it comes again, flagged.
	d := receive1(t, ch)
	if d.MessageID == "before" {
		if !d.Redelivered {
			t.Fatalf("before delivered again without Redelivered")
		}
		if err := d.Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		d = receive1(t, ch)
	}
	if d.MessageID != "after" {
		t.Fatalf("received %s, want after", d.MessageID)
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack after the outage: %v", err)
	}
}

func receive1(t *testing.T, ch <-chan *transport.Delivery) *transport.Delivery {
	t.Helper()
	select {
	case d, ok := <-ch:
		if !ok {
			t.Fatalf("delivery channel closed")
		}
		return d
	case <-time.After(transporttest.Timeout):
		t.Fatalf("no delivery within %s", transporttest.Timeout)
		return nil
	}
}
