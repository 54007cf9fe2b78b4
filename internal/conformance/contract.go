package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// Contract is the test contract of docs/conformance.md implemented with the Go SDK: the reference
// worker that the kit checks, and the model for a worker in another language.
type Contract struct {
	// Schema holds the effect counter table; the worker's barrier schema is a good choice. It
	// must be a plain lower-case SQL identifier.
	Schema string

	// retried holds the (saga, step) pairs that check.retry-once has answered retry for. It is
	// memory on purpose: a retry stores nothing in the database.
	mu      sync.Mutex
	retried map[string]bool
}

// Migrate creates the effect counter table.
func (c *Contract) Migrate(ctx context.Context, db *pgxpool.Pool) error {
	_, err := db.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.conformance_effects (
    gid     text    NOT NULL,
    step    text    NOT NULL,
    applied integer NOT NULL,
    PRIMARY KEY (gid, step))`, pgx.Identifier{c.Schema}.Sanitize()))
	if err != nil {
		return fmt.Errorf("create conformance_effects: %w", err)
	}
	return nil
}

// Register registers the contract's handlers on w. It registers no default handler: a command
// for another action must be dead-lettered.
func (c *Contract) Register(w *participant.Worker) {
	w.Handle(actionOK, func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return c.apply(ctx, tx, cmd, nil)
	})
	w.Handle(actionEcho, func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return c.apply(ctx, tx, cmd, cmd.Input)
	})
	w.Handle(actionFail, func(context.Context, pgx.Tx, *protocol.StepCommand) (json.RawMessage, error) {
		return nil, participant.Failf("check.fail always fails")
	})
	w.Handle(actionFailFirst, func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		out, err := c.apply(ctx, tx, cmd, nil)
		if err == nil && cmd.Attempt == 1 {
			return nil, participant.Failf("check.fail-first fails its first attempt")
		}
		return out, err
	})
	w.Handle(actionRetryOnce, func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		out, err := c.apply(ctx, tx, cmd, nil)
		if err == nil && c.firstTry(cmd.SagaID+"/"+cmd.Step) {
			return nil, errors.New("check.retry-once asks for a retry on its first delivery")
		}
		return out, err
	})
	w.Handle(actionUndo, func(context.Context, pgx.Tx, *protocol.StepCommand) (json.RawMessage, error) {
		return json.RawMessage(`{"undone":true}`), nil
	})
	noop := func(context.Context, pgx.Tx, *protocol.TxCommand) error { return nil }
	w.HandleTx(participant.TxHandlers{Prepare: prepare, Commit: noop, Abort: noop})
}

// apply counts the effect of cmd's step in tx and returns {"applied": n}, with "input" when
// input is set.
func (c *Contract) apply(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, input json.RawMessage) (json.RawMessage, error) {
	var n int
	err := tx.QueryRow(ctx, fmt.Sprintf(`INSERT INTO %s.conformance_effects AS e (gid, step, applied) VALUES ($1, $2, 1)
ON CONFLICT (gid, step) DO UPDATE SET applied = e.applied + 1 RETURNING applied`, pgx.Identifier{c.Schema}.Sanitize()),
		cmd.SagaID, cmd.Step).Scan(&n)
	if err != nil {
		return nil, fmt.Errorf("count the effect: %w", err)
	}
	if input == nil {
		return json.Marshal(map[string]int{"applied": n})
	}
	return json.Marshal(struct {
		Input   json.RawMessage `json:"input"`
		Applied int             `json:"applied"`
	}{input, n})
}

// firstTry reports whether key is seen for the first time.
func (c *Contract) firstTry(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retried == nil {
		c.retried = map[string]bool{}
	}
	first := !c.retried[key]
	c.retried[key] = true
	return first
}

// prepare votes as the payload's "vote" says: "yes" votes YES, anything else NO.
func prepare(_ context.Context, _ pgx.Tx, cmd *protocol.TxCommand) error {
	var p struct {
		Vote string `json:"vote"`
	}
	if err := json.Unmarshal(cmd.Payload, &p); err != nil || p.Vote != "yes" {
		return participant.Failf("the payload votes no")
	}
	return nil
}
