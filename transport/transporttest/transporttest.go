// Package transporttest is the conformance suite of transport.Transport. Every implementation runs
// it from its own tests, against the real broker where there is one:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T) transport.Transport { ... })
//	}
//
// The suite checks the contract the engine and the participant SDK rely on: idempotent topology,
// faithful round trips, mandatory returns, final notices that reach subscribers only, batch
// confirms, dead-lettering, requeue, prefetch, bundles read as the messages they carry and settled
// item by item, and that a delivery never outlives its connection.
package transporttest

import (
	"testing"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// Disconnecter is implemented by a transport, or by a test's wrapper around one, that can lose its
// broker connections on demand as a network failure would. Disconnect returns once the loss has
// happened on the broker's side; the transport may notice it later. Run skips the
// connection-loss test for transports that do not implement it.
type Disconnecter interface {
	Disconnect()
}

// Timeout bounds every wait of the suite: for a delivery, for a reconnection, for a channel to
// close. It is generous because it is only reached when something is broken.
const Timeout = 30 * time.Second

// Run runs the conformance suite as parallel subtests of t.
//
// newTransport returns a transport connected to a broker of its own for the test it is given (a
// fresh vhost, a fresh in-memory broker) on which nothing is declared. Called again with the same
// test, it returns another connection to that same broker, as a second process would have. It
// arranges for what it returns to be closed when the test ends; the suite closes some transports
// itself, so Close must be idempotent.
func Run(t *testing.T, newTransport func(t *testing.T) transport.Transport) {
	tests := []struct {
		name string
		run  func(t *testing.T, newTransport func(t *testing.T) transport.Transport)
	}{
		{"TopologyIsIdempotent", testTopologyIsIdempotent},
		{"RoundTripKeepsEveryProperty", testRoundTrip},
		{"TwoPCCommandsHaveTheirOwnQueue", testTwoPCQueue},
		{"UnroutableIsReturned", testUnroutable},
		{"FinalNoticesReachSubscribersOnly", testFinalNotices},
		{"BatchOf500IsConfirmed", testBatch},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"ConcurrentPublishersGetTheirOwnResults", testConcurrentMixedPublishers},
		{"PublishWithEndedContextFails", testPublishEndedContext},
		{"RejectDeadLetters", testReject},
		{"RequeueRedelivers", testRequeue},
		{"DoubleSettleFailsHarmlessly", testDoubleSettle},
		{"PrefetchBoundsUnsettled", testPrefetch},
		{"ConsumeUnknownQueueFails", testConsumeUnknownQueue},
		{"ContextEndClosesConsumer", testContextEnd},
		{"ContextEndReturnsUnreadDeliveries", testContextEndUnread},
		{"BundleCarriesItsMessages", testBundleCarriesItsMessages},
		{"BundleItemRejectedAlone", testBundleItemRejectedAlone},
		{"BundleRequeuedWhenAnItemIs", testBundleRequeuedWhenAnItemIs},
		{"MalformedBundleArrivesWhole", testMalformedBundleArrivesWhole},
		{"CloseIsIdempotentAndFinal", testClose},
		{"ConnectionLossMakesDeliveriesStale", testConnectionLoss},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newTransport)
		})
	}
}

const participant = "conformance"

var participantQueue = protocol.ParticipantQueue(participant)
