// Package protocol is sagacoord's wire protocol over RabbitMQ: names of exchanges and queues, message
// types, headers, and the encoding of commands and replies. docs/protocol.md is its human-readable
// specification; a worker in any language that follows it can join.
//
// # Stability
//
// The wire protocol has a version of its own (Version; docs/protocol.md §1): within version 1,
// fields and headers are only added. This package follows the module's semantic versioning:
// within a major version nothing exported is removed or changes meaning, while struct fields,
// constants and functions are added as the protocol grows (use keyed composite literals).
package protocol

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Version is the protocol version carried in every message's HeaderVersion header.
const Version = "1"

// Exchanges and queues.
const (
	// ExchangeCommands is a direct exchange; the routing key is the participant name for saga
	// step commands and TwoPCRoutingKey for two-phase-commit commands.
	ExchangeCommands = "sagacoord.commands"
	// ExchangeReplies is a direct exchange; replies are published with routing key RoutingKeyReplies.
	ExchangeReplies = "sagacoord.replies"
	// ExchangeDead is a fanout exchange that receives every dead-lettered message.
	ExchangeDead = "sagacoord.dead"
	// ExchangeFinals is a direct exchange of final notices (TypeFinal); the routing key is the
	// participant name. A participant that wants them binds its queue to it.
	ExchangeFinals = "sagacoord.finals"
	// QueueReplies is the one reply queue that all coordinator instances consume from.
	QueueReplies = "sagacoord.coordinator.replies"
	// QueueDead holds dead letters for inspection.
	QueueDead = "sagacoord.dead.letters"
	// RoutingKeyReplies is the routing key of every reply.
	RoutingKeyReplies = "coordinator"
	// QueuePrefix prefixes a participant's queue name.
	QueuePrefix = "sagacoord.participant."
)

// ParticipantQueue returns the queue that holds a participant's saga step commands (and final
// notices).
func ParticipantQueue(participant string) string { return QueuePrefix + participant }

// twoPCSuffix ends the routing key and the queue of a participant's two-phase-commit commands.
// Names never hold a colon (CheckName), so neither can be another participant's.
const twoPCSuffix = ":twopc"

// TwoPCQueue returns the queue that holds a participant's two-phase-commit commands (PREPARE,
// COMMIT, ABORT). It is apart from ParticipantQueue so that a backlog of saga steps never
// delays a PREPARE past its transaction's timeout.
func TwoPCQueue(participant string) string { return ParticipantQueue(participant) + twoPCSuffix }

// TwoPCRoutingKey returns the routing key, on ExchangeCommands, of a participant's
// two-phase-commit commands; TwoPCQueue is bound with it.
func TwoPCRoutingKey(participant string) string { return participant + twoPCSuffix }

// Message types (the AMQP type property).
const (
	TypeSagaAction     = "saga.action"
	TypeSagaCompensate = "saga.compensate"
	TypePrepare        = "twopc.prepare"
	TypeCommit         = "twopc.commit"
	TypeAbort          = "twopc.abort"
	TypeDecisionQuery  = "twopc.query"
	TypeReply          = "reply"
	TypeFinal          = "final"
)

// ContentType of every body.
const ContentType = "application/json"

// Header names. Values are strings.
const (
	HeaderVersion     = "x-sagacoord-version"
	HeaderSagaID      = "x-saga-id"
	HeaderTxID        = "x-tx-id"
	HeaderStep        = "x-step"
	HeaderStepIndex   = "x-step-index"
	HeaderAttempt     = "x-attempt"
	HeaderKind        = "x-kind"
	HeaderParticipant = "x-participant"
	HeaderTraceparent = "traceparent"
	// HeaderDeadQueue and HeaderDeadReason are set on an item of a bundle that its consumer
	// rejected, which is dead-lettered alone: the queue it came from and why (docs/protocol.md §16).
	HeaderDeadQueue  = "x-sagacoord-dead-queue"
	HeaderDeadReason = "x-sagacoord-dead-reason"
	HeaderTracestate = "tracestate"
)

// Size limits. A step command carries the saga input and the outputs of the steps it depends
// on, so commands may be larger than any single payload.
const (
	// MaxBodyBytes is the largest body a decoder accepts.
	MaxBodyBytes = 16 << 20
	// MaxOutputBytes is the largest step output a reply may carry.
	MaxOutputBytes = 256 << 10
)

// checkText rejects text that PostgreSQL's text and jsonb types cannot hold (NUL, invalid UTF-8):
// such a value would fail every transaction that tries to store it.
func checkText(field, v string) error {
	if !utf8.ValidString(v) {
		return malformed("%s is not valid UTF-8", field)
	}
	if strings.IndexByte(v, 0) >= 0 {
		return malformed("%s contains a NUL character", field)
	}
	return nil
}

// checkBody applies the checks every decoder shares: the type, the body size and encoding and,
// when present, the protocol version header.
func checkBody(m Message, types ...string) error {
	ok := false
	for _, t := range types {
		ok = ok || m.Type == t
	}
	if !ok {
		return malformed("type %q is not one of %v", m.Type, types)
	}
	if len(m.Body) > MaxBodyBytes {
		return malformed("body of %d bytes exceeds %d", len(m.Body), MaxBodyBytes)
	}
	if !utf8.Valid(m.Body) {
		// encoding/json would replace the bad bytes silently; JSON text is UTF-8.
		return malformed("body is not valid UTF-8")
	}
	if v, set := m.Headers[HeaderVersion]; set && v != Version {
		return malformed("%s %q is not %q; this peer speaks protocol version %s", HeaderVersion, v, Version, Version)
	}
	return nil
}

// Message is one AMQP message as sagacoord sees it. Every message is persistent.
type Message struct {
	MessageID     string
	Type          string
	ContentType   string
	CorrelationID string
	Headers       map[string]string
	Body          []byte
}

// ErrMalformed marks a message that no retry can fix: it is dead-lettered.
var ErrMalformed = errors.New("malformed message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}
