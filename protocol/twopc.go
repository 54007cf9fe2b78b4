package protocol

import (
	"encoding/json"
	"strconv"
	"time"
)

// TxCommand asks a participant to prepare, commit or abort its part of a transaction.
type TxCommand struct {
	TxID        string `json:"tx_id"`
	Participant string `json:"participant"`
	// Kind is KindPrepare, KindCommit or KindAbort.
	Kind Kind `json:"kind"`
	// Attempt numbers copies of the decision sent to this participant (1 for PREPARE).
	Attempt int `json:"attempt"`
	// Payload is the participant's prepare payload (sent with every kind).
	Payload json.RawMessage `json:"payload,omitempty"`
	// TimeoutMillis, on a PREPARE, is the transaction's prepare timeout in milliseconds: how long
	// the coordinator waits for the votes, from when it sent the PREPAREs, before it aborts. 0
	// when not given (and on COMMIT and ABORT). A participant may vote NO after this long.
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`
}

// Ref returns the command's reference; its ID is the command's message id.
func (c *TxCommand) Ref() CommandRef {
	return CommandRef{TxID: c.TxID, Participant: c.Participant, Kind: c.Kind, Attempt: c.Attempt}
}

// Timeout returns TimeoutMillis as a duration (0 when none is given).
func (c *TxCommand) Timeout() time.Duration {
	return time.Duration(c.TimeoutMillis) * time.Millisecond
}

// TxReply is a participant's answer: OutcomeVoteYes or OutcomeVoteNo to a PREPARE, OutcomeAck to a
// COMMIT or ABORT.
type TxReply struct {
	Outcome Outcome `json:"outcome"`
	Error   string  `json:"error,omitempty"`
}

// TxQuery is sent by a prepared participant that has not learned the decision. It goes to the
// replies exchange like a reply, with type TypeDecisionQuery.
type TxQuery struct {
	TxID        string `json:"tx_id"`
	Participant string `json:"participant"`
}

func txType(kind Kind) string {
	switch kind {
	case KindPrepare:
		return TypePrepare
	case KindCommit:
		return TypeCommit
	default:
		return TypeAbort
	}
}

// Encode returns the AMQP message of a transaction command.
func (c *TxCommand) Encode() (Message, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return Message{}, err
	}
	return Message{
		MessageID:   c.Ref().ID(),
		Type:        txType(c.Kind),
		ContentType: ContentType,
		Headers:     c.headers(),
		Body:        body,
	}, nil
}

// IsTxCommand reports whether m's type is a transaction command.
func IsTxCommand(m Message) bool {
	return m.Type == TypePrepare || m.Type == TypeCommit || m.Type == TypeAbort
}

// DecodeTxCommand parses and checks a transaction command. Any error wraps ErrMalformed.
func DecodeTxCommand(m Message) (*TxCommand, error) {
	if err := checkBody(m, TypePrepare, TypeCommit, TypeAbort); err != nil {
		return nil, err
	}
	var c TxCommand
	if err := strictUnmarshal(m.Body, &c); err != nil {
		return nil, malformed("body: %v", err)
	}
	switch {
	case c.TxID == "":
		return nil, malformed("tx_id is empty")
	case c.Participant == "":
		return nil, malformed("participant is empty")
	case c.Attempt < 1:
		return nil, malformed("attempt %d must be at least 1", c.Attempt)
	case c.TimeoutMillis < 0:
		return nil, malformed("timeout_ms %d is negative", c.TimeoutMillis)
	case txType(c.Kind) != m.Type || !c.Kind.Tx():
		return nil, malformed("kind %q does not match type %q", c.Kind, m.Type)
	}
	if err := checkText("tx_id", c.TxID); err != nil {
		return nil, err
	}
	if err := CheckName(c.Participant); err != nil {
		return nil, malformed("participant %v", err)
	}
	if err := checkJSONValue("payload", c.Payload); err != nil {
		return nil, err
	}
	if m.MessageID != "" && m.MessageID != c.Ref().ID() {
		return nil, malformed("message_id %q does not match the body", m.MessageID)
	}
	return &c, nil
}

// EncodeTxReply returns the reply message to cmd.
func EncodeTxReply(cmd *TxCommand, r TxReply) (Message, error) {
	return reply(cmd.Ref().ID(), cmd.headers(), r)
}

// headers are a transaction command's headers; its reply carries the same ones.
func (c *TxCommand) headers() map[string]string {
	return map[string]string{
		HeaderVersion:     Version,
		HeaderTxID:        c.TxID,
		HeaderAttempt:     strconv.Itoa(c.Attempt),
		HeaderKind:        string(c.Kind),
		HeaderParticipant: c.Participant,
	}
}

// EncodeTxQuery returns the decision query of a prepared participant. id must be unique per query
// (a re-sent query may reuse it).
func EncodeTxQuery(q TxQuery, id string) (Message, error) {
	body, err := json.Marshal(q)
	if err != nil {
		return Message{}, err
	}
	return Message{
		MessageID:   "query:" + q.TxID + ":" + q.Participant + ":" + id,
		Type:        TypeDecisionQuery,
		ContentType: ContentType,
		Headers: map[string]string{
			HeaderVersion:     Version,
			HeaderTxID:        q.TxID,
			HeaderParticipant: q.Participant,
		},
		Body: body,
	}, nil
}

// DecodeTxQuery parses a decision query. Any error wraps ErrMalformed.
func DecodeTxQuery(m Message) (*TxQuery, error) {
	if err := checkBody(m, TypeDecisionQuery); err != nil {
		return nil, err
	}
	var q TxQuery
	if err := strictUnmarshal(m.Body, &q); err != nil {
		return nil, malformed("body: %v", err)
	}
	if q.TxID == "" || q.Participant == "" {
		return nil, malformed("tx_id and participant must be set")
	}
	if err := checkText("tx_id", q.TxID); err != nil {
		return nil, err
	}
	if err := CheckName(q.Participant); err != nil {
		return nil, malformed("participant %v", err)
	}
	return &q, nil
}
