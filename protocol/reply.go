package protocol

import (
	"encoding/json"
)

// Reply is a decoded reply to a saga step command or a transaction command: the command it
// answers (from its correlation id) and the participant's answer.
type Reply struct {
	CommandRef
	Outcome Outcome
	// Output is a saga action's output (empty for every other kind).
	Output json.RawMessage
	// Error says why a step failed or asked for a retry, or why a participant voted NO; at most
	// MaxErrorBytes (DecodeReply cuts a longer one).
	Error string
}

// replyBody is the body of every reply; StepReply and TxReply are its two encodings.
type replyBody struct {
	Outcome Outcome         `json:"outcome"`
	Output  json.RawMessage `json:"output,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// DecodeReply parses and checks a reply. Any error wraps ErrMalformed.
func DecodeReply(m Message) (*Reply, error) {
	if err := checkBody(m, TypeReply); err != nil {
		return nil, err
	}
	ref, err := ParseCommandID(m.CorrelationID)
	if err != nil {
		return nil, err
	}
	var b replyBody
	if err := strictUnmarshal(m.Body, &b); err != nil {
		return nil, malformed("body: %v", err)
	}
	if !b.Outcome.Answers(ref.Kind) {
		return nil, malformed("outcome %q does not answer a %s", b.Outcome, ref.Kind)
	}
	if len(b.Output) > MaxOutputBytes {
		return nil, malformed("output of %d bytes exceeds %d", len(b.Output), MaxOutputBytes)
	}
	if err := checkJSONValue("output", b.Output); err != nil {
		return nil, err
	}
	if err := checkText("error", b.Error); err != nil {
		return nil, err
	}
	return &Reply{CommandRef: ref, Outcome: b.Outcome, Output: b.Output, Error: cutText(b.Error)}, nil
}

// reply builds the reply to the command with message id commandID.
func reply(commandID string, headers map[string]string, r any) (Message, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return Message{}, err
	}
	return Message{
		MessageID:     ReplyID(commandID),
		Type:          TypeReply,
		ContentType:   ContentType,
		CorrelationID: commandID,
		Headers:       headers,
		Body:          body,
	}, nil
}
