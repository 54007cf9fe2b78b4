package participant_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// TestWorkerFinalNotices: a worker subscribes its queue to its final notices and records them; a
// later copy of a final saga's command gets no reply. A notice that is malformed or addressed to
// another participant is dead-lettered; a worker with a negative BarrierGrace does not subscribe.
func TestWorkerFinalNotices(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &counter{out: `{}`}
	cfg := e.config()
	cfg.Concurrency = 1 // in queue order, so that the next reply says what came before
	e.start(cfg, map[string]participant.Handler{"debit": h.handle})
	dead, err := e.coord.Consume(e.ctx, protocol.QueueDead, 16)
	require.NoError(t, err)

	saga := uuid.NewString()
	e.send(debit(saga))
	r, _ := e.reply()
	require.Equal(t, saga, r.SagaID)

	notice := func(f *protocol.Final, addressedTo string) transport.Outgoing {
		m, err := f.Encode(addressedTo, uuid.NewString())
		require.NoError(t, err)
		return transport.Outgoing{Exchange: protocol.ExchangeFinals, RoutingKey: name, Message: m}
	}
	garbage := notice(&protocol.Final{}, name)
	garbage.Body = []byte(`{"sagas":["not-a-uuid"]}`)
	misrouted := notice(&protocol.Final{Sagas: []string{uuid.NewString()}}, "someone-else")
	msgs := []transport.Outgoing{garbage, misrouted, notice(&protocol.Final{Sagas: []string{saga}}, name)}
	for i, err := range e.coord.Publish(e.ctx, msgs) {
		require.NoError(t, err, "notice %d", i)
	}
	e.send(debit(saga)) // a late copy, after the notice
	other := uuid.NewString()
	e.send(debit(other))
	r, _ = e.reply()
	require.Equal(t, other, r.SagaID, "the late copy of the final saga's command got no reply")
	require.EqualValues(t, 2, h.calls.Load())
	require.Equal(t, 1, e.count(`SELECT count(*) FROM finals WHERE gid = $1`, saga))

	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case d := <-dead:
			seen[d.MessageID] = true
			require.NoError(t, d.Ack())
		case <-time.After(waitFor):
			t.Fatalf("dead letters seen: %v; want the malformed and the misaddressed notice", seen)
		}
	}
	require.True(t, seen[garbage.MessageID] && seen[misrouted.MessageID], "dead letters: %v", seen)

	// A worker that keeps every row does not subscribe: a notice to it is dropped by the broker.
	e2 := newEnv(t)
	cfg2 := e2.config()
	cfg2.BarrierGrace = -1
	e2.start(cfg2, map[string]participant.Handler{"debit": h.handle})
	m, err := (&protocol.Final{Sagas: []string{saga}}).Encode(name, "x")
	require.NoError(t, err)
	require.NoError(t, e2.coord.Publish(e2.ctx, []transport.Outgoing{{Exchange: protocol.ExchangeFinals, RoutingKey: name, Message: m}})[0])
	e2.send(debit(saga))
	r, _ = e2.reply()
	require.Equal(t, saga, r.SagaID, "without a subscription, the saga is not final there")
	require.Zero(t, e2.count(`SELECT count(*) FROM finals`))
}
