package participant_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/testenv"
	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// These tests run a Worker against the machine's PostgreSQL and RabbitMQ, with a fake
// coordinator that publishes step commands to the participant's queue and reads the reply queue.

const name = "bank-a"

const waitFor = 20 * time.Second

type env struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	schema  string
	amqpURL string
	vhost   string
	// connName is the worker transport's connection name, to find it in the management API.
	connName string
	tr       transport.Transport
	coord    transport.Transport
	replies  <-chan *transport.Delivery
	logs     *logCounter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool, dbURL := testenv.Pool(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	amqpURL := testenv.VHost(t)
	au, err := url.Parse(amqpURL)
	require.NoError(t, err)
	e := &env{t: t, pool: pool, schema: u.Query().Get("search_path"), amqpURL: amqpURL, vhost: strings.TrimPrefix(au.Path, "/"), logs: &logCounter{}}
	e.connName = "participant-test-" + e.vhost

	ctx, cancel := context.WithCancel(context.Background())
	e.ctx = ctx
	e.tr = e.dial(e.connName)
	e.coord = e.dial("fake-coordinator-" + e.vhost)
	t.Cleanup(cancel) // runs before the transports close
	require.NoError(t, e.coord.DeclareTopology(ctx))
	require.NoError(t, e.coord.DeclareParticipant(ctx, name))
	e.replies, err = e.coord.Consume(ctx, protocol.QueueReplies, 64)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE effects (gid text, step text, kind text, PRIMARY KEY (gid, step, kind))`)
	require.NoError(t, err)
	return e
}

func (e *env) dial(connName string) transport.Transport {
	tr, err := amqptransport.New(context.Background(), amqptransport.Config{URL: e.amqpURL, ConnectionName: connName, Heartbeat: time.Second})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func (e *env) config() participant.Config {
	return participant.Config{
		Name:         name,
		Transport:    e.tr,
		DB:           e.pool,
		Schema:       e.schema,
		Prefetch:     8,
		RetryBackoff: 20 * time.Millisecond,
		Logger:       slog.New(e.logs),
	}
}

// start makes, migrates and starts a worker with handlers; it is stopped when the test ends.
func (e *env) start(cfg participant.Config, handlers map[string]participant.Handler) *participant.Worker {
	e.t.Helper()
	w, err := participant.New(cfg)
	require.NoError(e.t, err)
	for a, h := range handlers {
		w.Handle(a, h)
	}
	require.NoError(e.t, w.Migrate(e.ctx))
	require.NoError(e.t, w.Start(e.ctx))
	e.t.Cleanup(w.Stop)
	return w
}

func (e *env) send(cmd *protocol.StepCommand) {
	e.t.Helper()
	msg, err := cmd.Encode()
	require.NoError(e.t, err)
	msg.Headers[protocol.HeaderTraceparent] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.publish(msg)
}

func (e *env) publish(msg protocol.Message) {
	e.t.Helper()
	errs := e.coord.Publish(e.ctx, []transport.Outgoing{{Exchange: protocol.ExchangeCommands, RoutingKey: name, Message: msg}})
	require.NoError(e.t, errors.Join(errs...))
}

// reply waits for the next reply, acks it and decodes it.
func (e *env) reply() (*protocol.Reply, protocol.Message) {
	e.t.Helper()
	select {
	case d, ok := <-e.replies:
		require.True(e.t, ok, "reply channel closed")
		require.NoError(e.t, d.Ack())
		r, err := protocol.DecodeReply(d.Message)
		require.NoError(e.t, err)
		return r, d.Message
	case <-time.After(waitFor):
		e.t.Fatalf("no reply within %v", waitFor)
		return nil, protocol.Message{}
	}
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func (e *env) effects() int { return e.count(`SELECT count(*) FROM effects`) }

// counter is a handler that records an effect and counts its calls.
type counter struct {
	calls atomic.Int32
	out   string
	err   error
	panic any
	// gate, when set, is closed by the test to let the first call proceed; entered is closed
	// when that first call begins.
	gate, entered chan struct{}
	once          sync.Once
}

func (c *counter) handle(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
	if c.calls.Add(1) == 1 && c.gate != nil {
		c.once.Do(func() { close(c.entered) })
		select {
		case <-c.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.panic != nil {
		panic(c.panic)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1, $2, $3)`, cmd.SagaID, cmd.Step, cmd.Kind); err != nil {
		return nil, err
	}
	if c.err != nil {
		return nil, c.err
	}
	return json.RawMessage(c.out), nil
}

func gated(out string) *counter {
	return &counter{out: out, gate: make(chan struct{}), entered: make(chan struct{})}
}

func debit(saga string) *protocol.StepCommand {
	return &protocol.StepCommand{SagaID: saga, Step: "debit", StepIndex: 0, Kind: protocol.KindAction, Participant: name, Action: "debit", Attempt: 1, Input: json.RawMessage(`{"amount":5}`)}
}

func refund(saga string) *protocol.StepCommand {
	return &protocol.StepCommand{SagaID: saga, Step: "debit", StepIndex: 0, Kind: protocol.KindCompensate, Participant: name, Action: "refund_debit", Attempt: 1}
}

func TestWorkerSucceedsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &counter{out: `{"balance":95}`}
	e.start(e.config(), map[string]participant.Handler{"debit": h.handle})

	e.send(debit("s1"))
	r, msg := e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome)
	require.JSONEq(t, `{"balance":95}`, string(r.Output))
	require.Equal(t, "s1", r.SagaID)
	require.EqualValues(t, protocol.KindAction, r.Kind)
	require.Equal(t, protocol.CommandRef{SagaID: "s1", StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID(), msg.CorrelationID)
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", msg.Headers[protocol.HeaderTraceparent], "traceparent is propagated")
	require.EqualValues(t, 1, h.calls.Load())
	require.Equal(t, 1, e.effects())
}

func TestWorkerDuplicateCommandRunsHandlerOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &counter{out: `{"entry": 1}`}
	e.start(e.config(), map[string]participant.Handler{"debit": h.handle})

	e.send(debit("s1"))
	e.send(debit("s1"))
	r1, m1 := e.reply()
	r2, m2 := e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, r1.Outcome)
	require.Equal(t, *r1, *r2)
	require.Equal(t, m1.Body, m2.Body, "both replies carry the same stored output")
	require.Equal(t, m1.MessageID, m2.MessageID, "the reply id is deterministic")
	require.EqualValues(t, 1, h.calls.Load())
	require.Equal(t, 1, e.effects())
}

func TestWorkerCompensationBeforeActionRefusesLateAction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	act, comp := &counter{out: `{}`}, &counter{}
	e.start(e.config(), map[string]participant.Handler{"debit": act.handle, "refund_debit": comp.handle})

	e.send(refund("s1"))
	c, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, c.Outcome)
	require.EqualValues(t, protocol.KindCompensate, c.Kind)

	e.send(debit("s1"))
	a, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeFailed, a.Outcome)
	require.Equal(t, "compensated before action", a.Error)
	require.EqualValues(t, 0, act.calls.Load())
	require.EqualValues(t, 0, comp.calls.Load())
	require.Equal(t, 0, e.effects())
}

func TestWorkerBusinessFailureThenCompensationIsNoop(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	act, comp := &counter{err: participant.Failf("insufficient funds")}, &counter{}
	e.start(e.config(), map[string]participant.Handler{"debit": act.handle, "refund_debit": comp.handle})

	e.send(debit("s1"))
	a, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeFailed, a.Outcome)
	require.Equal(t, "insufficient funds", a.Error)
	require.Equal(t, 0, e.effects(), "the failed action's effect is rolled back")

	e.send(refund("s1"))
	c, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, c.Outcome)
	require.EqualValues(t, 0, comp.calls.Load(), "nothing to undo")
}

func TestWorkerRetryableErrorAndPanic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	flaky := &counter{err: errors.New("connection reset by peer")}
	boom := &counter{panic: "index out of range"}
	ok := &counter{out: `{}`}
	e.start(e.config(), map[string]participant.Handler{"debit": flaky.handle, "boom": boom.handle, "ok": ok.handle})

	e.send(debit("s1"))
	r, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeRetry, r.Outcome)
	require.Equal(t, "connection reset by peer", r.Error)
	require.Equal(t, 0, e.count(`SELECT count(*) FROM barrier`), "a retry leaves no barrier row")
	require.Equal(t, 0, e.effects())

	cmd := debit("s2")
	cmd.Action = "boom"
	e.send(cmd)
	r, _ = e.reply()
	require.EqualValues(t, protocol.OutcomeRetry, r.Outcome)
	require.Contains(t, r.Error, "handler panicked: index out of range")

	cmd = debit("s3")
	cmd.Action = "ok"
	e.send(cmd)
	r, _ = e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome, "the worker survives a panic")
}

func TestWorkerDeadLettersGarbageAndGoesOn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &counter{out: `{}`}
	e.start(e.config(), map[string]participant.Handler{"debit": h.handle})
	dead, err := e.coord.Consume(e.ctx, protocol.QueueDead, 16)
	require.NoError(t, err)

	e.publish(protocol.Message{MessageID: "garbage-1", Type: protocol.TypeSagaAction, ContentType: protocol.ContentType, Body: []byte(`{"saga_id": `)})
	unknown := debit("s1")
	unknown.Action = "no_such_action"
	e.send(unknown)
	e.send(debit("s\x00nul")) // valid JSON, but PostgreSQL text cannot hold a NUL
	e.send(debit("s2"))

	r, _ := e.reply()
	require.Equal(t, "s2", r.SagaID, "the good command after the garbage is processed")
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome)

	seen := map[string]bool{}
	for len(seen) < 3 {
		select {
		case d := <-dead:
			seen[d.MessageID] = true
			require.NoError(t, d.Ack())
		case <-time.After(waitFor):
			t.Fatalf("dead letters seen: %v; want garbage-1, the unknown action and the NUL", seen)
		}
	}
	require.True(t, seen["garbage-1"])
	require.True(t, seen[protocol.CommandRef{SagaID: "s1", StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID()])
	require.True(t, seen[protocol.CommandRef{SagaID: "s\x00nul", StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID()])
	require.EqualValues(t, 1, h.calls.Load())
}

func TestWorkerConnectionLossWhileHandlerRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := gated(`{"entry":1}`)
	e.start(e.config(), map[string]participant.Handler{"debit": h.handle})

	e.send(debit("s1"))
	<-h.entered
	old := e.waitConnections(e.connName+" consume", nil)
	e.closeConnection(old[0])
	e.waitConnections(e.connName+" consume", old) // reconnected: the delivery in flight is stale
	close(h.gate)

	// The first reply is published (its connection is alive) but its ack is stale; the broker
	// redelivers, and the barrier answers the redelivery with the stored reply.
	r1, m1 := e.reply()
	r2, m2 := e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, r1.Outcome)
	require.Equal(t, *r1, *r2)
	require.Equal(t, m1.Body, m2.Body)
	require.EqualValues(t, 1, h.calls.Load(), "the effect is applied once")
	require.Equal(t, 1, e.effects())
}

func TestWorkerStopWaitsForHandlerInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := gated(`{"done":true}`)
	w := e.start(e.config(), map[string]participant.Handler{"debit": h.handle})

	e.send(debit("s1"))
	<-h.entered
	stopped := make(chan struct{})
	go func() {
		w.Stop()
		close(stopped)
	}()
	e.send(debit("s2")) // arrives while stopping: must be left for the next worker
	select {
	case <-stopped:
		t.Fatal("Stop returned while a handler was still running")
	default:
	}
	close(h.gate)
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("Stop did not return after the handler finished")
	}
	w.Stop() // idempotent

	r, _ := e.reply()
	require.Equal(t, "s1", r.SagaID)
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome, "the handler in flight finished and replied")

	next := &counter{out: `{}`}
	e.start(e.config(), map[string]participant.Handler{"debit": next.handle})
	r, _ = e.reply()
	require.Equal(t, "s2", r.SagaID, "the command not begun was left on the queue")
	require.EqualValues(t, 1, next.calls.Load())
	require.EqualValues(t, 1, h.calls.Load())
}

func TestWorkerRequeuesWhenDatabaseFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &counter{out: `{}`}
	w, err := participant.New(e.config())
	require.NoError(t, err)
	w.Handle("debit", h.handle)
	require.NoError(t, w.Start(e.ctx)) // no Migrate yet: every barrier insert fails
	t.Cleanup(w.Stop)

	e.send(debit("s1"))
	require.Eventually(t, func() bool { return e.logs.count("barrier transaction failed; requeueing the command") >= 2 }, waitFor, 5*time.Millisecond)
	require.NoError(t, w.Migrate(e.ctx))
	r, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome, "the requeued command is processed once the database works")
	require.EqualValues(t, 1, h.calls.Load())
}

func TestWorkerRequeuesWhenReplyPublishFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := &counter{out: `{"x":1}`}
	cfg := e.config()
	flaky := &failingPublish{Transport: e.tr, failures: 2}
	cfg.Transport = flaky
	e.start(cfg, map[string]participant.Handler{"debit": h.handle})

	e.send(debit("s1"))
	r, _ := e.reply()
	require.EqualValues(t, protocol.OutcomeSucceeded, r.Outcome)
	require.JSONEq(t, `{"x":1}`, string(r.Output))
	require.EqualValues(t, 1, h.calls.Load(), "redeliveries are answered from the barrier")
	require.EqualValues(t, 3, flaky.calls.Load())
}

// failingPublish fails the first publishes, as a lost connection or a broker nack would.
type failingPublish struct {
	transport.Transport
	failures int32
	calls    atomic.Int32
}

func (f *failingPublish) Publish(ctx context.Context, msgs []transport.Outgoing) []error {
	if f.calls.Add(1) <= f.failures {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = transport.ErrNacked
		}
		return errs
	}
	return f.Transport.Publish(ctx, msgs)
}

// logCounter is a slog.Handler that counts messages (and prints them with -v).
type logCounter struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.msgs == nil {
		l.msgs = map[string]int{}
	}
	l.msgs[r.Message]++
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }

func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msgs[msg]
}

// Management API helpers, to cut a connection as a network failure would.

func rabbitAPI() string {
	if u := os.Getenv("SAGACOORD_TEST_RABBIT_API"); u != "" {
		return u
	}
	return "http://guest:guest@127.0.0.1:15672"
}

func (e *env) api(method, path string, out any) {
	e.t.Helper()
	u, err := url.Parse(rabbitAPI())
	require.NoError(e.t, err)
	user := u.User
	u.User = nil
	req, err := http.NewRequestWithContext(e.ctx, method, u.String()+path, nil)
	require.NoError(e.t, err)
	pw, _ := user.Password()
	req.SetBasicAuth(user.Username(), pw)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Less(e.t, resp.StatusCode, 300, "%s %s: %s", method, path, body)
	if out != nil {
		require.NoError(e.t, json.Unmarshal(body, out))
	}
}

// waitConnections waits until the vhost has a connection named connName that is not in
// exclude, and returns the server-side names of all such connections.
func (e *env) waitConnections(connName string, exclude []string) []string {
	e.t.Helper()
	var found []string
	require.Eventually(e.t, func() bool {
		var conns []struct {
			Name             string `json:"name"`
			ClientProperties struct {
				ConnectionName string `json:"connection_name"`
			} `json:"client_properties"`
		}
		e.api(http.MethodGet, "/api/vhosts/"+url.PathEscape(e.vhost)+"/connections", &conns)
		found = found[:0]
		for _, c := range conns {
			if c.ClientProperties.ConnectionName == connName && !slices.Contains(exclude, c.Name) {
				found = append(found, c.Name)
			}
		}
		return len(found) > 0
	}, waitFor, 20*time.Millisecond, fmt.Sprintf("connection %q", connName))
	return found
}

func (e *env) closeConnection(serverName string) {
	e.api(http.MethodDelete, "/api/connections/"+url.PathEscape(serverName), nil)
}
