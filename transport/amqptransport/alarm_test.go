package amqptransport

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/sagacoord/sagacoord/transport"
)

// TestPublishUnderARealMemoryAlarm raises a real memory alarm (failure catalogue #8). An alarm
// blocks every publisher of the node, so the test runs only against a RabbitMQ node of its own,
// never the shared one:
//
//	SAGACOORD_TEST_ALARM_NODE=name@host           the node, for rabbitmqctl -n
//	SAGACOORD_TEST_ALARM_AMQP_URL=amqp://guest:guest@127.0.0.1:5679/
func TestPublishUnderARealMemoryAlarm(t *testing.T) {
	node, amqpURL := os.Getenv("SAGACOORD_TEST_ALARM_NODE"), os.Getenv("SAGACOORD_TEST_ALARM_AMQP_URL")
	if node == "" || amqpURL == "" {
		t.Skip("set SAGACOORD_TEST_ALARM_NODE and SAGACOORD_TEST_ALARM_AMQP_URL to a private RabbitMQ node to run")
	}
	watermark := func(v string) {
		t.Helper()
		if out, err := exec.Command("rabbitmqctl", "-n", node, "set_vm_memory_high_watermark", v).CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl set_vm_memory_high_watermark %s: %v: %s", v, err, out)
		}
	}
	tr := declared(t, Config{URL: amqpURL})
	publishUntilConfirmed(t, tr, msg("before"))

	watermark("0") // every publisher is blocked from its next publish on
	t.Cleanup(func() { watermark("0.4") })
	// The first batch goes out before the broker says it blocks; its confirms never come, and
	// Publish must still return by its deadline.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	errs := tr.Publish(ctx, []transport.Outgoing{msg("blocked-1"), msg("blocked-2")})
	t.Logf("first Publish under the alarm returned after %s: %v", time.Since(start).Round(time.Millisecond), errs[0])
	for i, err := range errs {
		if err == nil {
			t.Fatalf("message %d confirmed under a memory alarm", i)
		}
	}
	// Once connection.blocked has arrived, Publish fails at once with ErrBlocked.
	eventually(t, "Publish fails with ErrBlocked", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		err := tr.Publish(ctx, []transport.Outgoing{msg("blocked-3")})[0]
		t.Logf("Publish under the alarm: %v", err)
		return errors.Is(err, ErrBlocked)
	})

	watermark("0.4")
	publishUntilConfirmed(t, tr, msg("after"))
}
