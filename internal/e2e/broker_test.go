package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// publisher returns the test's own transport on its vhost, for injecting messages and reading
// dead letters. It declares the shared topology.
func (e *env) publisher() *amqptransport.Transport {
	e.pubOnce.Do(func() {
		tr, err := amqptransport.New(e.ctx, amqptransport.Config{URL: e.amqpURL, ConnectionName: testenv.Name("test-")})
		require.NoError(e.t, err)
		e.t.Cleanup(func() { _ = tr.Close() })
		require.NoError(e.t, tr.DeclareTopology(e.ctx))
		e.pub = tr
	})
	require.NotNil(e.t, e.pub, "publisher failed to start earlier")
	return e.pub
}

// publish publishes messages and requires the broker to confirm and route every one.
func (e *env) publish(msgs ...transport.Outgoing) {
	e.t.Helper()
	for i, err := range e.publisher().Publish(e.ctx, msgs) {
		require.NoError(e.t, err, "publish message %d (%s)", i, msgs[i].MessageID)
	}
}

// toParticipant addresses a message to a participant's queue, as the coordinator does.
func toParticipant(name string, m protocol.Message) transport.Outgoing {
	return transport.Outgoing{Exchange: protocol.ExchangeCommands, RoutingKey: name, Message: m}
}

// toCoordinator addresses a message to the shared reply queue, as a participant does.
func toCoordinator(m protocol.Message) transport.Outgoing {
	return transport.Outgoing{Exchange: protocol.ExchangeReplies, RoutingKey: protocol.RoutingKeyReplies, Message: m}
}

// deadLetters consumes the dead-letter queue and remembers what it saw, by message id.
type deadLetters struct {
	mu   sync.Mutex
	seen map[string]protocol.Message
}

func (e *env) consumeDeadLetters() *deadLetters {
	ctx, cancel := context.WithCancel(e.ctx)
	e.t.Cleanup(cancel)
	ch, err := e.publisher().Consume(ctx, protocol.QueueDead, 100)
	require.NoError(e.t, err)
	dl := &deadLetters{seen: map[string]protocol.Message{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for d := range ch {
			dl.mu.Lock()
			dl.seen[d.MessageID] = d.Message
			dl.mu.Unlock()
			_ = d.Ack()
		}
	}()
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	return dl
}

// await waits until every id was dead-lettered.
func (dl *deadLetters) await(t testing.TB, timeout time.Duration, ids ...string) {
	t.Helper()
	eventually(t, timeout, func() (bool, string) {
		dl.mu.Lock()
		defer dl.mu.Unlock()
		var missing []string
		for _, id := range ids {
			if _, ok := dl.seen[id]; !ok {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0, fmt.Sprintf("not dead-lettered: %v", missing)
	})
}

func (dl *deadLetters) get(id string) (protocol.Message, bool) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	m, ok := dl.seen[id]
	return m, ok
}

// queueInfo is what the management API says about a queue. The broker refreshes these numbers
// every collect_statistics_interval (5s by default), so tests only wait for them to reach a
// known value, never read them as "now".
type queueInfo struct {
	Messages     int `json:"messages"`
	Unacked      int `json:"messages_unacknowledged"`
	MessageStats struct {
		Ack        int `json:"ack"`
		DeliverGet int `json:"deliver_get"`
		Publish    int `json:"publish"`
	} `json:"message_stats"`
}

func rabbitAPI() string {
	if u := os.Getenv("SAGACOORD_TEST_RABBIT_API"); u != "" {
		return u
	}
	return "http://guest:guest@127.0.0.1:15672"
}

func (e *env) queueInfo(queue string) (queueInfo, error) {
	var qi queueInfo
	au, err := url.Parse(e.amqpURL)
	if err != nil {
		return qi, err
	}
	api, err := url.Parse(rabbitAPI())
	if err != nil {
		return qi, err
	}
	user := api.User
	api.User = nil
	vhost := strings.TrimPrefix(au.Path, "/")
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.String()+"/api/queues/"+url.PathEscape(vhost)+"/"+url.PathEscape(queue), nil)
	if err != nil {
		return qi, err
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return qi, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return qi, err
	}
	if resp.StatusCode != http.StatusOK {
		return qi, fmt.Errorf("GET queue %s: %s: %s", queue, resp.Status, body)
	}
	return qi, json.Unmarshal(body, &qi)
}

// awaitQueueAcked waits until the broker reports at least acks acknowledgements on queue and
// nothing left in it, ready or unacknowledged.
func (e *env) awaitQueueAcked(queue string, acks int, timeout time.Duration) {
	e.t.Helper()
	eventually(e.t, timeout, func() (bool, string) {
		qi, err := e.queueInfo(queue)
		if err != nil {
			return false, err.Error()
		}
		return qi.MessageStats.Ack >= acks && qi.Messages == 0 && qi.Unacked == 0,
			fmt.Sprintf("queue %s: %d acks (want %d), %d messages, %d unacked", queue, qi.MessageStats.Ack, acks, qi.Messages, qi.Unacked)
	})
}
