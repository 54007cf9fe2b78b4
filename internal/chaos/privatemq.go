package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/sagacoord/sagacoord/internal/sandbox"
)

// privateRabbit is the RabbitMQ node of one scenario, for the rabbitmq_restart and memory_alarm
// faults: a sandbox node without TLS (its own node name, ports, mnesia and log directories), whose
// administrator is guest, with the management plugin on a port of its own, since its API reads
// queue depths in milliseconds where rabbitmqctl takes seconds.
type privateRabbit struct {
	*sandbox.Rabbit
	mgmt management
}

func startPrivateRabbit(ctx context.Context, parent, runID string) (*privateRabbit, error) {
	node, err := sandbox.StartRabbit(ctx, sandbox.RabbitConfig{Dir: filepath.Join(parent, "rabbitmq"), Node: "chaos-" + runID + "@localhost", Management: true})
	if errors.Is(err, sandbox.ErrMissing) {
		return nil, fmt.Errorf("%w: %v", ErrSkipped, err)
	}
	if err != nil {
		return nil, err
	}
	return &privateRabbit{Rabbit: node, mgmt: newManagement(node.ManagementURL())}, nil
}

func (r *privateRabbit) memoryAlarm(ctx context.Context, on bool) error {
	v := "0.4"
	if on {
		v = "0.0000001"
	}
	out, err := r.Ctl(ctx, "set_vm_memory_high_watermark", v)
	if err != nil {
		return fmt.Errorf("rabbitmqctl set_vm_memory_high_watermark %s: %v: %s", v, err, out)
	}
	return nil
}

// stop stops the node and drops the management client's idle connections.
func (r *privateRabbit) stop() {
	r.Stop()
	r.mgmt.close()
}

// queueStats lists the queues of vhost with their ready and unacknowledged messages, from the
// management API or, if it does not answer, rabbitmqctl.
func (r *privateRabbit) queueStats(ctx context.Context, vhost string) ([]QueueStat, error) {
	if qs, err := r.mgmt.queueStats(ctx, vhost); err == nil {
		return qs, nil
	}
	out, err := r.Ctl(ctx, "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged", "--formatter", "json", "-q")
	if err != nil {
		return nil, fmt.Errorf("rabbitmqctl list_queues: %v: %s", err, out)
	}
	// The CLI may print notices before the JSON.
	if i := bytes.IndexByte(out, '['); i > 0 {
		out = out[i:]
	}
	var qs []QueueStat
	if err := json.Unmarshal(out, &qs); err != nil {
		return nil, fmt.Errorf("rabbitmqctl list_queues: %v: %s", err, out)
	}
	return qs, nil
}
