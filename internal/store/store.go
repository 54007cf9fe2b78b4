// Package store is the seam between the coordinator and its database. pgstore implements it over
// PostgreSQL with pgx, memstore in memory for unit tests, and storetest is the conformance suite
// both pass. Every method that changes a saga or a transaction also writes the messages the
// change causes into the outbox in the same transaction, so nothing is published that was not
// committed and nothing committed is left unpublished.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/transport"
	"github.com/sagacoord/sagacoord/twopc"
)

// Sentinel errors; implementations translate driver errors to these.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict means an optimistic version check failed: someone else changed the row.
	ErrConflict = errors.New("concurrent update")
	// ErrInvalidData means the database refused a value (a NUL in text, say): retrying the
	// same write cannot succeed.
	ErrInvalidData = errors.New("the database refused a value")
)

// Saga is one stored saga.
type Saga struct {
	ID                uuid.UUID
	DefinitionName    string
	DefinitionVersion int
	// State holds the status, the input and the steps.
	State *saga.State
	// RequestHash identifies the StartSaga request that created the saga (idempotency).
	RequestHash string
	Version     int64
	WakeAt      time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
	FinishedAt  time.Time
}

// OutboxRow is a message waiting in the outbox.
type OutboxRow struct {
	ID int64
	transport.Outgoing
	Attempts int
}

// DefinitionFilter selects definitions for ListDefinitions; the zero filter selects all.
type DefinitionFilter struct {
	// AfterName continues a listing after this name (the previous page's last).
	AfterName string
	// Limit bounds the definitions returned; 0 means no bound.
	Limit int
}

// ListFilter selects sagas for ListSagas.
type ListFilter struct {
	Status     saga.Status
	Definition string
	// DefinitionVersion, when positive, selects that version of Definition only.
	DefinitionVersion int
	// CreatedFrom and CreatedBefore, when set, bound the creation time: from (inclusive) and
	// before (exclusive).
	CreatedFrom, CreatedBefore time.Time
	// OldestFirst lists oldest first (After then continues after the previous page's last,
	// towards the newer).
	OldestFirst bool
	Limit       int
	// After continues a listing after this saga (from the previous page's last element).
	AfterCreatedAt time.Time
	AfterID        uuid.UUID
}

// Changed is what a mutate function decided for one row (a saga or a transaction): the row,
// changed in place, and the messages committed to the outbox with it.
type Changed[T any] struct {
	Row      T
	Messages []transport.Outgoing
}

// Change is a changed saga.
type Change = Changed[*Saga]

// MutateFunc receives the locked rows (sagas or transactions) and the database time, changes the
// rows it wants to (in place) and returns one Changed per changed row. It may run again if the
// transaction is retried, so it must not have effects outside the rows it is given, and it must
// do no I/O: the store holds a connection and row locks while it runs.
type MutateFunc[T any] func(now time.Time, rows []T) ([]Changed[T], error)

// NewSaga is one saga for CreateSagas to create.
type NewSaga struct {
	ID uuid.UUID
	// Build returns the saga and its first messages, given the database time.
	Build func(now time.Time) (Change, error)
}

// Created is the outcome of one NewSaga.
type Created struct {
	// Saga is the new saga or, when Created is false, the existing one with that id.
	Saga    *Saga
	Created bool
	// Err is this saga's Build error.
	Err error
}

// Definitions stores saga definitions.
type Definitions interface {
	// RegisterDefinition stores def (normalized) as a new version, with def.RegisteredBy, unless
	// content identical to the latest version is stored. It returns the stored definition (an
	// existing one keeps its own RegisteredBy) and whether it was created.
	RegisterDefinition(ctx context.Context, def saga.Definition) (saga.Definition, bool, error)
	// GetDefinition returns a version, or the latest when version is 0.
	GetDefinition(ctx context.Context, name string, version int) (saga.Definition, error)
	// ListDefinitions returns the latest version of every definition the filter selects, by name.
	ListDefinitions(ctx context.Context, f DefinitionFilter) ([]saga.Definition, error)
}

// Sagas stores sagas.
type Sagas interface {
	// CreateSagas inserts, in one transaction, the saga each NewSaga builds, with its messages,
	// unless a saga with the same id exists: then that one's result holds the existing saga and
	// Created false, and nothing is written for it. An error of one Build fails only that one.
	CreateSagas(ctx context.Context, batch []NewSaga) ([]Created, []OutboxRow, error)
	GetSaga(ctx context.Context, id uuid.UUID) (*Saga, error)
	ListSagas(ctx context.Context, f ListFilter) ([]*Saga, error)
	// CountUnfinished counts the sagas of a definition that are RUNNING, COMPENSATING or
	// FAILED, by version and status; versions without any are absent.
	CountUnfinished(ctx context.Context, definition string) (map[int]map[saga.Status]int, error)
	// Mutate locks the sagas with the given ids, passes those that exist to fn, and writes back
	// fn's changes and their messages in one transaction. It returns the outbox rows written.
	Mutate(ctx context.Context, ids []uuid.UUID, fn MutateFunc[*Saga]) ([]OutboxRow, error)
	// MutateDue is Mutate for at most limit sagas whose wake_at has passed, skipping sagas other
	// instances hold locked. It returns how many sagas it claimed.
	MutateDue(ctx context.Context, limit int, fn MutateFunc[*Saga]) (int, []OutboxRow, error)
}

// Store is everything the coordinator keeps in its database.
type Store interface {
	Definitions
	Sagas
	Transactions
	// Outbox returns the outbox of the same database.
	Outbox() Outbox
	// DeleteFinished deletes at most limit sagas and at most limit transactions that finished
	// more than olderThan ago, and returns how many it deleted. When notices is not nil, it is
	// called with the deleted rows and the messages it returns go to the outbox in the same
	// transaction; its error undoes the deletion.
	DeleteFinished(ctx context.Context, olderThan time.Duration, limit int, notices Notices) (int, error)
	// Stats counts the sagas and transactions that are not finished, for the gauges of
	// docs/observability.md.
	Stats(ctx context.Context) (Stats, error)
}

// Finished is a saga or a transaction that DeleteFinished deleted: one that reached a final state
// (COMPLETED or COMPENSATED, COMMITTED or ABORTED) and was kept for the retention period.
type Finished struct {
	ID uuid.UUID
	// Saga tells a saga from a transaction.
	Saga bool
	// Participants are the participants it could have sent commands to: those of the saga's
	// definition, or the transaction's, without repeats.
	Participants []string
}

// Notices turns the rows DeleteFinished deleted into the messages that announce it
// (internal/maintenance.FinalNotices).
type Notices func([]Finished) ([]transport.Outgoing, error)

// Notifier is a Store that tells each instance which rows the others changed, so that a watch
// of a saga need not poll for them. pgstore implements it with LISTEN/NOTIFY.
type Notifier interface {
	// Listen calls changed with the ids of the sagas (table "sagas") and transactions
	// ("transactions") that other instances changed, from the moment it listens until ctx ends.
	// listening is told true each time it (again) listens and false when it stops; changes made
	// while it does not listen are not told.
	Listen(ctx context.Context, changed func(table string, ids []uuid.UUID), listening func(bool))
}

// Stats counts unfinished work by state. A state with none is absent from its map.
type Stats struct {
	// Sagas by status: RUNNING, COMPENSATING and FAILED.
	Sagas map[saga.Status]Pending
	// Transactions by state: PREPARING, COMMITTING and ABORTING (in doubt).
	Transactions map[twopc.State]Pending
}

// Pending is how many rows are in one state and how long ago the oldest was created.
type Pending struct {
	Count     int
	OldestAge time.Duration
}

// Outbox is the relay's view of the outbox table.
type Outbox interface {
	// Lease is how long a row is owned by the instance that wrote or claimed it before another
	// may claim it: the outbox's one lease.
	Lease() time.Duration
	// ClaimExpired leases up to limit rows whose lease has lapsed, for Lease.
	ClaimExpired(ctx context.Context, limit int) ([]OutboxRow, error)
	// Delete removes rows the broker confirmed.
	Delete(ctx context.Context, ids []int64) error
	// Backlog returns the number of rows and the age of the oldest.
	Backlog(ctx context.Context) (int, time.Duration, error)
}

// DeferredDelete is an Outbox that can delete confirmed rows later, together with other work:
// the relay uses it when the outbox offers it. A row whose delete is lost (a crash) is published
// again once its lease lapses, which consumers deduplicate.
type DeferredDelete interface {
	// DeleteSoon hands over rows to delete; it does not wait.
	DeleteSoon(ids []int64)
	// FlushDeletes deletes every row handed over and not deleted yet.
	FlushDeletes(ctx context.Context) error
}

// Tx is one stored two-phase-commit transaction.
type Tx struct {
	ID uuid.UUID
	// Tx holds the state, the participants with their votes and acks, and the history.
	Tx          *twopc.Tx
	RequestHash string
	Version     int64
	WakeAt      time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
	FinishedAt  time.Time
}

// TxChange is a changed transaction.
type TxChange = Changed[*Tx]

// TxFilter selects transactions for ListTransactions.
type TxFilter struct {
	State          twopc.State
	Limit          int
	AfterCreatedAt time.Time
	AfterID        uuid.UUID
}

// Transactions stores two-phase-commit transactions, with the same guarantees as Sagas.
type Transactions interface {
	CreateTx(ctx context.Context, id uuid.UUID, build func(now time.Time) (TxChange, error)) (t *Tx, created bool, rows []OutboxRow, err error)
	GetTx(ctx context.Context, id uuid.UUID) (*Tx, error)
	ListTx(ctx context.Context, f TxFilter) ([]*Tx, error)
	MutateTx(ctx context.Context, ids []uuid.UUID, fn MutateFunc[*Tx]) ([]OutboxRow, error)
	MutateDueTx(ctx context.Context, limit int, fn MutateFunc[*Tx]) (int, []OutboxRow, error)
}
