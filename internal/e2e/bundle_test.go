package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// TestSagasAndTransactionsInBundles: with bundles on at the coordinator (commands) and at every
// participant (replies), sagas complete or compensate and transactions commit with every effect
// applied once, and commands did arrive in bundles.
func TestSagasAndTransactionsInBundles(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{bundle: true})
	failEveryFourth := func(_ context.Context, cmd *protocol.StepCommand) (json.RawMessage, error) {
		var in struct{ N int }
		if err := json.Unmarshal(cmd.Input, &in); err != nil {
			return nil, err
		}
		if cmd.Kind == protocol.KindAction && in.N%4 == 0 {
			return nil, participant.Failf("saga %d fails at its last step", in.N)
		}
		return json.RawMessage(`{}`), nil
	}
	parts := []*testParticipant{
		e.startParticipant(participantOpts{name: "bundle-a", bundle: true, prefetch: 8, concurrency: 2}),
		e.startParticipant(participantOpts{name: "bundle-b", bundle: true, prefetch: 8, concurrency: 2}),
		e.startParticipant(participantOpts{name: "bundle-c", bundle: true, prefetch: 8, concurrency: 2, behave: failEveryFourth}),
	}
	e.register(chain("bundled", step("a", "bundle-a"), step("b", "bundle-b"), step("c", "bundle-c")))
	const n = 200
	ids := e.startMany("bundled", n, 64, e.client)
	counts := e.awaitAllTerminal(n, 90*time.Second)
	require.Equal(t, map[string]int{"COMPLETED": 3 * n / 4, "COMPENSATED": n / 4}, counts)
	require.Empty(t, e.duplicates(), "an effect applied twice")
	for _, id := range ids {
		sg := e.get(id)
		sums := e.ledgerSums(id)
		if sg.GetStatus() == pb.SagaStatus_SAGA_STATUS_COMPENSATED {
			require.Equal(t, map[string]int64{"bundle-a": 0, "bundle-b": 0}, sums, "saga %s compensated", id)
		} else {
			require.Equal(t, map[string]int64{"bundle-a": 1, "bundle-b": 1, "bundle-c": 1}, sums, "saga %s completed", id)
		}
	}
	bundled := 0
	for _, p := range parts {
		p.tap.mu.Lock()
		bundled += p.tap.bundled
		p.tap.mu.Unlock()
	}
	require.Positive(t, bundled, "no command arrived in a bundle")

	client := e.twoPCClient(e.coord.Addr())
	txs := []*txParticipant{
		e.startTxParticipant(txParticipantOpts{name: "bundle-x", bundle: true}),
		e.startTxParticipant(txParticipantOpts{name: "bundle-y", bundle: true}),
	}
	const m = 20
	txIDs := make([]string, m)
	for i := range txIDs {
		txIDs[i] = e.beginTx(client, 30*time.Second, txParts("bundle-x", "bundle-y"))
	}
	for _, id := range txIDs {
		e.requireOutcome(client, id, pb.TransactionState_TRANSACTION_STATE_COMMITTED, 60*time.Second)
	}
	for _, p := range txs {
		require.EqualValues(t, m, p.prepares.Load(), fmt.Sprintf("%s: prepares", p.name))
		require.EqualValues(t, m, p.commits.Load(), fmt.Sprintf("%s: commits", p.name))
	}
}
