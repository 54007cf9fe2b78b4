package engine

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/store/pgstore"
	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/migrations"
	"github.com/sagacoord/sagacoord/outbox"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/memtransport"
)

// A coordinator restarted with a cold definition cache, one reply worker and a pool of one
// connection applies a reply: the definition is loaded before the batch takes the only
// connection, not inside it (see definitions). Runs against PostgreSQL, since a real pool is
// what could run dry.
func TestColdCacheReplyWithAPoolOfOne(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("needs PostgreSQL: -short runs the engine's tests on the in-memory store only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	big, dbURL := testenv.Pool(t)
	_, err := (&migrations.Migrator{Pool: big}).Up(ctx)
	require.NoError(t, err)
	setup := pgstore.New(big, pgstore.Config{})
	def, _, err := setup.RegisterDefinition(ctx, mustNormalize(t))
	require.NoError(t, err)
	m := saga.NewMachine(&def)
	id := uuid.New()
	_, _, err = setup.CreateSagas(ctx, []store.NewSaga{{ID: id, Build: func(now time.Time) (store.Change, error) {
		st, _ := m.Start(id.String(), json.RawMessage(`{}`), time.Time{}, now)
		return store.Change{Row: &store.Saga{ID: id, DefinitionName: def.Name, DefinitionVersion: def.Version, State: st, RequestHash: "h"}}, nil
	}}})
	require.NoError(t, err)

	pc, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	pc.MaxConns = 1
	one, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	defer one.Close()
	st := pgstore.New(one, pgstore.Config{})
	broker := memtransport.NewBroker()
	tr := memtransport.New(broker)
	defer tr.Close()
	relay := outbox.NewRelay(st.Outbox(), tr, outbox.Config{})
	e, err := New(Config{Store: st, Transport: tr, Relay: relay, ReplyWorkers: 1, MaxActiveSagas: -1, Retention: -1})
	require.NoError(t, err)
	require.NoError(t, e.Start(ctx))
	defer e.Stop()

	cmd := &protocol.StepCommand{SagaID: id.String(), Step: "a", StepIndex: 0, Kind: protocol.KindAction, Participant: "pa", Action: "do", Attempt: 1}
	reply, err := protocol.EncodeStepReply(cmd, protocol.StepReply{Outcome: protocol.OutcomeSucceeded})
	require.NoError(t, err)
	errs := tr.Publish(ctx, []transport.Outgoing{{Exchange: protocol.ExchangeReplies, RoutingKey: protocol.RoutingKeyReplies, Message: reply}})
	require.NoError(t, errs[0])

	// An engine that loaded the definition inside the batch would wait here forever.
	require.Eventually(t, func() bool {
		sg, err := setup.GetSaga(ctx, id)
		require.NoError(t, err)
		return sg.State.Steps[0].Status == saga.StepSucceeded
	}, 15*time.Second, 20*time.Millisecond, "the reply was not applied: the batch waits for a second connection of a pool of one")
}

func mustNormalize(t *testing.T) saga.Definition {
	d, err := saga.Normalize(saga.Definition{Name: "cold", Steps: []saga.StepDefinition{
		{Name: "a", Participant: "pa", Action: "do"}, {Name: "b", Participant: "pb", Action: "do"},
	}})
	require.NoError(t, err)
	return d
}
