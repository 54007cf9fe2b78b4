package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// StepCommand asks a participant to run a step's action or compensation.
type StepCommand struct {
	SagaID      string `json:"saga_id"`
	Step        string `json:"step"`
	StepIndex   int    `json:"step_index"`
	Kind        Kind   `json:"kind"`
	Participant string `json:"participant"`
	// Action is the action or compensation name the participant dispatches on.
	Action  string `json:"action"`
	Attempt int    `json:"attempt"`
	// Input is the saga input.
	Input json.RawMessage `json:"input,omitempty"`
	// Deps holds the outputs of the steps this step depends on, by step name (actions only).
	Deps map[string]json.RawMessage `json:"deps,omitempty"`
	// Output is the output of the action being compensated (compensations only).
	Output json.RawMessage `json:"output,omitempty"`
	// TimeoutMillis is the step's timeout in milliseconds: how long the coordinator waits for
	// this attempt's reply, from when it sent the command, before it retries or compensates.
	// 0 when the sender gives none. A participant may stop its handler after this long: a later
	// reply only finds the attempt already given up.
	TimeoutMillis int64 `json:"timeout_ms,omitempty"`
}

// Ref returns the command's reference; its ID is the command's message id.
func (c *StepCommand) Ref() CommandRef {
	return CommandRef{SagaID: c.SagaID, StepIndex: c.StepIndex, Kind: c.Kind, Attempt: c.Attempt}
}

// Timeout returns TimeoutMillis as a duration (0 when none is given).
func (c *StepCommand) Timeout() time.Duration {
	return time.Duration(c.TimeoutMillis) * time.Millisecond
}

// StepReply is a participant's answer to a StepCommand.
type StepReply struct {
	// Outcome is OutcomeSucceeded, OutcomeFailed or OutcomeRetry.
	Outcome Outcome         `json:"outcome"`
	Output  json.RawMessage `json:"output,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// Encode returns the AMQP message of a step command, with traceparent left to the caller.
func (c *StepCommand) Encode() (Message, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return Message{}, err
	}
	typ := TypeSagaAction
	if c.Kind == KindCompensate {
		typ = TypeSagaCompensate
	}
	return Message{
		MessageID:   c.Ref().ID(),
		Type:        typ,
		ContentType: ContentType,
		Headers:     c.headers(),
		Body:        body,
	}, nil
}

// DecodeStepCommand parses and checks a step command. Any error wraps ErrMalformed.
func DecodeStepCommand(m Message) (*StepCommand, error) {
	if err := checkBody(m, TypeSagaAction, TypeSagaCompensate); err != nil {
		return nil, err
	}
	var c StepCommand
	if err := strictUnmarshal(m.Body, &c); err != nil {
		return nil, malformed("body: %v", err)
	}
	switch {
	case c.SagaID == "":
		return nil, malformed("saga_id is empty")
	case c.Step == "":
		return nil, malformed("step is empty")
	case c.Kind != KindAction && c.Kind != KindCompensate:
		return nil, malformed("kind %q must be %q or %q", c.Kind, KindAction, KindCompensate)
	case c.Attempt < 1:
		return nil, malformed("attempt %d must be at least 1", c.Attempt)
	case c.StepIndex < 0:
		return nil, malformed("step_index %d is negative", c.StepIndex)
	case c.TimeoutMillis < 0:
		return nil, malformed("timeout_ms %d is negative", c.TimeoutMillis)
	case c.Action == "":
		return nil, malformed("action is empty")
	}
	if err := c.checkValues(); err != nil {
		return nil, err
	}
	if (m.Type == TypeSagaCompensate) != (c.Kind == KindCompensate) {
		return nil, malformed("type %q does not match kind %q", m.Type, c.Kind)
	}
	if m.MessageID != "" && m.MessageID != c.Ref().ID() {
		return nil, malformed("message_id %q does not match the body", m.MessageID)
	}
	return &c, nil
}

// checkValues applies the name rule to the names a command carries and the JSON rule (CheckJSON)
// to its values.
func (c *StepCommand) checkValues() error {
	if err := checkText("saga_id", c.SagaID); err != nil {
		return err
	}
	for field, name := range map[string]string{"step": c.Step, "action": c.Action, "participant": c.Participant} {
		if err := CheckName(name); err != nil && (name != "" || field != "participant") {
			return malformed("%s %v", field, err)
		}
	}
	if err := checkJSONValue("input", c.Input); err != nil {
		return err
	}
	for name, v := range c.Deps {
		if err := checkJSONValue("deps."+name, v); err != nil {
			return err
		}
	}
	return checkJSONValue("output", c.Output)
}

// EncodeStepReply returns the reply message to cmd.
func EncodeStepReply(cmd *StepCommand, r StepReply) (Message, error) {
	return reply(cmd.Ref().ID(), cmd.headers(), r)
}

// headers are a step command's headers; its reply carries the same ones.
func (c *StepCommand) headers() map[string]string {
	return map[string]string{
		HeaderVersion:     Version,
		HeaderSagaID:      c.SagaID,
		HeaderStep:        c.Step,
		HeaderStepIndex:   strconv.Itoa(c.StepIndex),
		HeaderAttempt:     strconv.Itoa(c.Attempt),
		HeaderKind:        string(c.Kind),
		HeaderParticipant: c.Participant,
	}
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errMoreData
	}
	return nil
}

var errMoreData = jsonError("trailing data after the JSON value")

type jsonError string

func (e jsonError) Error() string { return string(e) }
