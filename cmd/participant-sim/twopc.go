package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// Two-phase commit in the simulator. PREPARE reserves: a debit (transfer) or a reserve
// (inventory) adds the amount to the account's held column, which saga debits and other
// prepares cannot spend (they see balance - held); COMMIT applies the entry to the balance and
// releases the hold; ABORT releases it. A credit reserves nothing (incoming money is not
// spendable before it arrives) but is recorded like a hold. Every hold is a row of the holds
// table with prepared_at and decided_at, so the time a transaction blocked its participant is
// measurable: decided_at - prepared_at.

// Hold states.
const (
	holdHeld      = "held"
	holdCommitted = "committed"
	holdAborted   = "aborted"
)

// twopcStep is the ledger step of a committed transaction entry; the ledger key is
// (transaction id, twopcStep, "commit").
const twopcStep = "twopc"

// txStatements are the simulator's two-phase-commit statements on one participant's schema.
type txStatements struct {
	migrations []string

	hold, holdsInsert, holdSelect, holdSettle, balanceApply, holdRelease string
}

func newTxStatements(schema string) txStatements {
	a := pgx.Identifier{schema, "accounts"}.Sanitize()
	h := pgx.Identifier{schema, "holds"}.Sanitize()
	return txStatements{
		migrations: []string{
			`ALTER TABLE ` + a + ` ADD COLUMN IF NOT EXISTS held bigint NOT NULL DEFAULT 0`,
			`CREATE TABLE IF NOT EXISTS ` + h + ` (
	tx_id       text        PRIMARY KEY,
	account     text        NOT NULL,
	-- amount is the signed change of the balance at COMMIT; held what PREPARE added to held.
	amount      bigint      NOT NULL,
	held        bigint      NOT NULL,
	state       text        NOT NULL CHECK (state IN ('held', 'committed', 'aborted')),
	prepared_at timestamptz NOT NULL DEFAULT now(),
	decided_at  timestamptz
)`,
		},
		hold:         `UPDATE ` + a + ` SET held = held + $2 WHERE account = $1 AND balance - held >= $2 RETURNING balance - held`,
		holdsInsert:  `INSERT INTO ` + h + ` (tx_id, account, amount, held, state) VALUES ($1, $2, $3, $4, 'held')`,
		holdSelect:   `SELECT account, amount, held, state FROM ` + h + ` WHERE tx_id = $1 FOR UPDATE`,
		holdSettle:   `UPDATE ` + h + ` SET state = $2, decided_at = now() WHERE tx_id = $1`,
		balanceApply: `UPDATE ` + a + ` SET balance = balance + $2, held = held - $3 WHERE account = $1`,
		holdRelease:  `UPDATE ` + a + ` SET held = held - $2 WHERE account = $1`,
	}
}

// txPayload is the participant payload the simulator understands: {"account","amount",
// "direction"} for transfer and payment, {"sku","qty"} for inventory.
type txPayload struct {
	Account   string `json:"account"`
	Amount    int64  `json:"amount"`
	Direction string `json:"direction"`
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
}

// txHandlers returns the ledger's two-phase-commit handlers.
func (l *ledger) txHandlers() participant.TxHandlers {
	return participant.TxHandlers{Prepare: l.prepare, Commit: l.settle(holdCommitted), Abort: l.settle(holdAborted)}
}

// prepare checks the payload and reserves: it never lets a hold exceed what is available.
func (l *ledger) prepare(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
	var p txPayload
	if err := json.Unmarshal(cmd.Payload, &p); err != nil {
		return participant.Failf("payload %s is not a JSON object this participant reads: %v", abbreviate(cmd.Payload), err)
	}
	// qty is what the payload asks for; sign turns it into the change of the balance at COMMIT;
	// reserve says whether PREPARE holds it.
	account, qty, sign, reserve := p.Account, p.Amount, int64(-1), true
	switch l.kind {
	case kindTransfer:
		switch p.Direction {
		case "debit", "":
		case "credit":
			sign, reserve = 1, false
		default:
			return participant.Failf("payload direction %q must be debit or credit", p.Direction)
		}
	case kindInventory:
		account, qty = p.SKU, p.Qty
	case kindPayment:
		// A charge to an outside account: recorded, with no balance here (like the saga's).
		sign, reserve = 1, false
	default:
		return participant.Failf("participant kind %s takes no part in two-phase commit", l.kind)
	}
	if account == "" || qty <= 0 {
		return participant.Failf("payload %s names no account (or sku) or no positive amount (or qty)", abbreviate(cmd.Payload))
	}
	amount, held := sign*qty, int64(0)
	switch {
	case reserve:
		held = qty
		var available int64
		err := tx.QueryRow(ctx, l.tx.hold, account, held).Scan(&available)
		if errors.Is(err, pgx.ErrNoRows) {
			if err := l.mustExist(ctx, tx, account); err != nil {
				return err
			}
			what := "funds"
			if l.kind == kindInventory {
				what = "stock"
			}
			return participant.Failf("insufficient available %s in %s: %d requested", what, account, held)
		}
		if err != nil {
			return fmt.Errorf("hold %d in %s: %w", held, account, err)
		}
	case l.kind != kindPayment:
		if err := l.mustExist(ctx, tx, account); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, l.tx.holdsInsert, cmd.TxID, account, amount, held); err != nil {
		return fmt.Errorf("record hold of transaction %s: %w", cmd.TxID, err)
	}
	return nil
}

// settle returns the COMMIT (to = committed) or ABORT (to = aborted) handler: it applies or drops
// the hold's entry and releases what was held.
func (l *ledger) settle(to string) participant.TxHandler {
	return func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
		var (
			account      string
			amount, held int64
			state        string
		)
		if err := tx.QueryRow(ctx, l.tx.holdSelect, cmd.TxID).Scan(&account, &amount, &held, &state); err != nil {
			// The barrier calls COMMIT and ABORT only after a YES, whose hold is in the same
			// database: a missing hold is a bug or a damaged database, never business.
			return fmt.Errorf("hold of transaction %s: %w", cmd.TxID, err)
		}
		if state != holdHeld {
			return fmt.Errorf("hold of transaction %s is %s, want %s", cmd.TxID, state, holdHeld)
		}
		if l.kind != kindPayment {
			q, args := l.tx.holdRelease, []any{account, held}
			if to == holdCommitted {
				q, args = l.tx.balanceApply, []any{account, amount, held}
			}
			if _, err := tx.Exec(ctx, q, args...); err != nil {
				return fmt.Errorf("%s transaction %s in %s: %w", to, cmd.TxID, account, err)
			}
		}
		if to == holdCommitted {
			if _, err := tx.Exec(ctx, l.insertEntry, cmd.TxID, twopcStep, protocol.KindCommit, account, amount); err != nil {
				return fmt.Errorf("write ledger entry: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, l.tx.holdSettle, cmd.TxID, to); err != nil {
			return fmt.Errorf("settle hold of transaction %s: %w", cmd.TxID, err)
		}
		return nil
	}
}

// noopTx are the two-phase-commit handlers of a noop participant: always YES, nothing held.
func noopTx() participant.TxHandlers {
	nop := func(context.Context, pgx.Tx, *protocol.TxCommand) error { return nil }
	return participant.TxHandlers{Prepare: nop, Commit: nop, Abort: nop}
}

// Fault knobs of two-phase commit are configured under the names "prepare", "commit" and
// "abort" (or "*"). fail_probability makes a PREPARE vote NO and does not apply to a decision,
// which cannot fail. A transient failure (retry_probability) requeues the command with the same
// attempt number, so each try of a command draws anew: tries counts them in this process.
type tries struct {
	mu sync.Mutex
	n  map[string]int
}

func (t *tries) next(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int{}
	}
	t.n[key]++
	return t.n[key]
}

func (t *tries) forget(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.n, key)
}

func (d dice) hitTx(cmd *protocol.TxCommand, knob string, p float64, try int) bool {
	return p > 0 && d.rollKey(cmd.TxID, string(cmd.Kind), strconv.Itoa(cmd.Attempt), knob, strconv.Itoa(try)) < p
}

// withTxFaults wraps the two-phase-commit handlers with the participant's fault knobs.
func withTxFaults(p participantConfig, d dice, track *inflight, log *slog.Logger, hs participant.TxHandlers) participant.TxHandlers {
	var counts tries
	wrap := func(h participant.TxHandler) participant.TxHandler {
		return func(ctx context.Context, tx pgx.Tx, cmd *protocol.TxCommand) error {
			track.add(1, 0)
			defer track.add(-1, 0)
			f := p.faultsFor(string(cmd.Kind))
			if f.Latency > 0 {
				t := time.NewTimer(time.Duration(f.Latency))
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				}
			}
			if info, _ := participant.DeliveryFromContext(ctx); !info.Redelivered && d.hitTx(cmd, "hang", f.HangProbability, 0) {
				log.Warn("injected hang", "for", f.hangDescription(), "tx_id", cmd.TxID, "kind", cmd.Kind, "attempt", cmd.Attempt)
				if err := hang(ctx, f, track); err != nil {
					return err
				}
			}
			key := cmd.TxID + "/" + string(cmd.Kind)
			if d.hitTx(cmd, "retry", f.RetryProbability, counts.next(key)) {
				return errInjectedTransient
			}
			counts.forget(key)
			if cmd.Kind == protocol.KindPrepare && d.hitTx(cmd, "fail", f.FailProbability, 0) {
				return participant.Failf("injected NO vote (fail_probability) in prepare")
			}
			return h(ctx, tx, cmd)
		}
	}
	return participant.TxHandlers{Prepare: wrap(hs.Prepare), Commit: wrap(hs.Commit), Abort: wrap(hs.Abort)}
}

// crashAfterTxCommit returns the worker's OnTxCommitted hook that injects
// crash_after_commit_probability for "prepare", "commit" and "abort".
func crashAfterTxCommit(p participantConfig, d dice, log *slog.Logger, exit func(int)) func(*protocol.TxCommand, protocol.TxReply) {
	return func(cmd *protocol.TxCommand, reply protocol.TxReply) {
		if d.hitTx(cmd, "crash", p.faultsFor(string(cmd.Kind)).CrashAfterCommitProbability, 0) {
			log.Error("injected crash after the local commit, before the reply (crash_after_commit_probability)",
				"tx_id", cmd.TxID, "kind", cmd.Kind, "attempt", cmd.Attempt, "outcome", reply.Outcome)
			exit(137)
		}
	}
}
