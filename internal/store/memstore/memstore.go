// Package memstore is an in-memory store.Store for tests: it lets the engine, the server and the
// outbox relay be unit-tested in milliseconds, without PostgreSQL. It is not for production: it
// keeps nothing across restarts and shares nothing between processes.
//
// It passes the conformance suite of internal/store/storetest and behaves as pgstore does
// wherever a caller can tell: the same sentinel errors (a NUL in text or \u0000 in a JSON state
// is store.ErrInvalidData), row locks held while a mutate function runs, SKIP LOCKED claims of due
// rows, compare-and-set on versions, messages written to the outbox with the rows or not at all,
// outbox leases, keyset listing. Rows are kept encoded as PostgreSQL keeps them (states as jsonb
// text, times at the microsecond) and decoded afresh on every read, so a caller never shares
// memory with the stored state, and a state that does not survive a JSON round trip fails here as
// it does there.
//
// Config.Clock stands in for the database's clock, so that a test can make timers and leases
// fall due without sleeping, and Config.MaxConns models a connection pool, so that a test can
// show that a mutate function calling the store deadlocks a pool of one.
//
// Where it knowingly differs from pgstore:
//   - every method reports a value PostgreSQL refuses as store.ErrInvalidData, as the store
//     package asks; pgstore does so only in mutations;
//   - DeleteSoon deletes at once, so FlushDeletes has nothing to do;
//   - a call reads the clock once, so outbox rows are stamped with the time fn receives, where
//     PostgreSQL stamps them with the transaction's start;
//   - ListDefinitions orders names bytewise, PostgreSQL by the database's collation.
package memstore

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
)

// Config configures a Store.
type Config struct {
	// Clock is the database's clock: the time Build and mutate functions receive, that rows are
	// stamped with, that wake_at, leases and retention are compared with. It is read once per
	// call (per attempt of a retried mutation), like PostgreSQL's now(), and truncated to the
	// microsecond like a timestamptz.
	// Default time.Now. A test passes a fake clock and advances it to make timers and outbox
	// leases fall due without sleeping.
	Clock func() time.Time
	// OutboxLease is how long the writer or claimer of an outbox row owns it before another
	// relay may claim it: the outbox's one lease. Default 5s, as pgstore.
	OutboxLease time.Duration
	// MaxConns, when positive, models a connection pool of that size: every call holds one
	// connection for its whole duration, waiting for a free one and giving up with the context's
	// error when the context ends first. The mutations and CreateSagas and CreateTx hold theirs
	// while the caller's function runs, so a function that calls the store needs a second one.
	// Lease and DeleteSoon take none. 0, the default, means unlimited; less is taken as 0.
	MaxConns int
}

// WithDefaults returns c with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.OutboxLease == 0 {
		c.OutboxLease = 5 * time.Second
	}
	if c.MaxConns < 0 {
		c.MaxConns = 0
	}
	return c
}

// maxConflictRetries is how many more times a mutation runs after it failed with
// store.ErrConflict: pgstore's default MaxTxRetries, so that a mutate function runs as often.
const maxConflictRetries = 5

// Store is the in-memory store. It is safe for concurrent use.
type Store struct {
	cfg Config
	// conns holds a token per connection in use; nil when MaxConns is 0.
	conns chan struct{}

	// mu guards the tables and the row locks. It is held only to read or write them, never
	// while a caller's function runs or while a call waits.
	mu     sync.Mutex
	defs   map[string][]definitionRow // by name; the version is the index + 1
	sagas  *table[*store.Saga]
	txs    *table[*store.Tx]
	outbox outboxTable
}

var (
	_ store.Store          = (*Store)(nil)
	_ store.DeferredDelete = outboxView{}
)

// New returns an empty store.
func New(cfg Config) *Store {
	cfg = cfg.WithDefaults()
	s := &Store{
		cfg:    cfg,
		defs:   map[string][]definitionRow{},
		sagas:  newTable(sagaCodec),
		txs:    newTable(txCodec),
		outbox: outboxTable{rows: map[int64]*outboxRow{}},
	}
	if cfg.MaxConns > 0 {
		s.conns = make(chan struct{}, cfg.MaxConns)
	}
	return s
}

// Outbox returns the outbox view of the store. It also implements store.DeferredDelete.
func (s *Store) Outbox() store.Outbox { return outboxView{s} }

// acquire takes a connection for one call, waiting for a free one when MaxConns are in use, and
// returns the function that gives it back. Like a pool, it fails at once when ctx has ended.
func (s *Store) acquire(ctx context.Context) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.conns == nil {
		return func() {}, nil
	}
	select {
	case s.conns <- struct{}{}:
		return func() { <-s.conns }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// now reads the database clock as PostgreSQL would return it.
func (s *Store) now() time.Time {
	return dbTime(s.cfg.Clock())
}

// compareIDs orders ids as PostgreSQL orders uuids: bytewise.
func compareIDs(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }
