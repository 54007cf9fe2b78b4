package amqptransport

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/transporttest"
)

func TestMain(m *testing.M) {
	// toxiproxy's toxics log through zerolog's global logger; the tests do not need them.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	code := m.Run()
	stopSandboxBroker()
	// testenv and the management API helper use http.DefaultClient; its idle keep-alive
	// connections belong to the tests, not to the code under test.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		// toxiproxy's link pipeline can stay blocked on a channel send after Proxy.Stop when it
		// is stopped mid-stream; those goroutines belong to the fault injector, not to us.
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
			goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestConformanceClassic(t *testing.T) {
	t.Parallel()
	transporttest.Run(t, factory(Config{QueueType: QueueTypeClassic}))
}

func TestConformanceQuorum(t *testing.T) {
	t.Parallel()
	transporttest.Run(t, factory(Config{QueueType: QueueTypeQuorum}))
}

// factory returns a transporttest factory: one vhost per test, shared by the transports made for
// it, each transport wrapped so the suite can kill its connections.
func factory(base Config) func(t *testing.T) transport.Transport {
	var mu sync.Mutex
	vhosts := map[*testing.T]string{}
	return func(t *testing.T) transport.Transport {
		mu.Lock()
		u, ok := vhosts[t]
		if !ok {
			u = testenv.VHost(t)
			vhosts[t] = u
		}
		mu.Unlock()
		cfg := base
		cfg.URL = u
		return &killable{Transport: newTransport(t, cfg), t: t}
	}
}

// newTransport connects with cfg, logging to the test, and closes the transport when t ends.
func newTransport(t testing.TB, cfg Config) *Transport {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = testenv.VHost(t)
	}
	if cfg.ConnectionName == "" {
		cfg.ConnectionName = testenv.Name("sagacoord-test-")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tr
}

// killable is a Transport whose connections the test can kill on the broker's side.
type killable struct {
	*Transport
	t *testing.T
}

// Disconnect force-closes the transport's publishing and consuming connections through the
// management API, as a broker restart or a network failure would end them.
func (k *killable) Disconnect() {
	k.t.Helper()
	killConnections(k.t, k.Transport)
}

// killConnections closes, through the management API, every connection tr has open now. It
// waits until the API lists them all, since its statistics lag behind new connections.
func killConnections(tb testing.TB, tr *Transport) {
	tb.Helper()
	var want []string
	for _, l := range []*link{tr.publisher, tr.consumer} {
		if s, _ := l.live(); s != nil {
			want = append(want, tr.cfg.ConnectionName+" "+l.role)
		}
	}
	var names []string
	eventually(tb, fmt.Sprintf("the management API lists connections %q", want), func() bool {
		found := map[string]string{} // connection_name -> management name
		for _, c := range listConnections(tb) {
			found[c.ClientProperties.ConnectionName] = c.Name
		}
		names = names[:0]
		for _, w := range want {
			if n, ok := found[w]; ok {
				names = append(names, n)
			}
		}
		return len(names) == len(want)
	})
	for _, n := range names {
		rabbitAPI(tb, http.MethodDelete, "/api/connections/"+url.PathEscape(n), nil)
	}
}

// eventually polls cond until it holds, failing the test after transporttest.Timeout.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(transporttest.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			tb.Fatalf("timed out after %s waiting until %s", transporttest.Timeout, what)
		}
	}
}

type apiConnection struct {
	Name             string `json:"name"`
	ClientProperties struct {
		ConnectionName string `json:"connection_name"`
	} `json:"client_properties"`
}

func listConnections(tb testing.TB) []apiConnection {
	tb.Helper()
	var conns []apiConnection
	body := rabbitAPI(tb, http.MethodGet, "/api/connections?columns=name,client_properties", nil)
	if err := json.Unmarshal(body, &conns); err != nil {
		tb.Fatalf("decode management API connections: %v", err)
	}
	return conns
}

// rabbitAPI calls the RabbitMQ management API at SAGACOORD_TEST_RABBIT_API (as testenv does) and
// returns the response body, failing the test on any error status.
func rabbitAPI(tb testing.TB, method, path string, body io.Reader) []byte {
	tb.Helper()
	base := os.Getenv("SAGACOORD_TEST_RABBIT_API")
	if base == "" {
		base = "http://guest:guest@127.0.0.1:15672"
	}
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("bad SAGACOORD_TEST_RABBIT_API: %v", err)
	}
	user := u.User
	u.User = nil
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String()+path, body)
	if err != nil {
		tb.Fatalf("management API request: %v", err)
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Reason", "sagacoord test: simulated connection loss")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("management API %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("management API %s %s: read body: %v", method, path, err)
	}
	if resp.StatusCode >= 300 {
		tb.Fatalf("management API %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	return data
}

func vhostOf(tb testing.TB, amqpURL string) string {
	tb.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		tb.Fatalf("parse %s: %v", amqpURL, err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func queuePath(tb testing.TB, amqpURL, queue string) string {
	return fmt.Sprintf("/api/queues/%s/%s", url.PathEscape(vhostOf(tb, amqpURL)), url.PathEscape(queue))
}
