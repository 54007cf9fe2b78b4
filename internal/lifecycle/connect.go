package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sagacoord/sagacoord/transport/amqptransport"
)

// Waits between the attempts of Connect: from connectFirstWait, doubling (with 20% jitter) up to
// connectMaxWait, so that a process notices within seconds that its dependency came back.
const (
	connectFirstWait = 250 * time.Millisecond
	connectMaxWait   = 10 * time.Second
)

// Connect calls connect until it succeeds, ctx ends, or it fails with an error marked by
// Permanent. A process that may start before its database or broker waits for them with it, the
// way an orchestrator expects of a service: each failure is logged as a warning, with what is
// unreachable, the attempt and the next wait. A permanent error (a malformed URL, a schema of
// the wrong version, or a service that answered and refused us) is returned at once, unwrapped.
func Connect(ctx context.Context, log *slog.Logger, what string, connect func(context.Context) error) error {
	attempt := 0
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempt++
		last = connect(ctx)
		if refused(last) {
			return struct{}{}, backoff.Permanent(last)
		}
		return struct{}{}, last
	},
		backoff.WithBackOff(&backoff.ExponentialBackOff{
			InitialInterval: connectFirstWait, RandomizationFactor: 0.2, Multiplier: 2, MaxInterval: connectMaxWait,
		}),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			log.Warn(what+" is not reachable yet; retrying", "attempt", attempt, "retry_in", next.Round(time.Millisecond), "err", err)
		}))
	if err != nil && ctx.Err() != nil && last != nil {
		return fmt.Errorf("gave up waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
	}
	return err
}

// Permanent marks an error that no retry can mend, for Connect to return at once.
func Permanent(err error) error { return backoff.Permanent(err) }

// refused reports whether err is the answer of a service that was reached and refused who we
// are: a wrong user or password (PostgreSQL's class 28, RabbitMQ's ACCESS_REFUSED) or a
// certificate that does not verify (amqptransport.Refused). Waiting does not change that answer;
// the operator must.
func refused(err error) bool {
	var pgErr *pgconn.PgError
	return (errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28")) || amqptransport.Refused(err)
}
