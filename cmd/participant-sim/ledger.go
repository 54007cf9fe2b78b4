package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// ledger is one simulated participant's books in its own schema: an append-only ledger with at
// most one entry per (saga, step, kind) (invariant G4), and balances (money for transfer, stock
// for inventory). Every compensation writes the reverse entry of its action, so a compensated
// saga nets to zero (G3) and transfers conserve money (G6).
type ledger struct {
	schema, kind string

	createLedger, createAccounts, seed string
	insertEntry                        string
	debit, credit, exists              string
	// tx holds the two-phase-commit statements (twopc.go).
	tx txStatements
}

func newLedger(schema, kind string) *ledger {
	l := pgx.Identifier{schema, "ledger"}.Sanitize()
	a := pgx.Identifier{schema, "accounts"}.Sanitize()
	return &ledger{
		schema: schema,
		kind:   kind,
		createLedger: `CREATE TABLE IF NOT EXISTS ` + l + ` (
	id         bigserial   PRIMARY KEY,
	gid        text        NOT NULL,
	step       text        NOT NULL,
	kind       text        NOT NULL,
	account    text        NOT NULL,
	amount     bigint      NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (gid, step, kind)
)`,
		createAccounts: `CREATE TABLE IF NOT EXISTS ` + a + ` (account text PRIMARY KEY, balance bigint NOT NULL)`,
		seed:           `INSERT INTO ` + a + ` (account, balance) SELECT $1 || g, $3 FROM generate_series(1, $2::int) AS g ON CONFLICT DO NOTHING`,
		insertEntry:    `INSERT INTO ` + l + ` (gid, step, kind, account, amount) VALUES ($1, $2, $3, $4, $5)`,
		// Never below zero, and never into what two-phase-commit transactions hold: a debit
		// that would overdraw the available balance is a business failure.
		debit:  `UPDATE ` + a + ` SET balance = balance - $2 WHERE account = $1 AND balance - held >= $2 RETURNING balance`,
		credit: `UPDATE ` + a + ` SET balance = balance + $2 WHERE account = $1 RETURNING balance`,
		exists: `SELECT EXISTS (SELECT 1 FROM ` + a + ` WHERE account = $1)`,
		tx:     newTxStatements(schema),
	}
}

// migrate creates the tables (the schema exists: the worker's Migrate made it) and seeds the
// accounts once.
func (l *ledger) migrate(ctx context.Context, db *pgxpool.Pool, seedAccounts int, initialBalance int64) error {
	for _, q := range append([]string{l.createLedger, l.createAccounts}, l.tx.migrations...) {
		if _, err := db.Exec(ctx, q); err != nil {
			return fmt.Errorf("create ledger tables in %s: %w", l.schema, err)
		}
	}
	if seedAccounts > 0 {
		prefix := "acct-"
		if l.kind == kindInventory {
			prefix = "sku-"
		}
		if _, err := db.Exec(ctx, l.seed, prefix, seedAccounts, initialBalance); err != nil {
			return fmt.Errorf("seed accounts in %s: %w", l.schema, err)
		}
	}
	return nil
}

// entry is the output of every ledger action and compensation, and the input a compensation
// reverses.
type entry struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
	Balance *int64 `json:"balance,omitempty"`
}

// handlers returns the named actions and compensations of the ledger's kind.
func (l *ledger) handlers() map[string]participant.Handler {
	switch l.kind {
	case kindTransfer:
		return map[string]participant.Handler{
			"debit":        l.take(func(in input) (string, int64) { return in.From, in.Amount }, "insufficient funds"),
			"refund_debit": l.reverse(),
			"credit":       l.give(func(in input) (string, int64) { return in.To, in.Amount }),
			"undo_credit":  l.reverse(),
		}
	case kindInventory:
		return map[string]participant.Handler{
			"reserve": l.take(func(in input) (string, int64) { return in.SKU, in.Qty }, "insufficient stock"),
			"release": l.reverse(),
		}
	case kindPayment:
		return map[string]participant.Handler{
			"charge": l.record(func(in input) (string, int64) { return in.payer(), in.Amount }),
			"refund": l.reverse(),
		}
	}
	return nil
}

// unknown refuses an action the kind does not know, naming those it does.
func (l *ledger) unknown(name string) participant.Handler {
	var known []string
	for k := range l.handlers() {
		known = append(known, k)
	}
	slices.Sort(known)
	return func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		return nil, participant.Failf("participant %s (kind %s) has no action %q; it knows %s", name, l.kind, cmd.Action, strings.Join(known, ", "))
	}
}

// input is the saga input the simulator understands; each kind reads its own fields.
type input struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
	SKU     string `json:"sku"`
	Qty     int64  `json:"qty"`
}

func (in input) payer() string {
	if in.Account != "" {
		return in.Account
	}
	return in.From
}

func parseInput(cmd *protocol.StepCommand, pick func(input) (string, int64)) (string, int64, error) {
	var in input
	if len(cmd.Input) > 0 {
		if err := json.Unmarshal(cmd.Input, &in); err != nil {
			return "", 0, participant.Failf("%s: saga input is not a JSON object with the fields this action reads: %v", cmd.Action, err)
		}
	}
	account, amount := pick(in)
	if account == "" || amount <= 0 {
		return "", 0, participant.Failf("%s: saga input %s names no account (or sku) or no positive amount (or qty)", cmd.Action, abbreviate(cmd.Input))
	}
	return account, amount, nil
}

// take removes amount from an account that must hold enough (debit, reserve).
func (l *ledger) take(pick func(input) (string, int64), shortage string) participant.Handler {
	return func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		account, amount, err := parseInput(cmd, pick)
		if err != nil {
			return nil, err
		}
		var balance int64
		err = tx.QueryRow(ctx, l.debit, account, amount).Scan(&balance)
		if errors.Is(err, pgx.ErrNoRows) {
			if err := l.mustExist(ctx, tx, account); err != nil {
				return nil, err
			}
			return nil, participant.Failf("%s in %s: %d requested", shortage, account, amount)
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", cmd.Action, account, err)
		}
		return l.write(ctx, tx, cmd, account, -amount, &balance)
	}
}

// give adds amount to an account that must exist (credit).
func (l *ledger) give(pick func(input) (string, int64)) participant.Handler {
	return func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		account, amount, err := parseInput(cmd, pick)
		if err != nil {
			return nil, err
		}
		var balance int64
		err = tx.QueryRow(ctx, l.credit, account, amount).Scan(&balance)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, participant.Failf("account %s does not exist", account)
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", cmd.Action, account, err)
		}
		return l.write(ctx, tx, cmd, account, amount, &balance)
	}
}

// record writes a ledger entry without a balance (a payment charged to an outside account).
func (l *ledger) record(pick func(input) (string, int64)) participant.Handler {
	return func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		account, amount, err := parseInput(cmd, pick)
		if err != nil {
			return nil, err
		}
		return l.write(ctx, tx, cmd, account, amount, nil)
	}
}

// reverse undoes the action whose output (an entry) the compensation carries: it writes the
// opposite ledger entry and, where the account has a balance, moves it back. A reversal never
// fails for business reasons: an undo_credit may leave a balance below zero rather than leave a
// saga half-compensated.
func (l *ledger) reverse() participant.Handler {
	return func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		var e entry
		if err := json.Unmarshal(cmd.Output, &e); err != nil || e.Account == "" {
			return nil, fmt.Errorf("%s: the compensated action's output %s is not a ledger entry", cmd.Action, abbreviate(cmd.Output))
		}
		amount := -e.Amount
		if e.Balance == nil {
			return l.write(ctx, tx, cmd, e.Account, amount, nil)
		}
		var balance int64
		if err := tx.QueryRow(ctx, l.credit, e.Account, amount).Scan(&balance); err != nil {
			return nil, fmt.Errorf("%s %s: %w", cmd.Action, e.Account, err)
		}
		return l.write(ctx, tx, cmd, e.Account, amount, &balance)
	}
}

func (l *ledger) mustExist(ctx context.Context, tx pgx.Tx, account string) error {
	var ok bool
	if err := tx.QueryRow(ctx, l.exists, account).Scan(&ok); err != nil {
		return fmt.Errorf("look up %s: %w", account, err)
	}
	if !ok {
		return participant.Failf("account %s does not exist", account)
	}
	return nil
}

func (l *ledger) write(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand, account string, amount int64, balance *int64) (json.RawMessage, error) {
	if _, err := tx.Exec(ctx, l.insertEntry, cmd.SagaID, cmd.Step, cmd.Kind, account, amount); err != nil {
		return nil, fmt.Errorf("write ledger entry: %w", err)
	}
	return json.Marshal(entry{Account: account, Amount: amount, Balance: balance})
}

func noop(context.Context, pgx.Tx, *protocol.StepCommand) (json.RawMessage, error) {
	return json.RawMessage(`{}`), nil
}

func abbreviate(b []byte) string {
	if len(b) == 0 {
		return "(empty)"
	}
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
