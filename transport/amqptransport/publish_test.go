package amqptransport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/transporttest"
)

// batchGate holds each batch a publish worker is about to publish until the test lets it go, so
// a test can queue Publish calls behind it and know they will be published together. Once the
// transport is closing, new batches go through; one already held waits for let (or the test's end).
type batchGate struct {
	batches chan []*pubRequest
	release chan struct{}
}

func gateBatches(t *testing.T, tr *Transport) *batchGate {
	g := &batchGate{batches: make(chan []*pubRequest), release: make(chan struct{})}
	over := make(chan struct{})
	t.Cleanup(func() { close(over) }) // runs before the transport's Close
	hook := func(reqs []*pubRequest) {
		select {
		case g.batches <- reqs:
		case <-tr.closing:
			return
		}
		select {
		case <-g.release:
		case <-over:
		}
	}
	tr.onBatch.Store(&hook)
	return g
}

// next returns the next batch; its worker waits until release.
func (g *batchGate) next(t *testing.T) []*pubRequest {
	t.Helper()
	select {
	case reqs := <-g.batches:
		return reqs
	case <-time.After(transporttest.Timeout):
		t.Fatalf("no batch reached the publish worker within %s", transporttest.Timeout)
		return nil
	}
}

// let lets the batch returned by next be published.
func (g *batchGate) let(t *testing.T) {
	t.Helper()
	select {
	case g.release <- struct{}{}:
	case <-time.After(transporttest.Timeout):
		t.Fatalf("no publish worker waited for its batch to be let go")
	}
}

// publishAsync calls Publish in a goroutine and returns where its results will arrive.
func publishAsync(ctx context.Context, tr *Transport, msgs ...transport.Outgoing) <-chan []error {
	done := make(chan []error, 1)
	go func() { done <- tr.Publish(ctx, msgs) }()
	return done
}

func results(t *testing.T, done <-chan []error, what string) []error {
	t.Helper()
	select {
	case errs := <-done:
		return errs
	case <-time.After(transporttest.Timeout):
		t.Fatalf("%s: Publish did not return within %s", what, transporttest.Timeout)
		return nil
	}
}

// holdWorker makes the only publish worker of tr (PublishChannels 1) busy with a batch of one
// message that stays unpublished until the returned function lets it go. The function returns
// that Publish call's results.
func holdWorker(t *testing.T, tr *Transport, g *batchGate) (letGo func() []error) {
	t.Helper()
	done := publishAsync(t.Context(), tr, msg("blocker"))
	if reqs := g.next(t); len(reqs) != 1 || reqs[0].msgs[0].MessageID != "blocker" {
		t.Fatalf("first batch: %d requests, want the blocker alone", len(reqs))
	}
	return func() []error {
		g.let(t)
		return results(t, done, "blocker")
	}
}

// queued waits until n Publish calls wait for a publish worker.
func queued(t *testing.T, tr *Transport, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d Publish calls are queued", n), func() bool { return len(tr.requests) == n })
}

func TestConcurrentPublishesShareABatchAndGetTheirOwnResults(t *testing.T) {
	t.Parallel()
	tr := declared(t, Config{PublishChannels: 1})
	g := gateBatches(t, tr)
	letBlocker := holdWorker(t, tr, g)

	// Every caller publishes the same routable and the same unroutable message (same id,
	// exchange and routing key), so only the position of a return within the batch tells whose
	// it is; one also publishes to an exchange that does not exist.
	const callers = 8
	batches := make([][]transport.Outgoing, callers)
	dones := make([]<-chan []error, callers)
	for i := range callers {
		own := msg(fmt.Sprintf("own-%d", i))
		if i%2 == 1 {
			own.RoutingKey = "nobody"
		}
		unroutable := msg("shared")
		unroutable.RoutingKey = "nobody"
		batches[i] = []transport.Outgoing{msg("shared"), unroutable, own}
		if i == 3 {
			missing := msg("missing-exchange")
			missing.Exchange = "no.such.exchange"
			batches[i] = append(batches[i], missing)
		}
		dones[i] = publishAsync(t.Context(), tr, batches[i]...)
	}
	queued(t, tr, callers)
	if errs := letBlocker(); errs[0] != nil {
		t.Fatalf("blocker: %v", errs[0])
	}
	if reqs := g.next(t); len(reqs) != callers {
		t.Fatalf("the %d queued calls went out in a batch of %d requests, want one batch", callers, len(reqs))
	}
	tr.onBatch.Store(nil) // the sentinel below goes straight through
	g.let(t)

	routed := map[string]int{"blocker": 1}
	for i, done := range dones {
		errs := results(t, done, fmt.Sprintf("caller %d", i))
		if len(errs) != len(batches[i]) {
			t.Fatalf("caller %d: %d results for %d messages", i, len(errs), len(batches[i]))
		}
		for j, err := range errs {
			m := batches[i][j]
			switch {
			case m.Exchange == "no.such.exchange":
				var amqpErr *amqp.Error
				if !errors.As(err, &amqpErr) || amqpErr.Code != amqp.NotFound {
					t.Errorf("caller %d, message %s to a missing exchange: got %v, want NOT_FOUND", i, m.MessageID, err)
				}
			case m.RoutingKey == "nobody":
				if !errors.Is(err, transport.ErrReturned) {
					t.Errorf("caller %d, unroutable message %s: got %v, want ErrReturned", i, m.MessageID, err)
				}
			case err != nil:
				t.Errorf("caller %d, routable message %s: %v", i, m.MessageID, err)
			default:
				routed[m.MessageID]++
			}
		}
	}
	if t.Failed() {
		return
	}

	// What was confirmed as routed is in the queue, and nothing else.
	ch, err := tr.Consume(t.Context(), protocol.ParticipantQueue(testParticipant), 50)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	want := 0
	for _, n := range routed {
		want += n
	}
	for range want {
		d := receive1(t, ch)
		if routed[d.MessageID] == 0 {
			t.Fatalf("received %s, which was not confirmed as routed (or more often than confirmed)", d.MessageID)
		}
		routed[d.MessageID]--
		if err := d.Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	publishUntilConfirmed(t, tr, msg("sentinel"))
	if err := receiveMsg(t, ch, "sentinel").Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

func TestPublishCallerGivingUpDoesNotFailTheOthersInItsBatch(t *testing.T) {
	t.Parallel()
	tr := declared(t, Config{PublishChannels: 1})
	g := gateBatches(t, tr)
	letBlocker := holdWorker(t, tr, g)

	quitCtx, quit := context.WithCancel(t.Context())
	defer quit()
	quitter := publishAsync(quitCtx, tr, msg("quitter"))
	stayers := []<-chan []error{
		publishAsync(t.Context(), tr, msg("stayer-1")),
		publishAsync(t.Context(), tr, msg("stayer-2"), msg("stayer-3")),
	}
	queued(t, tr, 1+len(stayers))
	if errs := letBlocker(); errs[0] != nil {
		t.Fatalf("blocker: %v", errs[0])
	}
	if reqs := g.next(t); len(reqs) != 1+len(stayers) {
		t.Fatalf("the queued calls went out in a batch of %d requests, want %d", len(reqs), 1+len(stayers))
	}

	// The batch is taken but not yet published: the quitter's context ends, and it returns
	// without waiting for the batch.
	quit()
	for i, err := range results(t, quitter, "the caller whose context ended") {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("quitter message %d: got %v, want context.Canceled", i, err)
		}
	}
	g.let(t)
	for i, done := range stayers {
		for j, err := range results(t, done, fmt.Sprintf("stayer %d", i)) {
			if err != nil {
				t.Errorf("stayer %d, message %d: %v (a batch-mate's context ended)", i, j, err)
			}
		}
	}
}

// TestCloseEndsQueuedPublishesAndLeavesNoGoroutine is not parallel: goleak looks at every
// goroutine of the process, and parallel tests only start once the serial ones are done.
func TestCloseEndsQueuedPublishesAndLeavesNoGoroutine(t *testing.T) {
	vhost := testenv.VHost(t)
	http.DefaultClient.CloseIdleConnections()
	before := goleak.IgnoreCurrent()

	ctx, cancel := context.WithTimeout(t.Context(), transporttest.Timeout)
	defer cancel()
	tr, err := New(ctx, Config{URL: vhost, PublishChannels: 1, ConnectionName: testenv.Name("sagacoord-test-"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := tr.DeclareParticipant(ctx, testParticipant); err != nil {
		t.Fatalf("DeclareParticipant: %v", err)
	}
	g := gateBatches(t, tr)
	blocker := publishAsync(t.Context(), tr, msg("blocker"))
	g.next(t) // the worker holds the blocker's batch
	waiting := []<-chan []error{
		publishAsync(t.Context(), tr, msg("waiting-1")),
		publishAsync(t.Context(), tr, msg("waiting-2"), msg("waiting-3")),
	}
	queued(t, tr, len(waiting))

	// The calls return as soon as Close begins, while the worker still holds the batch (and
	// Close waits for the worker).
	closed := make(chan error, 1)
	go func() { closed <- tr.Close() }()
	for i, done := range append(waiting, blocker) {
		for j, err := range results(t, done, fmt.Sprintf("call %d", i)) {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("call %d, message %d, pending at Close: got %v, want ErrClosed", i, j, err)
			}
		}
	}
	g.let(t)
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(transporttest.Timeout):
		t.Fatalf("Close did not return within %s", transporttest.Timeout)
	}
	if err := tr.Publish(ctx, []transport.Outgoing{msg("after")})[0]; !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: got %v, want ErrClosed", err)
	}
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, before)
}
