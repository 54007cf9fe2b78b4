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
// concurrent ones (as many as the default publish channels). One op is one batch. The msgs/s metric is the figure to compare with the broker's
// own capacity (see DESIGN, section 6).
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

func benchmarkPublish(b *testing.B, queueType string, batchSize, publishers int) {
	tr := newTransport(b, Config{QueueType: queueType, Logger: slog.New(slog.DiscardHandler)})
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
