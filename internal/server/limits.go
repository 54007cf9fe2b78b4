package server

import (
	"context"
	"math"
	"net"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sagacoord/sagacoord/internal/auth"
)

// Limits bounds what one caller may ask of the API: the caller's identity
// (auth.FromContext) or, without authentication, the host it calls from. internal/coordinator
// fills the defaults; a zero or negative field turns its limit off.
type Limits struct {
	// Rate is the calls per second a caller may make on average; a watch counts as one call.
	Rate float64
	// Burst is how many calls a caller may make at once, after being idle.
	Burst int
	// WatchesPerCaller bounds one caller's open WatchSaga and WatchTransaction streams.
	WatchesPerCaller int
	// Watches bounds the open watch streams of all callers together.
	Watches int
}

// maxIdleBuckets is how many callers' buckets the limiter keeps before it forgets those that
// are full again (idle long enough to have their whole burst back).
const maxIdleBuckets = 10_000

// Limiter enforces Limits with a token bucket and a count of open watches per caller. Its
// ServerOptions must come after the options of the interceptors that authenticate callers.
type Limiter struct {
	limits Limits
	now    func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	watches map[string]int
	open    int
}

// bucket holds a caller's tokens as of a time.
type bucket struct {
	tokens float64
	at     time.Time
}

// NewLimiter returns a limiter of l.
func NewLimiter(l Limits) *Limiter {
	return &Limiter{limits: l, now: time.Now, buckets: map[string]*bucket{}, watches: map[string]int{}}
}

// caller names the caller of ctx: its identity, or the host of its address.
func caller(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok && id.Name != "" {
		return "identity:" + id.Name
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		host, _, err := net.SplitHostPort(p.Addr.String())
		if err != nil {
			host = p.Addr.String()
		}
		return "host:" + host
	}
	return "unknown"
}

// take takes a token of who's bucket; when none is left it returns how long until one is.
func (l *Limiter) take(who string) (time.Duration, bool) {
	if l.limits.Rate <= 0 || l.limits.Burst <= 0 {
		return 0, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now, burst := l.now(), float64(l.limits.Burst)
	b, ok := l.buckets[who]
	if !ok {
		if len(l.buckets) >= maxIdleBuckets {
			l.forgetFull(now)
		}
		b = &bucket{tokens: burst, at: now}
		l.buckets[who] = b
	}
	b.tokens = math.Min(burst, b.tokens+now.Sub(b.at).Seconds()*l.limits.Rate)
	b.at = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / l.limits.Rate * float64(time.Second)), false
	}
	b.tokens--
	return 0, true
}

// forgetFull drops the buckets that have refilled: a new one starts full anyway. l.mu is held.
func (l *Limiter) forgetFull(now time.Time) {
	for who, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.limits.Rate >= float64(l.limits.Burst) {
			delete(l.buckets, who)
		}
	}
}

// openWatch counts a watch of who, or refuses it; release ends it.
func (l *Limiter) openWatch(who string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.limits.Watches; n > 0 && l.open >= n {
		return nil, status.Errorf(codes.ResourceExhausted, "%d watch streams are open on this coordinator, the limit; retry later, or poll with GetSaga or GetTransaction", n)
	}
	if n := l.limits.WatchesPerCaller; n > 0 && l.watches[who] >= n {
		return nil, status.Errorf(codes.ResourceExhausted, "this caller has %d watch streams open, the limit; end one first", n)
	}
	l.open++
	l.watches[who]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.open--
		if l.watches[who]--; l.watches[who] <= 0 {
			delete(l.watches, who)
		}
	}, nil
}

// exhausted is the error of a call over the rate, with the wait in a RetryInfo.
func exhausted(wait time.Duration) error {
	st := status.Newf(codes.ResourceExhausted, "too many calls from this caller; retry after %s", wait.Round(time.Millisecond))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = d
	}
	return st.Err()
}

// ServerOptions returns the interceptors that apply the limits to every call and stream.
func (l *Limiter) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if wait, ok := l.take(caller(ctx)); !ok {
				return nil, exhausted(wait)
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			who := caller(ss.Context())
			if wait, ok := l.take(who); !ok {
				return exhausted(wait)
			}
			release, err := l.openWatch(who)
			if err != nil {
				return err
			}
			defer release()
			return h(srv, ss)
		}),
	}
}

// Take spends one call of who's budget, the same budget as the API's (who is "identity:NAME" or
// "host:HOST", as the API names its callers); when none is left it returns how long until one
// is. The operator console (internal/console) uses it, so that a caller's pages and API calls
// share one rate.
func (l *Limiter) Take(who string) (time.Duration, bool) { return l.take(who) }

// OpenWatch counts a long-lived stream of who against the watch limits, or refuses it; release
// ends it. The console's event streams use it.
func (l *Limiter) OpenWatch(who string) (release func(), err error) { return l.openWatch(who) }
