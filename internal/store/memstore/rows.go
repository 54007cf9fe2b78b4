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
	// key returns v's id and version; ok is false for a nil v.
	key func(v T) (id uuid.UUID, version int64, ok bool)
	// stamp records on v, the caller's, what a committed write did to its row.
	stamp func(v T, id uuid.UUID, version int64, created, updated time.Time)
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
	key: func(sg *store.Saga) (uuid.UUID, int64, bool) {
		if sg == nil {
			return uuid.Nil, 0, false
		}
		return sg.ID, sg.Version, true
	},
	stamp: func(sg *store.Saga, id uuid.UUID, version int64, created, updated time.Time) {
		sg.ID, sg.Version, sg.UpdatedAt = id, version, updated
		if !created.IsZero() {
			sg.CreatedAt = created
		}
	},
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
	key: func(t *store.Tx) (uuid.UUID, int64, bool) {
		if t == nil {
			return uuid.Nil, 0, false
		}
		return t.ID, t.Version, true
	},
	stamp: func(t *store.Tx, id uuid.UUID, version int64, created, updated time.Time) {
		t.ID, t.Version, t.UpdatedAt = id, version, updated
		if !created.IsZero() {
			t.CreatedAt = created
		}
	},
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
