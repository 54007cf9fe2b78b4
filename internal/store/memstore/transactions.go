package memstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/store"
)

// CreateTx implements store.Transactions. build runs first, as in pgstore, also when the
// transaction exists: then the stored one is returned and nothing is written.
func (s *Store) CreateTx(ctx context.Context, id uuid.UUID, build func(now time.Time) (store.TxChange, error)) (*store.Tx, bool, []store.OutboxRow, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, false, nil, fmt.Errorf("create transaction %s: %w", id, err)
	}
	defer release()
	now := s.now()
	t, created, rows, err := s.createTx(ctx, id, now, build)
	if err != nil {
		return nil, false, nil, fmt.Errorf("create transaction %s: %w", id, err)
	}
	return t, created, rows, nil
}

func (s *Store) createTx(ctx context.Context, id uuid.UUID, now time.Time, build func(now time.Time) (store.TxChange, error)) (*store.Tx, bool, []store.OutboxRow, error) {
	ch, err := build(now)
	if err == nil && ch.Row == nil {
		err = errors.New("build returned no transaction")
	}
	if err != nil {
		return nil, false, nil, err
	}
	r, err := txCodec.encode(ch.Row)
	if err == nil {
		err = txCodec.checkInsert(&r)
	}
	if err != nil {
		return nil, false, nil, err
	}
	r.id = id
	msgs, err := encodeMessages(ch.Messages)
	if err != nil {
		return nil, false, nil, err
	}
	if err := commitable(ctx); err != nil {
		return nil, false, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, exists := s.txs.rows[id]; exists {
		t, err := txCodec.decode(old)
		return t, false, nil, err
	}
	s.txs.insert(r, now)
	rows := s.outbox.insert(msgs, now, s.cfg.OutboxLease)
	txCodec.stamp(ch.Row, id, 1, now, now)
	return ch.Row, true, rows, nil
}

// GetTx implements store.Transactions.
func (s *Store) GetTx(ctx context.Context, id uuid.UUID) (*store.Tx, error) {
	return s.txs.get(ctx, s, id)
}

// ListTx implements store.Transactions.
func (s *Store) ListTx(ctx context.Context, f store.TxFilter) ([]*store.Tx, error) {
	if err := checkText("state", string(f.State)); err != nil {
		return nil, fmt.Errorf("list transactions: %w", err)
	}
	out, err := page(ctx, s, s.txs, func(r *row) bool {
		return f.State == "" || r.status == string(f.State)
	}, f.AfterCreatedAt, f.AfterID, f.Limit, false)
	if err != nil {
		return nil, fmt.Errorf("list transactions: %w", err)
	}
	if out == nil {
		out = []*store.Tx{} // pgstore's listing of transactions is never nil
	}
	return out, nil
}

// MutateTx implements store.Transactions.
func (s *Store) MutateTx(ctx context.Context, ids []uuid.UUID, fn store.MutateFunc[*store.Tx]) ([]store.OutboxRow, error) {
	return mutateIDs(ctx, s, s.txs, ids, fn)
}

// MutateDueTx implements store.Transactions.
func (s *Store) MutateDueTx(ctx context.Context, limit int, fn store.MutateFunc[*store.Tx]) (int, []store.OutboxRow, error) {
	return mutate(ctx, s, s.txs, due(s, s.txs, limit), fn)
}
