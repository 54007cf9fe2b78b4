// Package amqptransport implements transport.Transport over RabbitMQ with amqp091-go.
//
// A Transport keeps two long-lived connections, one for publishing and one for consuming, so a
// broker that blocks publishers during a resource alarm never stalls the acknowledgements of
// consumers. Declarations use a short-lived connection of their own. Lost connections are
// redialled with exponential backoff. amqp091-go's automatic recovery is deliberately not used:
// it reuses channels whose delivery tags restart at 1, so acknowledging a delivery from before a
// reconnect could acknowledge a different message. Here every delivery is bound to the channel it
// came from, and settling it after that channel is gone returns transport.ErrStale.
//
// This package is public and follows the module's semantic versioning: New, Transport and Config
// only grow, and a new Config field's zero value keeps the behaviour from before it.
package amqptransport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/transport"
)

// ErrClosed is returned by every method of a Transport after Close.
var ErrClosed = errors.New("amqptransport: transport is closed")

// ErrBlocked is returned by Publish while the broker blocks the publishing connection because of a
// resource alarm (memory or disk). Nothing was sent; publish again once the alarm clears.
var ErrBlocked = errors.New("amqptransport: the broker is blocking publishers (resource alarm)")

// closeTimeout bounds the close handshake of a connection.
const closeTimeout = 2 * time.Second

// Transport is a transport.Transport over RabbitMQ. Its methods are safe for concurrent use.
type Transport struct {
	cfg       Config
	log       *slog.Logger
	redacted  string // cfg.URL without its password, for errors and logs
	publisher *link
	consumer  *link

	// requests queues Publish calls for the PublishChannels publish workers (see publishWorker);
	// when maxChunk calls wait, Publish waits for room.
	requests chan *pubRequest
	// onBatch, when set (by tests), is called by a publish worker with the requests of each
	// batch before it publishes them.
	onBatch atomic.Pointer[func(reqs []*pubRequest)]

	consumerSeq atomic.Uint64

	mu      sync.Mutex // guards closed and the wg.Add calls that must not race wg.Wait
	closed  bool
	closing chan struct{} // closed by Close
	wg      sync.WaitGroup
	once    sync.Once
}

var _ transport.Transport = (*Transport)(nil)

// New connects to the broker and returns a Transport. It fails fast, with an error naming the
// broker (password redacted), when the configuration is invalid or the broker is unreachable;
// after that, lost connections are redialled automatically.
func New(ctx context.Context, cfg Config) (*Transport, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:      cfg,
		log:      cfg.Logger.With("broker", redactURL(cfg.URL)),
		redacted: redactURL(cfg.URL),
		requests: make(chan *pubRequest, maxChunk),
		closing:  make(chan struct{}),
	}
	t.publisher = newLink(t, "publish")
	t.consumer = newLink(t, "consume")
	if _, err := t.publisher.get(ctx); err != nil {
		return nil, err
	}
	if _, err := t.consumer.get(ctx); err != nil {
		_ = t.Close()
		return nil, err
	}
	for range cfg.PublishChannels {
		t.goTracked(t.publishWorker)
	}
	return t, nil
}

// Dial is New for a process that may start before its broker: while the broker cannot be reached
// it tries again, after the waits of the transport's reconnections (ReconnectBackoffMin doubling
// up to ReconnectBackoffMax), logging each failure, until ctx ends. An invalid Config and a broker
// that answers and refuses (a wrong user or password, ACCESS_REFUSED; a certificate that does not
// verify) fail at once, as waiting would not change them.
func Dial(ctx context.Context, cfg Config) (*Transport, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for n := 1; ; n++ {
		t, err := New(ctx, cfg)
		if err == nil || Refused(err) || ctx.Err() != nil {
			return t, err
		}
		wait := backoff(cfg, n)
		cfg.Logger.Warn("RabbitMQ is not reachable yet; retrying", "broker", redactURL(cfg.URL), "attempt", n, "retry_in", wait, "err", err)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("gave up waiting for RabbitMQ: %w (last error: %v)", ctx.Err(), err)
		case <-timer.C:
		}
	}
}

// Refused reports whether err is the answer of a server that was reached and refused who we are:
// RabbitMQ's ACCESS_REFUSED (a wrong user or password), or a TLS certificate that does not
// verify. Waiting does not change that answer.
func Refused(err error) bool {
	var amqpErr *amqp.Error
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return (errors.As(err, &amqpErr) && amqpErr.Code == amqp.AccessRefused) ||
		errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}

// Close closes the connections and waits for the transport's goroutines. Channels returned by
// Consume are closed, and deliveries not yet settled are requeued by the broker (settling them
// returns transport.ErrStale). Close is idempotent; it reports only failures to close cleanly,
// which leave nothing behind.
func (t *Transport) Close() error {
	var err error
	t.once.Do(func() {
		t.mu.Lock()
		t.closed = true
		close(t.closing)
		t.mu.Unlock()
		err = errors.Join(t.publisher.close(), t.consumer.close())
		t.wg.Wait()
	})
	return err
}

// goTracked runs f in a goroutine that Close waits for, unless the transport is closed.
func (t *Transport) goTracked(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

func (t *Transport) isClosed() bool {
	select {
	case <-t.closing:
		return true
	default:
		return false
	}
}

// untilClosed returns a context that is also cancelled when the transport closes, so a dial or
// wait on behalf of a long-lived caller context does not hold up Close.
func (t *Transport) untilClosed(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-t.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel()
		<-done
	}
}

// dial opens one AMQP connection named after role. ctx bounds the TCP connect and the handshake.
func (t *Transport) dial(ctx context.Context, role string) (*amqp.Connection, error) {
	ctx, cancel := t.untilClosed(ctx)
	defer cancel()
	deadline := time.Now().Add(t.cfg.DialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(t.cfg.ConnectionName + " " + role)
	tlsCfg, err := t.cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("connect to RabbitMQ at %s (%s connection): %w", t.redacted, role, err)
	}
	var stopWatch func()
	conn, err := amqp.DialConfig(t.cfg.URL, amqp.Config{
		Heartbeat:       t.cfg.Heartbeat,
		Properties:      props,
		Locale:          "en_US",
		TLSClientConfig: tlsCfg,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Deadline: deadline}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The handshake does not observe ctx: a deadline bounds it, and ending ctx pulls the
			// deadline in. amqp091-go clears the deadline once the connection is open.
			if err := c.SetDeadline(deadline); err != nil {
				_ = c.Close()
				return nil, err
			}
			stopWatch = afterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
			return c, nil
		},
	})
	if stopWatch != nil {
		stopWatch()
	}
	if err != nil {
		if t.isClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("connect to RabbitMQ at %s (%s connection): %w", t.redacted, role, t.explainDialError(err, tlsCfg))
	}
	return conn, nil
}

// explainDialError says what to check when the AMQP handshake failed in ways amqp091-go reports
// without a cause: a plain client on a TLS port reads the broker's TLS alert as a bad frame, and
// a TLS client without the certificate the broker requires may see the connection closed (with
// TLS 1.3 the broker's refusal can arrive after the client's handshake has ended).
func (t *Transport) explainDialError(err error, tlsCfg *tls.Config) error {
	var amqpErr *amqp.Error
	if tlsCfg == nil && errors.As(err, &amqpErr) && (amqpErr.Code == amqp.FrameError || amqpErr.Code == amqp.ChannelError) {
		return fmt.Errorf("%w (the broker did not speak AMQP: if this is a TLS port, use amqps://)", err)
	}
	if tlsCfg == nil || !closedByPeer(err) {
		return err
	}
	switch {
	case len(tlsCfg.Certificates) == 0 && tlsCfg.GetClientCertificate == nil:
		return fmt.Errorf("%w (the broker closed the connection during the handshake: if it requires a client certificate, give the URL's certfile and keyfile)", err)
	}
	return fmt.Errorf("%w (the broker closed the connection during the handshake: check that it accepts this client certificate)", err)
}

// closedByPeer reports whether err says that the broker ended the connection.
func closedByPeer(err error) bool {
	for _, target := range []error{amqp.ErrClosed, io.EOF, io.ErrUnexpectedEOF, syscall.ECONNRESET, syscall.EPIPE} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// interruptible tears down the connection of s if ctx ends before stop is called. amqp091-go's
// RPCs and frame writes do not observe contexts; on a healthy connection they take microseconds,
// so still being inside one when the caller's context ends means the broker stopped reading (a
// resource alarm) or the link is dead, and closing the socket is the only way to hand control
// back to the caller on time.
func (t *Transport) interruptible(ctx context.Context, s *session, what string) (stop func()) {
	return afterFunc(ctx, func() {
		t.log.Warn("amqp call outlived its context; closing the connection",
			"call", what, "connection", s.role, "generation", s.gen)
		_ = s.conn.CloseDeadline(time.Now())
	})
}

// afterFunc is context.AfterFunc whose stop also waits for f when f has already started, so no
// goroutine outlives its caller.
func afterFunc(ctx context.Context, f func()) (stop func()) {
	done := make(chan struct{})
	stopAF := context.AfterFunc(ctx, func() {
		defer close(done)
		f()
	})
	return func() {
		if !stopAF() {
			<-done
		}
	}
}

// session is one open connection of a link.
type session struct {
	conn *amqp.Connection
	role string
	gen  uint64 // 1 for the link's first connection, then one more per reconnection

	mu          sync.Mutex
	blocked     bool
	blockReason string
	exchanges   map[string]bool // exchanges seen to exist through this connection
}

// blockedErr returns a non-nil error wrapping ErrBlocked while the broker blocks the connection.
func (s *session) blockedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.blocked {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrBlocked, s.blockReason)
}

func (s *session) setBlocked(b amqp.Blocking) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocked = b.Active
	s.blockReason = b.Reason
}

// link is a connection role ("publish", "consume") whose connection is redialled on demand
// after it is lost, at most once per backoff interval.
type link struct {
	t    *Transport
	role string
	// dialing is a one-slot semaphore: one dial at a time, and waiters still honour their ctx.
	dialing chan struct{}

	mu       sync.Mutex
	cur      *session
	gen      uint64
	closed   bool
	failures int       // consecutive failed dials
	retryAt  time.Time // no dial before this, after a failure
	lastErr  error
}

func newLink(t *Transport, role string) *link {
	return &link{t: t, role: role, dialing: make(chan struct{}, 1)}
}

// live returns the current session when its connection is open.
func (l *link) live() (*session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if l.cur != nil && !l.cur.conn.IsClosed() {
		return l.cur, nil
	}
	return nil, nil
}

// get returns the open connection, dialling a new one if the last was lost. Within the backoff
// interval after a failed dial it fails fast with the last dial error instead of dialling.
func (l *link) get(ctx context.Context) (*session, error) {
	if s, err := l.live(); s != nil || err != nil {
		return s, err
	}
	select {
	case l.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the %s connection to %s: %w", l.role, l.t.redacted, ctx.Err())
	}
	defer func() { <-l.dialing }()
	if s, err := l.live(); s != nil || err != nil {
		return s, err
	}

	l.mu.Lock()
	if wait := time.Until(l.retryAt); wait > 0 {
		err := fmt.Errorf("%s connection to %s is down, next attempt in %s: %w",
			l.role, l.t.redacted, wait.Round(time.Millisecond), l.lastErr)
		l.mu.Unlock()
		return nil, err
	}
	previous := l.cur
	l.mu.Unlock()

	conn, err := l.t.dial(ctx, l.role)

	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, ErrClosed) {
			// Only the broker's failures count towards backoff, not the caller giving up.
			l.failures++
			l.retryAt = time.Now().Add(backoff(l.t.cfg, l.failures))
			l.lastErr = err
		}
		return nil, err
	}
	if l.closed {
		// Close ran while we dialled; nobody else will close this connection.
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		return nil, ErrClosed
	}
	l.failures, l.retryAt, l.lastErr = 0, time.Time{}, nil
	l.gen++
	s := &session{conn: conn, role: l.role, gen: l.gen}
	l.cur = s
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	closes := conn.NotifyClose(make(chan *amqp.Error, 1))
	// Registered under l.mu with l.closed false, so this happens before Close's wg.Wait.
	l.t.mu.Lock()
	l.t.wg.Add(1)
	l.t.mu.Unlock()
	go func() {
		defer l.t.wg.Done()
		l.watch(s, blocks, closes)
	}()
	if previous != nil {
		l.t.log.Info("amqp connection re-established", "connection", l.role, "generation", s.gen)
	}
	return s, nil
}

// watch records connection.blocked notifications and logs the loss of the connection. It returns
// when amqp091-go closes both notification channels, which it does when the connection ends.
func (l *link) watch(s *session, blocks <-chan amqp.Blocking, closes <-chan *amqp.Error) {
	for blocks != nil || closes != nil {
		select {
		case b, ok := <-blocks:
			if !ok {
				blocks = nil
				continue
			}
			s.setBlocked(b)
			if b.Active {
				l.t.log.Warn("broker blocked the connection", "connection", l.role, "reason", b.Reason)
			} else {
				l.t.log.Info("broker unblocked the connection", "connection", l.role)
			}
		case e, ok := <-closes:
			if !ok {
				closes = nil
				continue
			}
			l.t.log.Warn("amqp connection lost", "connection", l.role, "generation", s.gen, "error", e)
		}
	}
}

// close closes the current connection and refuses further dials.
func (l *link) close() error {
	l.mu.Lock()
	l.closed = true
	s := l.cur
	l.mu.Unlock()
	if s == nil {
		return nil
	}
	if err := s.conn.CloseDeadline(time.Now().Add(closeTimeout)); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("close %s connection to %s: %w", l.role, l.t.redacted, err)
	}
	return nil
}

// backoff returns the wait after the n-th consecutive failure: ReconnectBackoffMin doubled per
// failure, capped at ReconnectBackoffMax, minus up to 20% jitter so that many processes that lost
// the broker together do not all come back in the same instant.
func backoff(cfg Config, n int) time.Duration {
	d := cfg.ReconnectBackoffMin
	for i := 1; i < n && d < cfg.ReconnectBackoffMax; i++ {
		d *= 2
	}
	d = min(d, cfg.ReconnectBackoffMax)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}
