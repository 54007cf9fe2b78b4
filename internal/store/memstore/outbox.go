package memstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/transport"
)

// outboxRow is one row of the outbox, as its columns hold it.
type outboxRow struct {
	id                                           int64
	exchange, routingKey, messageID, messageType string
	correlationID, contentType                   string
	headers                                      []byte // jsonb text
	body                                         []byte
	attempts                                     int
	leaseUntil, createdAt                        time.Time
}

// outboxTable holds the outbox. Store.mu guards it.
type outboxTable struct {
	rows   map[int64]*outboxRow
	lastID int64 // of the bigserial
}

// message is an outgoing message encoded for the outbox, with the message as its writer gave it
// (which the writer gets back in its OutboxRow, as from pgstore).
type message struct {
	row outboxRow
	out transport.Outgoing
}

// encodeMessage encodes m for the outbox, refusing what PostgreSQL would refuse.
func encodeMessage(m transport.Outgoing) (message, error) {
	for _, f := range []struct{ column, value string }{
		{"exchange", m.Exchange}, {"routing_key", m.RoutingKey}, {"message_id", m.MessageID},
		{"type", m.Type}, {"correlation_id", m.CorrelationID}, {"content_type", m.ContentType},
	} {
		if err := checkText(f.column, f.value); err != nil {
			return message{}, fmt.Errorf("outbox message %q: %w", m.MessageID, err)
		}
	}
	doc, err := json.Marshal(m.Headers)
	if err != nil {
		return message{}, fmt.Errorf("outbox message %q: encode headers: %w", m.MessageID, err)
	}
	headers, err := jsonb(doc)
	if err != nil {
		return message{}, fmt.Errorf("outbox message %q: headers: %w", m.MessageID, err)
	}
	if m.Body == nil { // pgx sends a nil []byte as NULL
		return message{}, fmt.Errorf("outbox message %q: %w", m.MessageID,
			errors.New(`null value in column "body" of relation "outbox" violates not-null constraint`))
	}
	return message{out: m, row: outboxRow{
		exchange: m.Exchange, routingKey: m.RoutingKey, messageID: m.MessageID, messageType: m.Type,
		correlationID: m.CorrelationID, contentType: m.ContentType,
		headers: headers, body: append([]byte{}, m.Body...),
	}}, nil
}

// encodeMessages encodes msgs; it stops at the first refused.
func encodeMessages(msgs []transport.Outgoing) ([]message, error) {
	out := make([]message, 0, len(msgs))
	for _, m := range msgs {
		enc, err := encodeMessage(m)
		if err != nil {
			return nil, err
		}
		out = append(out, enc)
	}
	return out, nil
}

// insert adds msgs, in order, with increasing ids, written at now and leased to their writer for
// lease. Store.mu must be held.
func (o *outboxTable) insert(msgs []message, now time.Time, lease time.Duration) []store.OutboxRow {
	if len(msgs) == 0 {
		return nil
	}
	out := make([]store.OutboxRow, len(msgs))
	for i, m := range msgs {
		o.lastID++
		r := m.row
		r.id, r.leaseUntil, r.createdAt = o.lastID, dbTime(now.Add(lease)), now
		o.rows[r.id] = &r
		out[i] = store.OutboxRow{ID: r.id, Outgoing: m.out}
	}
	return out
}

// outboxView is the store's store.Outbox and store.DeferredDelete.
type outboxView struct{ s *Store }

// Lease implements store.Outbox.
func (o outboxView) Lease() time.Duration { return o.s.cfg.OutboxLease }

// ClaimExpired implements store.Outbox: it leases up to limit rows whose lease has lapsed,
// earliest lapsed first, and counts an attempt on each.
func (o outboxView) ClaimExpired(ctx context.Context, limit int) ([]store.OutboxRow, error) {
	s := o.s
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim outbox rows: %w", err)
	}
	defer release()
	if limit < 0 {
		return nil, fmt.Errorf("claim outbox rows: %w", errNegativeLimit)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var lapsed []*outboxRow
	for _, r := range s.outbox.rows {
		if r.leaseUntil.Before(now) {
			lapsed = append(lapsed, r)
		}
	}
	slices.SortFunc(lapsed, func(a, b *outboxRow) int {
		if c := a.leaseUntil.Compare(b.leaseUntil); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	var out []store.OutboxRow
	for _, r := range lapsed[:min(limit, len(lapsed))] {
		r.leaseUntil, r.attempts = dbTime(now.Add(s.cfg.OutboxLease)), r.attempts+1
		c := store.OutboxRow{ID: r.id, Attempts: r.attempts, Outgoing: transport.Outgoing{Exchange: r.exchange, RoutingKey: r.routingKey}}
		c.MessageID, c.Type, c.CorrelationID, c.ContentType = r.messageID, r.messageType, r.correlationID, r.contentType
		c.Body = append([]byte{}, r.body...)
		if err := json.Unmarshal(r.headers, &c.Headers); err != nil {
			return nil, fmt.Errorf("outbox row %d headers: %w", r.id, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Delete implements store.Outbox. Ids without a row are ignored.
func (o outboxView) Delete(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	release, err := o.s.acquire(ctx)
	if err != nil {
		return fmt.Errorf("delete %d outbox rows: %w", len(ids), err)
	}
	defer release()
	o.deleteNow(ids)
	return nil
}

func (o outboxView) deleteNow(ids []int64) {
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	for _, id := range ids {
		delete(o.s.outbox.rows, id)
	}
}

// Backlog implements store.Outbox: the number of rows and the age of the oldest by the clock.
func (o outboxView) Backlog(ctx context.Context) (int, time.Duration, error) {
	s := o.s
	release, err := s.acquire(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("outbox backlog: %w", err)
	}
	defer release()
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest time.Time
	for _, r := range s.outbox.rows {
		if oldest.IsZero() || r.createdAt.Before(oldest) {
			oldest = r.createdAt
		}
	}
	if oldest.IsZero() {
		return 0, 0, nil
	}
	return len(s.outbox.rows), now.Sub(oldest), nil
}

// DeleteSoon implements store.DeferredDelete. It deletes at once, without a connection: in
// memory there is nothing for a deferred delete to save, and a test sees the rows go at once.
func (o outboxView) DeleteSoon(ids []int64) { o.deleteNow(ids) }

// FlushDeletes implements store.DeferredDelete. DeleteSoon leaves nothing to flush.
func (o outboxView) FlushDeletes(context.Context) error { return nil }
