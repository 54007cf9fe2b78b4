package participant

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/transport"
)

// Defaults of Config.
const (
	DefaultSchema       = "sagacoord_participant"
	DefaultPrefetch     = 32
	DefaultRetryBackoff = 500 * time.Millisecond
	DefaultMaxBatch     = 1
)

// maxMaxBatch bounds Config.MaxBatch: every command of a group writes in at least one
// subtransaction, and PostgreSQL caches at most 64 subtransaction ids per backend.
const maxMaxBatch = 64

// Config configures a Worker. Zero fields take the defaults documented on each field (see
// WithDefaults).
type Config struct {
	// Name is the participant name: the routing key of its commands and the suffix of its queue
	// (protocol.ParticipantQueue). Required.
	Name string
	// Transport carries commands and replies. Required. The worker does not close it.
	Transport transport.Transport
	// SkipDeclare makes Start declare nothing on the broker: it only checks that the worker's
	// queue exists, and fails if it does not. It is for a broker user with least privilege,
	// allowed to read its queue and publish replies but not to declare (docs/security.md); a
	// coordinator then declares the topology and the queue, when a definition naming this
	// participant is registered. Default false: Start declares the topology and the queue, which
	// needs configure, write and read permissions on them.
	SkipDeclare bool
	// DB is the participant's own database: the barrier table lives there, and every handler
	// runs in a transaction of this pool. Required. The worker does not close it.
	DB *pgxpool.Pool
	// Schema holds the barrier table. Default DefaultSchema ("sagacoord_participant"). It must be
	// a plain lower-case SQL identifier.
	Schema string
	// Prefetch is the most unacknowledged commands the broker hands this worker at once from each
	// of its two queues (saga steps; two-phase-commit commands). Default DefaultPrefetch (32). The
	// broker counts messages: a bundle of commands from a coordinator run with --bundle-messages
	// counts once (docs/protocol.md §16). The worker reads bundles whatever its transport's
	// Config.Bundle, which makes it send its replies in bundles.
	Prefetch int
	// Concurrency is the number of handler goroutines, each holding at most one database
	// connection while it runs. Default Prefetch.
	Concurrency int
	// MaxBatch is the most saga step commands one handler goroutine decides in one local
	// transaction (group commit). When several commands are waiting, a goroutine takes up to
	// MaxBatch of them, runs each in a savepoint of its own of one barrier transaction, commits
	// once and publishes their replies together; a command that waits for none is decided alone.
	// 1 gives every command a transaction of its own. Default DefaultMaxBatch (1): grouping is
	// opt-in. At most 64; 8 is a good value for handlers that only touch this database.
	//
	// Groups form when commands wait for a goroutine, so set Concurrency below Prefetch (for
	// example prefetch 64, concurrency 4). Commands that arrive together are grouped even with
	// Concurrency equal to Prefetch, which is why the default is 1: with handlers that block (on
	// other services, or on rows a hung handler holds), a group holds every command and every
	// row lock of the group until its slowest handler is done.
	//
	// Why small: each command of a group holds a subtransaction for its barrier row and one for
	// its handler, plus any its handler nests, until the group commits. PostgreSQL caches at most
	// 64 subtransaction ids per backend (PGPROC_MAX_CACHED_SUBXIDS); a transaction with more
	// overflows the cache, and every snapshot in the whole server then gets slower. 8 commands
	// stay near 16-24. A larger group also holds the rows its handlers lock until its COMMIT, and
	// delays every reply of the group until its slowest handler is done; two groups that lock the
	// same rows in opposite orders deadlock. PostgreSQL's victim (a deadlock or serialization
	// failure in a grouped handler) is decided again alone after its group, after
	// deadlock_timeout (1s by default) has passed.
	// Two-phase-commit commands are always decided alone.
	MaxBatch int
	// HandlerTimeout bounds how long a saga step's handler runs: its context is cancelled after
	// HandlerTimeout or after the step's timeout that the command carries (timeout_ms), whichever
	// is shorter, counted from when the handler starts. By then the coordinator has given the
	// attempt up and retries or compensates it, so a handler still running only holds a
	// goroutine, a connection and its row locks; one that returns the context's error is
	// answered "retry" and leaves no effect. A two-phase-commit Prepare is bounded the same way
	// by the transaction's prepare timeout, which the PREPARE carries; one that returns the
	// context's error then votes NO (the coordinator has aborted by then). Commit and Abort get no
	// deadline: a decision must be applied in the end. Default 0: the command's timeout alone.
	// Negative: no deadline.
	HandlerTimeout time.Duration
	// LockWait bounds how long a command waits for its barrier row while another transaction
	// holds it: mostly a handler of the same step still running, or hung past its deadline, that
	// a compensation or a redelivery must wait for. Past it the command gives up (PostgreSQL's
	// lock_timeout, set for the barrier's statements only, never for the handler's): a saga step
	// replies "retry", so that the coordinator tries again after its back-off while the goroutine
	// and the connection serve other commands; a two-phase-commit command is requeued after
	// RetryBackoff. Default 0: the command's own timeout (timeout_ms), after which the
	// coordinator has given the attempt up anyway, and no bound for a command without one
	// (COMMIT, ABORT). Positive: at most that, and never past the command's timeout. Negative:
	// wait as long as the row is held.
	LockWait time.Duration
	// RetryBackoff is how long the worker waits before requeueing a command whose processing hit
	// a database or broker error (not a handler error), so an outage does not spin. Default
	// DefaultRetryBackoff (500ms).
	RetryBackoff time.Duration
	// Logger receives the worker's structured logs. Default slog.Default().
	Logger *slog.Logger
	// OnCommitted, when set, is called after a command's local transaction committed a new
	// barrier decision and before its reply is published (never for a duplicate answered from
	// the barrier, nor for a "retry" that was rolled back). It runs on the handler goroutine.
	// It exists for observability and fault injection: a process that dies here is entry 3 of
	// the failure catalogue (docs/guarantees.md), and its command is redelivered and answered
	// from the barrier.
	OnCommitted func(cmd *protocol.StepCommand, reply protocol.StepReply)
	// OnTxCommitted is OnCommitted for two-phase-commit commands (see Worker.HandleTx): called
	// after a PREPARE, COMMIT or ABORT committed its barrier decision, before the vote or ack is
	// published.
	OnTxCommitted func(cmd *protocol.TxCommand, reply protocol.TxReply)
	// QueryInterval is how often the worker looks for prepared transactions whose decision is
	// overdue (see PreparedSilence). Default DefaultQueryInterval (1s).
	QueryInterval time.Duration
	// PreparedSilence is how long a transaction may stay prepared here without news before the
	// worker asks the coordinator for the decision, and then how long it waits between two
	// questions. A question reaching a coordinator that has not decided yet makes it decide
	// ABORT, so keep it above the prepare timeouts your transactions use. Default
	// DefaultPreparedSilence (15s), above the coordinator's default prepare timeout (10s).
	PreparedSilence time.Duration
	// BarrierGrace is how long the barrier keeps the rows of a saga or transaction after a final
	// notice said the coordinator deleted it (docs/protocol.md §11); then the rows are deleted.
	// From the notice on, a late copy of one of its commands is acknowledged without effect or
	// reply. Default DefaultBarrierGrace (1h). Negative: the worker does not subscribe to final
	// notices, and the barrier keeps every row forever.
	BarrierGrace time.Duration
	// FinalHorizon is how long the worker remembers that a saga or transaction is final, which
	// is what refuses a late copy of its commands once its rows are gone; a copy older than
	// that, delivered later still, would run as new. Default DefaultFinalHorizon (30 days).
	// It must exceed BarrierGrace.
	FinalHorizon time.Duration
	// SweepInterval is how often the worker deletes what BarrierGrace and FinalHorizon let go.
	// Default DefaultSweepInterval (1m).
	SweepInterval time.Duration
	// TracerProvider, when set, continues each command's trace: a consumer span, child of the
	// command's traceparent, with the saga id (or transaction id), step, attempt and outcome; the
	// reply carries the span's context. Default nil: no spans, and the reply carries the
	// command's traceparent unchanged. Pass otel.GetTracerProvider() to use the global one.
	TracerProvider trace.TracerProvider
	// MeterProvider, when set, records the handler duration histogram and the outcome counters
	// of docs/observability.md. Default nil: no metrics.
	//
	// The SDK uses the OpenTelemetry API alone: it links no OpenTelemetry SDK, exporter, gRPC or
	// Prometheus package, so the application chooses and sets up its own providers.
	MeterProvider metric.MeterProvider
}

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.Concurrency == 0 {
		c.Concurrency = c.Prefetch
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.QueryInterval == 0 {
		c.QueryInterval = DefaultQueryInterval
	}
	if c.PreparedSilence == 0 {
		c.PreparedSilence = DefaultPreparedSilence
	}
	if c.BarrierGrace == 0 {
		c.BarrierGrace = DefaultBarrierGrace
	}
	if c.FinalHorizon == 0 {
		c.FinalHorizon = DefaultFinalHorizon
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	return c
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c Config) validate() error {
	var errs []error
	if err := protocol.CheckName(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("participant: Config.Name %w: set the participant name its commands are routed by", err))
	}
	if c.Transport == nil {
		errs = append(errs, errors.New("participant: Config.Transport is nil: pass a transport, e.g. amqptransport.New"))
	}
	if c.DB == nil {
		errs = append(errs, errors.New("participant: Config.DB is nil: pass a pgxpool.Pool on the participant's database"))
	}
	if !identRE.MatchString(c.Schema) {
		errs = append(errs, fmt.Errorf("participant: Config.Schema %q is not a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes)", c.Schema))
	}
	if c.Prefetch < 1 {
		errs = append(errs, fmt.Errorf("participant: Config.Prefetch %d must be at least 1", c.Prefetch))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("participant: Config.Concurrency %d must be at least 1", c.Concurrency))
	}
	if c.MaxBatch < 1 || c.MaxBatch > maxMaxBatch {
		errs = append(errs, fmt.Errorf("participant: Config.MaxBatch %d must be between 1 and %d (0 takes the default, %d): PostgreSQL caches only 64 subtransactions per transaction", c.MaxBatch, maxMaxBatch, DefaultMaxBatch))
	}
	if c.RetryBackoff < 0 {
		errs = append(errs, fmt.Errorf("participant: Config.RetryBackoff %v must not be negative", c.RetryBackoff))
	}
	if c.QueryInterval < 0 || c.PreparedSilence < 0 {
		errs = append(errs, fmt.Errorf("participant: Config.QueryInterval %v and Config.PreparedSilence %v must not be negative", c.QueryInterval, c.PreparedSilence))
	}
	if c.keepsFinals() && (c.FinalHorizon <= c.BarrierGrace || c.SweepInterval < 0) {
		errs = append(errs, fmt.Errorf("participant: Config.FinalHorizon %v must exceed Config.BarrierGrace %v, and Config.SweepInterval %v must not be negative", c.FinalHorizon, c.BarrierGrace, c.SweepInterval))
	}
	return errors.Join(errs...)
}
