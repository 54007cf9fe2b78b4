package amqptransport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sagacoord/sagacoord/transport"
)

// maxChunk is the most messages in flight on one confirm channel, and the capacity of its
// NotifyReturn buffer. amqp091-go hands basic.return frames to that buffer from its reader
// goroutine and gives up on a full buffer after a timeout, so a batch never has more
// unconfirmed messages than the buffer holds; larger batches go in chunks.
const maxChunk = 1024

// pubChannel is a confirm-mode channel of the publishing connection. It is in the pool only when
// clean: every message published on it has been confirmed and its returns drained.
type pubChannel struct {
	sess     *session
	ch       *amqp.Channel
	returns  chan amqp.Return
	closes   chan *amqp.Error
	closeErr *amqp.Error // the channel's close reason, once read from closes
}

// reason returns why the channel closed, when amqp091-go reported it.
func (pc *pubChannel) reason() error {
	if pc.closeErr == nil {
		select {
		case e, ok := <-pc.closes:
			if ok && e != nil {
				pc.closeErr = e
			}
		default:
		}
	}
	if pc.closeErr == nil {
		return amqp.ErrClosed
	}
	return pc.closeErr
}

// pubRequest is one Publish call handed to a publish worker. It carries the caller's context,
// as an http.Request does, so the worker knows when nobody waits for the messages any more.
type pubRequest struct {
	ctx  context.Context
	msgs []transport.Outgoing
	res  chan []error // buffered; receives one result per message, once
}

// Publish publishes msgs persistently with the mandatory flag (transport.Mandatory) on a confirm channel, pipelined,
// and waits for every confirm. The result has one entry per message: nil when the broker
// confirmed and routed it; an error wrapping transport.ErrReturned when no queue was bound for
// it; transport.ErrNacked when the broker refused it; ErrBlocked while the broker blocks
// publishers; otherwise a connection or context error, after which the message may or may not
// have been enqueued. Publish returns by ctx's deadline even when the broker stops reading, and
// never waits for a lost connection to come back: the caller publishes the failed messages
// again later.
//
// Concurrent calls share Config.PublishChannels channels. Calls that arrive while every channel
// is busy are published together, as one pipelined batch, on the next channel to come free; the
// end of one caller's ctx fails only that caller's messages. Bodies and headers are read until
// the broker has them, which can be after Publish has returned on ctx: do not modify them.
func (t *Transport) Publish(ctx context.Context, msgs []transport.Outgoing) []error {
	if len(msgs) == 0 {
		return []error{}
	}
	fail := func(err error) []error {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	if t.isClosed() {
		return fail(ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fail(fmt.Errorf("publish: %w", err))
	}
	// A copy, so the worker never reads a slice that the caller reuses after an early return.
	req := &pubRequest{ctx: ctx, msgs: slices.Clone(msgs), res: make(chan []error, 1)}
	select {
	case t.requests <- req:
	case <-ctx.Done():
		return fail(fmt.Errorf("publish: wait for room in the publish queue: %w", ctx.Err()))
	case <-t.closing:
		return fail(ErrClosed)
	}
	select {
	case errs := <-req.res:
		return errs
	case <-ctx.Done():
	case <-t.closing:
	}
	select {
	case errs := <-req.res: // it came at the same time: the results say more than "gave up"
		return errs
	default:
	}
	if ctx.Err() == nil {
		return fail(ErrClosed)
	}
	errs := make([]error, len(msgs))
	for i := range msgs {
		errs[i] = fmt.Errorf("publish %s: wait for the broker's confirm: %w", describe(&msgs[i]), ctx.Err())
	}
	return errs
}

// publishWorker owns one publish channel (opened when first needed) and publishes the requests of
// Publish calls on it until the transport closes. It takes every request waiting when it comes
// free, up to maxChunk messages, and publishes them as one batch: concurrent callers then share
// one pipelined write and one wait for the broker's confirms instead of a round trip each.
func (t *Transport) publishWorker() {
	base, stop := t.untilClosed(context.Background())
	defer stop()
	var (
		pc    *pubChannel
		carry *pubRequest // taken from the queue, but too large for the batch it came with
		batch []*pubRequest
	)
	for {
		batch = batch[:0]
		if carry != nil {
			batch, carry = append(batch, carry), nil
		} else {
			select {
			case r := <-t.requests:
				batch = append(batch, r)
			case <-t.closing:
				return
			}
		}
		n := len(batch[0].msgs)
	gather:
		for n < maxChunk {
			select {
			case r := <-t.requests:
				if n+len(r.msgs) > maxChunk {
					carry = r
					break gather
				}
				batch = append(batch, r)
				n += len(r.msgs)
			default:
				break gather
			}
		}
		pc = t.publishRequests(base, pc, batch)
		clear(batch) // let the requests go
	}
}

// publishRequests publishes the messages of reqs on pc as one batch and sends every request its
// results. It returns the channel to use next (nil when pc had to be discarded).
func (t *Transport) publishRequests(base context.Context, pc *pubChannel, reqs []*pubRequest) *pubChannel {
	// A caller that gave up while queued has returned, or is returning: publish nothing for it.
	live := reqs[:0:0]
	for _, r := range reqs {
		if r.ctx.Err() == nil {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return pc
	}
	ctx, cancel := batchContext(base, live)
	defer cancel()
	if hook := t.onBatch.Load(); hook != nil {
		(*hook)(live)
	}
	msgs := live[0].msgs
	if len(live) > 1 {
		msgs = nil
		for _, r := range live {
			msgs = append(msgs, r.msgs...)
		}
	}
	errs := make([]error, len(msgs))
	pc = t.publishBundled(ctx, pc, msgs, errs)
	off := 0
	for _, r := range live {
		end := off + len(r.msgs)
		r.res <- errs[off:end:end]
		off = end
	}
	return pc
}

// publishBundled is publishBatch, with the messages for one queue in bundles when Config.Bundle
// says so: each message's result is its bundle's.
func (t *Transport) publishBundled(ctx context.Context, pc *pubChannel, msgs []transport.Outgoing, errs []error) *pubChannel {
	if !t.cfg.Bundle {
		return t.publishBatch(ctx, pc, msgs, errs)
	}
	out, carries := transport.Bundle(msgs)
	if len(out) == len(msgs) {
		return t.publishBatch(ctx, pc, msgs, errs)
	}
	outErrs := make([]error, len(out))
	pc = t.publishBatch(ctx, pc, out, outErrs)
	for g, idx := range carries {
		for _, i := range idx {
			errs[i] = outErrs[g]
		}
	}
	return pc
}

// batchContext returns a context for publishing the batch of reqs that ends when base ends or
// when the context of every request has ended. A batch is abandoned (its channel discarded, a
// stalled write interrupted by closing the connection) only once nobody waits for it, so one
// caller giving up never fails the messages of the others; each caller still returns on its own
// context. When every request has a deadline, the latest is the batch's, so a dial on behalf of
// the batch is bounded by it.
func batchContext(base context.Context, reqs []*pubRequest) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, r := range reqs {
		d, ok := r.ctx.Deadline()
		if !ok {
			latest = time.Time{}
			break
		}
		if d.After(latest) {
			latest = d
		}
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if latest.IsZero() {
		ctx, cancel = context.WithCancel(base)
	} else {
		ctx, cancel = context.WithDeadline(base, latest)
	}
	var left atomic.Int64
	left.Store(int64(len(reqs)))
	stops := make([]func() bool, len(reqs))
	for i, r := range reqs {
		stops[i] = context.AfterFunc(r.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// publishBatch publishes msgs on pc (or on a new channel when pc is nil or closed) in chunks of
// at most maxChunk, writing one result per message into errs. It returns the channel to use next.
func (t *Transport) publishBatch(ctx context.Context, pc *pubChannel, msgs []transport.Outgoing, errs []error) *pubChannel {
	fill := func(from int, err error) {
		for i := from; i < len(errs); i++ {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	for start := 0; start < len(msgs); start += maxChunk {
		end := min(start+maxChunk, len(msgs))
		if pc == nil || pc.ch.IsClosed() {
			var err error
			if pc, err = t.openPubChannel(ctx); err != nil {
				fill(start, fmt.Errorf("publish: %w", err))
				return nil
			}
		}
		if err := pc.sess.blockedErr(); err != nil {
			fill(start, fmt.Errorf("publish: %w", err))
			return pc
		}
		if err := t.checkExchanges(ctx, pc.sess, msgs[start:end], errs[start:end]); err != nil {
			fill(start, fmt.Errorf("publish: %w", err))
			return pc
		}
		if !t.publishChunk(ctx, pc, msgs[start:end], errs[start:end]) {
			var amqpErr *amqp.Error
			if pc.ch.IsClosed() && errors.As(pc.reason(), &amqpErr) && amqpErr.Code == amqp.NotFound {
				// An exchange checked earlier has been deleted since: check them all again.
				pc.sess.mu.Lock()
				pc.sess.exchanges = nil
				pc.sess.mu.Unlock()
			}
			t.discard(pc)
			pc = nil
		}
	}
	return pc
}

// openPubChannel opens a confirm channel on the publishing connection, redialling it if needed.
func (t *Transport) openPubChannel(ctx context.Context) (*pubChannel, error) {
	s, err := t.publisher.get(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.blockedErr(); err != nil {
		return nil, err
	}
	stop := t.interruptible(ctx, s, "open publish channel")
	defer stop()
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open publish channel: %w", err)
	}
	pc := &pubChannel{
		sess:    s,
		ch:      ch,
		returns: ch.NotifyReturn(make(chan amqp.Return, maxChunk)),
		closes:  ch.NotifyClose(make(chan *amqp.Error, 1)),
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("put publish channel in confirm mode: %w", err)
	}
	return pc, nil
}

// discard closes a channel that may still have unconfirmed messages, so their late confirms and
// returns can never be mistaken for those of a later batch. Closing waits for the broker, which
// may be blocked, so it happens in the background; Close ends it by closing the connection.
func (t *Transport) discard(pc *pubChannel) {
	if pc.ch.IsClosed() {
		return
	}
	t.goTracked(func() { _ = pc.ch.Close() })
}

// publishChunk publishes msgs pipelined on pc, waits for their confirms and matches the returns,
// writing one result per message into errs. It reports whether pc is still clean.
func (t *Transport) publishChunk(ctx context.Context, pc *pubChannel, msgs []transport.Outgoing, errs []error) (clean bool) {
	confirms := make([]*amqp.DeferredConfirmation, len(msgs))
	var writing atomic.Bool
	stop := afterFunc(ctx, func() {
		if writing.Load() {
			t.log.Warn("publish write outlived its context (broker not reading); closing the connection",
				"generation", pc.sess.gen)
			_ = pc.sess.conn.CloseDeadline(time.Now())
		}
	})
	now := time.Now()
	sent, toSend := 0, 0
	for i := range msgs {
		if errs[i] != nil {
			continue // refused before publishing (checkExchanges)
		}
		toSend++
		m := &msgs[i]
		writing.Store(true)
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, m.Exchange, m.RoutingKey, transport.Mandatory(m.Exchange), false, toPublishing(m, now))
		writing.Store(false)
		if err != nil {
			if ctx.Err() == nil && pc.ch.IsClosed() {
				err = pc.reason()
			}
			err = fmt.Errorf("publish %s: %w", describe(m), err)
			for j := i; j < len(msgs); j++ {
				if errs[j] == nil {
					errs[j] = err
				}
			}
			toSend = -1 // not clean
			break
		}
		confirms[i] = dc
		sent++
	}
	stop()

	for i, dc := range confirms {
		if dc == nil {
			continue
		}
		select {
		case <-dc.Done():
		case <-ctx.Done():
			for j := i; j < len(confirms); j++ {
				if confirms[j] != nil {
					errs[j] = fmt.Errorf("publish %s: wait for the broker's confirm: %w", describe(&msgs[j]), ctx.Err())
				}
			}
			return false
		}
		if !dc.Acked() {
			// amqp091-go resolves outstanding confirms as nacks when the channel closes.
			if pc.ch.IsClosed() {
				errs[i] = fmt.Errorf("publish %s: channel closed before the broker confirmed: %w", describe(&msgs[i]), pc.reason())
			} else {
				errs[i] = fmt.Errorf("publish %s: %w", describe(&msgs[i]), transport.ErrNacked)
			}
		}
	}

	// Every confirm is in. The broker sends a message's basic.return before its basic.ack, and
	// amqp091-go delivers the return to NotifyReturn before it processes the ack, so the returns
	// of this chunk are all buffered now.
	t.matchReturns(pc, msgs, errs)
	return sent == toSend && !pc.ch.IsClosed()
}

// checkExchanges refuses, with an error wrapping the broker's NOT_FOUND, the messages whose
// exchange does not exist. Publishing to a missing exchange makes the broker close the channel,
// which would fail every other message of the batch too, batch after batch as the outbox retries
// it. Each exchange is checked once per connection, with a passive declaration on a channel of its
// own. An error means the check itself failed (connection trouble).
func (t *Transport) checkExchanges(ctx context.Context, s *session, msgs []transport.Outgoing, errs []error) error {
	var unknown []string
	s.mu.Lock()
	for i := range msgs {
		ex := msgs[i].Exchange
		if ex != "" && !s.exchanges[ex] && !slices.Contains(unknown, ex) {
			unknown = append(unknown, ex)
		}
	}
	s.mu.Unlock()
	for _, ex := range unknown {
		notFound, err := t.exchangeMissing(ctx, s, ex)
		if err != nil {
			return err
		}
		if notFound == nil {
			s.mu.Lock()
			if s.exchanges == nil {
				s.exchanges = map[string]bool{}
			}
			s.exchanges[ex] = true
			s.mu.Unlock()
			continue
		}
		for i := range msgs {
			if msgs[i].Exchange == ex && errs[i] == nil {
				errs[i] = fmt.Errorf("publish %s: the exchange does not exist (declare the topology first): %w", describe(&msgs[i]), notFound)
			}
		}
	}
	return nil
}

// exchangeMissing returns the broker's NOT_FOUND error when exchange does not exist, and nil
// when it does.
func (t *Transport) exchangeMissing(ctx context.Context, s *session, exchange string) (notFound, err error) {
	stop := t.interruptible(ctx, s, "check exchange")
	defer stop()
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("check exchange %q: open channel: %w", exchange, err)
	}
	err = ch.ExchangeDeclarePassive(exchange, amqp.ExchangeDirect, true, false, false, false, nil)
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
		return err, nil // the broker closed the channel
	}
	_ = ch.Close()
	if err != nil {
		return nil, fmt.Errorf("check exchange %q: %w", exchange, err)
	}
	return nil, nil
}

// matchReturns drains pc's returns and marks the messages they belong to. Returns carry no
// delivery tag; they arrive in publish order, so each is matched to the first message with the
// same id, exchange and routing key that is not yet marked.
func (t *Transport) matchReturns(pc *pubChannel, msgs []transport.Outgoing, errs []error) {
	for {
		var r amqp.Return
		select {
		case ret, ok := <-pc.returns:
			if !ok {
				return
			}
			r = ret
		default:
			return
		}
		matched := false
		for i := range msgs {
			m := &msgs[i]
			if errs[i] == nil && m.MessageID == r.MessageId && m.Exchange == r.Exchange && m.RoutingKey == r.RoutingKey {
				errs[i] = fmt.Errorf("publish %s: %w (%d %s)", describe(m), transport.ErrReturned, r.ReplyCode, r.ReplyText)
				matched = true
				break
			}
		}
		if !matched {
			// Cannot happen while only clean channels are reused; logged in case it does.
			t.log.Error("broker returned a message that this batch does not hold",
				"message_id", r.MessageId, "exchange", r.Exchange, "routing_key", r.RoutingKey)
		}
	}
}

// toPublishing maps a message onto AMQP properties. Every message is persistent.
func toPublishing(m *transport.Outgoing, now time.Time) amqp.Publishing {
	var headers amqp.Table
	if len(m.Headers) > 0 {
		headers = make(amqp.Table, len(m.Headers))
		for k, v := range m.Headers {
			headers[k] = v
		}
	}
	return amqp.Publishing{
		Headers:       headers,
		ContentType:   m.ContentType,
		DeliveryMode:  amqp.Persistent,
		CorrelationId: m.CorrelationID,
		MessageId:     m.MessageID,
		Timestamp:     now,
		Type:          m.Type,
		Body:          m.Body,
	}
}

func describe(m *transport.Outgoing) string {
	return fmt.Sprintf("message %q to exchange %q with routing key %q", m.MessageID, m.Exchange, m.RoutingKey)
}
