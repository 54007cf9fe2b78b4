package memstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// row is one stored saga or transaction, as the columns of its table hold it. A zero time is
// NULL.
type row struct {
	id          uuid.UUID
	status      string
	requestHash string
	state       []byte // jsonb text
	version     int64
	wakeAt      time.Time
	createdAt   time.Time
	updatedAt   time.Time
	finishedAt  time.Time
	// Sagas only.
	defName    string
	defVersion int
	input      []byte // bytea NOT NULL: nil is NULL
}

// codec converts a table's rows (sagas or transactions) to and from what callers see.
type codec[T any] struct {
	// name is the table's, kind one row's, for errors.
	name, kind string
	// encode returns the columns of v, checking those a mutation writes (status, state, wake_at,
	// finished_at) as PostgreSQL would; checkInsert checks the others before an insert.
	encode      func(v T) (row, error)
	checkInsert func(r *row) error
	decode      func(r *row) (T, error)
	// head points at v's id, version and times, which the store keeps; ok is false for a nil v.
	head func(v T) (h head, ok bool)
}

// head points at the fields of a caller's saga or transaction that the store sets.
type head struct {
	id               *uuid.UUID
	version          *int64
	created, updated *time.Time
}

// headOf returns a codec's head from f, which points into a v that is not nil.
func headOf[V any](f func(v *V) head) func(v *V) (head, bool) {
	return func(v *V) (head, bool) {
		if v == nil {
			return head{}, false
		}
		return f(v), true
	}
}

// key returns v's id and version; ok is false for a nil v.
func (c codec[T]) key(v T) (id uuid.UUID, version int64, ok bool) {
	h, ok := c.head(v)
	if !ok {
		return uuid.Nil, 0, false
	}
	return *h.id, *h.version, true
}

// stamp records on v, the caller's, what a committed write did to its row; a zero created
// leaves its creation time alone.
func (c codec[T]) stamp(v T, id uuid.UUID, version int64, created, updated time.Time) {
	h, _ := c.head(v)
	*h.id, *h.version, *h.updated = id, version, updated
	if !created.IsZero() {
		*h.created = created
	}
}

var errNoState = errors.New("no state")

var sagaCodec = codec[*store.Saga]{
	name: "sagas",
	kind: "saga",
	encode: func(sg *store.Saga) (row, error) {
		if sg == nil || sg.State == nil {
			return row{}, errNoState
		}
		r := row{
			id: sg.ID, status: string(sg.State.Status), requestHash: sg.RequestHash,
			defName: sg.DefinitionName, defVersion: sg.DefinitionVersion, input: sg.State.Input,
		}
		return r, encodeState(&r, sg.State, sg.WakeAt, sg.FinishedAt)
	},
	checkInsert: func(r *row) error {
		if err := checkText("request_hash", r.requestHash); err != nil {
			return err
		}
		if err := checkText("definition_name", r.defName); err != nil {
			return err
		}
		if r.input == nil {
			return errors.New(`null value in column "input" of relation "sagas" violates not-null constraint`)
		}
		r.input = append([]byte{}, r.input...)
		return nil
	},
	decode: func(r *row) (*store.Saga, error) {
		st := &saga.State{}
		if err := json.Unmarshal(r.state, st); err != nil {
			return nil, fmt.Errorf("decode state of saga %s: %w", r.id, err)
		}
		st.ID, st.Status, st.Input = r.id.String(), saga.Status(r.status), append(json.RawMessage{}, r.input...)
		return &store.Saga{
			ID: r.id, DefinitionName: r.defName, DefinitionVersion: r.defVersion, State: st,
			RequestHash: r.requestHash, Version: r.version,
			WakeAt: r.wakeAt, CreatedAt: r.createdAt, UpdatedAt: r.updatedAt, FinishedAt: r.finishedAt,
		}, nil
	},
	head: headOf(func(sg *store.Saga) head { return head{&sg.ID, &sg.Version, &sg.CreatedAt, &sg.UpdatedAt} }),
}

var txCodec = codec[*store.Tx]{
	name: "transactions",
	kind: "transaction",
	encode: func(t *store.Tx) (row, error) {
		if t == nil || t.Tx == nil {
			return row{}, errNoState
		}
		r := row{id: t.ID, status: string(t.Tx.State), requestHash: t.RequestHash}
		return r, encodeState(&r, t.Tx, t.WakeAt, t.FinishedAt)
	},
	checkInsert: func(r *row) error { return checkText("request_hash", r.requestHash) },
	decode: func(r *row) (*store.Tx, error) {
		tx := &twopc.Tx{}
		if err := json.Unmarshal(r.state, tx); err != nil {
			return nil, fmt.Errorf("decode state of transaction %s: %w", r.id, err)
		}
		tx.ID, tx.State = r.id.String(), twopc.State(r.status)
		return &store.Tx{
			ID: r.id, Tx: tx, RequestHash: r.requestHash, Version: r.version,
			WakeAt: r.wakeAt, CreatedAt: r.createdAt, UpdatedAt: r.updatedAt, FinishedAt: r.finishedAt,
		}, nil
	},
	head: headOf(func(t *store.Tx) head { return head{&t.ID, &t.Version, &t.CreatedAt, &t.UpdatedAt} }),
}

// encodeState fills the columns a mutation writes: the state as jsonb, the status, the times.
// A state json cannot encode is a plain error, as in pgstore; what PostgreSQL refuses is
// store.ErrInvalidData.
func encodeState(r *row, state any, wakeAt, finishedAt time.Time) error {
	doc, err := json.Marshal(state)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if r.state, err = jsonb(doc); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := checkText("status", r.status); err != nil {
		return err
	}
	if r.wakeAt, err = storedTime("wake_at", wakeAt); err != nil {
		return err
	}
	r.finishedAt, err = storedTime("finished_at", finishedAt)
	return err
}
