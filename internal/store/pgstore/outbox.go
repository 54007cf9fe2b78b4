package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/transport"
)

// insertOutbox inserts msgs into the outbox in tx and returns their rows.
func (s *Store) insertOutbox(ctx context.Context, tx pgx.Tx, msgs []transport.Outgoing) ([]store.OutboxRow, error) {
	var out []store.OutboxRow
	b := &pgx.Batch{}
	if err := s.queueOutbox(b, msgs, &out); err != nil || b.Len() == 0 {
		return nil, err
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// outboxColumns are the outbox columns of a batch of messages, as arrays for unnest.
type outboxColumns struct {
	exchanges, keys, ids, types, corrs, headers, ctypes []string
	bodies                                              [][]byte
}

func outboxArrays(msgs []transport.Outgoing) (outboxColumns, error) {
	n := len(msgs)
	c := outboxColumns{
		exchanges: make([]string, n), keys: make([]string, n), ids: make([]string, n), types: make([]string, n),
		corrs: make([]string, n), headers: make([]string, n), ctypes: make([]string, n), bodies: make([][]byte, n),
	}
	for i, m := range msgs {
		h, err := json.Marshal(m.Headers)
		if err != nil {
			return outboxColumns{}, err
		}
		c.exchanges[i], c.keys[i], c.ids[i], c.types[i], c.corrs[i], c.headers[i], c.bodies[i] = m.Exchange, m.RoutingKey, m.MessageID, m.Type, m.CorrelationID, string(h), m.Body
		c.ctypes[i] = m.ContentType
	}
	return c, nil
}

// outboxRows pairs msgs with the ids their insert returned. ORDER BY ord makes the serial ids
// follow the input order, so sorted ids map to messages by position.
func outboxRows(msgs []transport.Outgoing, ids []int64) ([]store.OutboxRow, error) {
	if len(ids) != len(msgs) {
		return nil, fmt.Errorf("outbox insert returned %d ids for %d messages", len(ids), len(msgs))
	}
	rs := make([]store.OutboxRow, len(msgs))
	for i := range msgs {
		rs[i] = store.OutboxRow{ID: ids[i], Outgoing: msgs[i]}
	}
	return rs, nil
}

// queueOutbox queues the insert of msgs into the outbox; once it ran, *out holds their rows.
func (s *Store) queueOutbox(b *pgx.Batch, msgs []transport.Outgoing, out *[]store.OutboxRow) error {
	if len(msgs) == 0 {
		return nil
	}
	c, err := outboxArrays(msgs)
	if err != nil {
		return err
	}
	b.Queue(`INSERT INTO outbox (exchange, routing_key, message_id, type, correlation_id, headers, body, content_type, lease_until)
		SELECT e, k, m, t, c, h::jsonb, b, ct, now() + $8::interval
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $9::text[]) WITH ORDINALITY AS u(e, k, m, t, c, h, b, ct, ord)
		ORDER BY ord
		RETURNING id`, c.exchanges, c.keys, c.ids, c.types, c.corrs, c.headers, c.bodies, s.cfg.OutboxLease, c.ctypes).Query(func(rows pgx.Rows) error {
		rowIDs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		rs, err := outboxRows(msgs, rowIDs)
		*out = rs
		return err
	})
	return nil
}

type outboxStore struct{ s *Store }

func (o outboxStore) Lease() time.Duration { return o.s.cfg.OutboxLease }

func (o outboxStore) ClaimExpired(ctx context.Context, limit int) ([]store.OutboxRow, error) {
	lease := o.s.cfg.OutboxLease
	rows, err := o.s.pool.Query(ctx, `UPDATE outbox SET lease_until = now() + $2::interval, attempts = attempts + 1
		WHERE id IN (SELECT id FROM outbox WHERE lease_until < now() ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING id, exchange, routing_key, message_id, type, correlation_id, headers, body, attempts, content_type`, limit, lease)
	if err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	defer rows.Close()
	var out []store.OutboxRow
	for rows.Next() {
		var (
			r       store.OutboxRow
			headers []byte
		)
		if err := rows.Scan(&r.ID, &r.Exchange, &r.RoutingKey, &r.MessageID, &r.Type, &r.CorrelationID, &headers, &r.Body, &r.Attempts, &r.ContentType); err != nil {
			return nil, fmt.Errorf("claim outbox rows: %w", err)
		}
		if err := json.Unmarshal(headers, &r.Headers); err != nil {
			return nil, fmt.Errorf("outbox row %d headers: %w", r.ID, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (o outboxStore) Delete(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	// Losing this delete in a crash only republishes confirmed messages, which consumers
	// deduplicate; so it need not wait for the WAL flush. The whole transaction is one round
	// trip.
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SET LOCAL synchronous_commit = off`)
	b.Queue(`DELETE FROM outbox WHERE id = ANY($1)`, ids)
	b.Queue(`COMMIT`)
	err := o.s.pool.SendBatch(ctx, b).Close()
	if err != nil {
		return fmt.Errorf("delete %d outbox rows: %w", len(ids), err)
	}
	return nil
}

func (o outboxStore) Backlog(ctx context.Context) (int, time.Duration, error) {
	var (
		n   int
		age float64
	)
	err := o.s.pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox`).Scan(&n, &age)
	if err != nil {
		return 0, 0, fmt.Errorf("outbox backlog: %w", err)
	}
	return n, time.Duration(age * float64(time.Second)), nil
}
