package amqptransport

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// BenchmarkPublish measures confirmed, persistent, mandatory publishing of batches of 64 step
// commands (about 300 bytes each) to a participant queue, from one goroutine and from four
// concurrent ones. One op is one batch. The msgs/s metric is the figure to compare with the
// broker's own capacity (the publish baseline of sagalab bench, docs/performance.md).
//
//	go test -run '^$' -bench Publish -benchtime 5s ./transport/amqptransport/
func BenchmarkPublish(b *testing.B) {
	for _, queueType := range []string{QueueTypeClassic, QueueTypeQuorum} {
		for _, publishers := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/batch=64/publishers=%d", queueType, publishers), func(b *testing.B) {
				benchmarkPublish(b, queueType, 64, publishers)
			})
		}
	}
}

// BenchmarkPublishConcurrentSingles measures what participants replying and the coordinator's
// relay workers do: many goroutines, each publishing one message per call and waiting for its
// confirm before the next. One op is one message. It runs with the default publish channels and
// with a few explicit counts, to show how the channel count trades parallel confirms against
// batching.
//
//	go test -run '^$' -bench PublishConcurrentSingles -benchtime 5s ./transport/amqptransport/
func BenchmarkPublishConcurrentSingles(b *testing.B) {
	for _, channels := range []int{0, 4, 32} { // 0: the default
		name := fmt.Sprintf("classic/publishers=64/channels=%d", channels)
		if channels == 0 {
			name = "classic/publishers=64/channels=default"
		}
		b.Run(name, func(b *testing.B) {
			benchmarkPublishWith(b, Config{QueueType: QueueTypeClassic, PublishChannels: channels}, 1, 64)
		})
	}
}

func benchmarkPublish(b *testing.B, queueType string, batchSize, publishers int) {
	benchmarkPublishWith(b, Config{QueueType: queueType}, batchSize, publishers)
}

// benchmarkPublishWith runs publishers goroutines that publish b.N batches of batchSize messages
// between them.
func benchmarkPublishWith(b *testing.B, cfg Config, batchSize, publishers int) {
	cfg.Logger = slog.New(slog.DiscardHandler)
	tr := newTransport(b, cfg)
	ctx := context.Background()
	if err := tr.DeclareParticipant(ctx, "bench"); err != nil {
		b.Fatalf("DeclareParticipant: %v", err)
	}
	cmd := protocol.StepCommand{
		SagaID: "0d6a9b52-5f7e-4f43-9d1e-7a0c1f1b2c3d", Step: "debit", StepIndex: 0, Kind: protocol.KindAction,
		Participant: "bench", Action: "debit", Attempt: 1,
		Input: []byte(`{"from":"acct-000123","to":"acct-000456","amount_cents":12345,"currency":"EUR"}`),
	}
	m, err := cmd.Encode()
	if err != nil {
		b.Fatalf("encode: %v", err)
	}
	var seq atomic.Int64
	batch := func() []transport.Outgoing {
		msgs := make([]transport.Outgoing, batchSize)
		for i := range msgs {
			msgs[i] = transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: "bench", Message: m}
			msgs[i].MessageID = "bench-" + strconv.FormatInt(seq.Add(1), 10)
		}
		return msgs
	}
	b.SetBytes(int64(len(m.Body) * batchSize))
	b.ResetTimer()
	var done atomic.Int64
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for done.Add(1) <= int64(b.N) {
				for _, err := range tr.Publish(ctx, batch()) {
					if err != nil {
						b.Errorf("Publish: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "msgs/s")
}
