package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/outbox"
	"github.com/sagacoord/sagacoord/transport"
)

// MaxPayloadLimit caps Config.MaxPayloadBytes, and the payloads of one transaction together, so
// that every saga and transaction fits in a response (server.MaxPageBytes).
const MaxPayloadLimit = 1 << 20

// Config configures an Engine. A zero field takes the default that WithDefaults gives it; the
// coordinator's flags read their defaults from there too.
type Config struct {
	Store     store.Store
	Transport transport.Transport
	Relay     *outbox.Relay
	Logger    *slog.Logger
	// MaxPayloadBytes bounds a saga's input and a transaction participant's payload; at most
	// MaxPayloadLimit. Default 256 KiB.
	MaxPayloadBytes int
	// ReplyPrefetch bounds unacknowledged replies held by this instance.
	ReplyPrefetch int
	// ReplyBatch is the most replies applied in one transaction.
	ReplyBatch int
	// ReplyWorkers is the number of goroutines applying reply batches. While one batch commits,
	// replies gather for the next, so one worker gives the fewest transactions per saga; more
	// overlap the round trips of their batches, which helps when the database is far away.
	ReplyWorkers int
	// StartBatch is the most StartSaga calls written in one transaction.
	StartBatch int
	// StartWorkers is the number of start batches written concurrently (as ReplyWorkers).
	StartWorkers int
	// MaxPendingStarts bounds StartSaga calls waiting for a batch; beyond it StartSaga fails
	// with ResourceExhausted instead of queueing without bound.
	MaxPendingStarts int
	// MaxActiveSagas bounds the sagas RUNNING or COMPENSATING in the whole database: while at
	// least this many are, StartSaga fails with ResourceExhausted, so that offered load beyond
	// what the system completes is pushed back to the caller. The count is refreshed every
	// ActiveCountInterval, so the bound is approximate. Negative disables it.
	MaxActiveSagas int
	// ActiveCountInterval is how often the active sagas are counted.
	ActiveCountInterval time.Duration
	// TimerBatch is the most due sagas or transactions claimed in one transaction.
	TimerBatch int
	// TimerPoll is how often due timers are looked for when no timer of this instance is due
	// sooner.
	TimerPoll time.Duration
	// Retention is how long finished sagas and transactions are kept; older ones are deleted in
	// batches by any instance. Negative keeps them forever.
	Retention time.Duration
	// RetentionInterval is how often the deletion runs.
	RetentionInterval time.Duration
	// TracerProvider, when set, traces sagas and transactions; it must use
	// telemetry.IDGenerator. Nil turns tracing off at no cost.
	TracerProvider trace.TracerProvider
	// MeterProvider, when set, records the engine's metrics (docs/observability.md). Nil turns
	// them off.
	MeterProvider metric.MeterProvider
	// Test holds hooks for tests; production leaves it zero.
	Test TestConfig
}

// TestConfig holds the engine's test hooks.
type TestConfig struct {
	// BeforeCommitDecision is called in the transaction that logs a 2PC COMMIT decision (the
	// last YES vote arrived), before that transaction commits. The chaos suite kills the
	// coordinator here: every vote YES, no decision logged.
	BeforeCommitDecision func(txID uuid.UUID)
}

// WithDefaults returns c with every zero field set to its default. It is the one place the
// engine's defaults are written.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&c.MaxPayloadBytes, 256<<10)
	setDefault(&c.ReplyPrefetch, 1024)
	setDefault(&c.ReplyBatch, 256)
	setDefault(&c.ReplyWorkers, 1)
	setDefault(&c.StartBatch, 256)
	setDefault(&c.StartWorkers, 1)
	setDefault(&c.MaxPendingStarts, 4096)
	setDefault(&c.TimerBatch, 256)
	setDefault(&c.MaxActiveSagas, 10_000)
	setDefault(&c.ActiveCountInterval, time.Second)
	setDefault(&c.Retention, 7*24*time.Hour)
	setDefault(&c.RetentionInterval, time.Minute)
	setDefault(&c.TimerPoll, 100*time.Millisecond)
	return c
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// validate returns every problem of c at once.
func (c Config) validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("engine: Config.Store is required"))
	}
	if c.Transport == nil {
		errs = append(errs, errors.New("engine: Config.Transport is required"))
	}
	if c.Relay == nil {
		errs = append(errs, errors.New("engine: Config.Relay is required"))
	}
	if c.MaxPayloadBytes > MaxPayloadLimit {
		errs = append(errs, fmt.Errorf("engine: Config.MaxPayloadBytes is %d; the limit is %d, so that a saga fits in a list page", c.MaxPayloadBytes, MaxPayloadLimit))
	}
	return errors.Join(errs...)
}
