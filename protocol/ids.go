package protocol

import (
	"strconv"
	"strings"
)

// CommandRef names one attempt of one command: a saga step's action or compensation (SagaID and
// StepIndex), or a two-phase-commit message to one participant (TxID and Participant). Its ID is
// the command's deterministic message id: a republished copy of the same attempt has the same id,
// so consumers can deduplicate on it, and the reply carries it as its correlation id.
type CommandRef struct {
	// SagaID and StepIndex name a saga step (Kind action or compensate).
	SagaID    string
	StepIndex int
	// TxID and Participant name a transaction's participant (Kind prepare, commit or abort).
	TxID        string
	Participant string
	Kind        Kind
	Attempt     int
}

// ID returns the command's message id: saga:<id>:<step>:<kind>:<attempt> or
// tx:<id>:<participant>:<kind>:<attempt>.
func (r CommandRef) ID() string {
	if r.Kind.Tx() {
		return "tx:" + r.TxID + ":" + r.Participant + ":" + string(r.Kind) + ":" + strconv.Itoa(r.Attempt)
	}
	return "saga:" + r.SagaID + ":" + strconv.Itoa(r.StepIndex) + ":" + string(r.Kind) + ":" + strconv.Itoa(r.Attempt)
}

// ReplyID returns the message id of the reply to the command with id commandID.
func ReplyID(commandID string) string { return "reply:" + commandID }

// ParseCommandID parses a command id made by CommandRef.ID. Any error wraps ErrMalformed.
func ParseCommandID(id string) (CommandRef, error) {
	if err := checkText("command id", id); err != nil {
		return CommandRef{}, err
	}
	parts := strings.Split(id, ":")
	if len(parts) != 5 || (parts[0] != "saga" && parts[0] != "tx") {
		return CommandRef{}, malformed("command id %q is not saga:<id>:<step>:<kind>:<attempt> or tx:<id>:<participant>:<kind>:<attempt>", id)
	}
	ref := CommandRef{Kind: Kind(parts[3])}
	var err error
	if ref.Attempt, err = strconv.Atoi(parts[4]); err != nil || ref.Attempt < 1 {
		return CommandRef{}, malformed("command id %q: bad attempt", id)
	}
	if parts[1] == "" {
		return CommandRef{}, malformed("command id %q: empty %s id", id, parts[0])
	}
	if parts[0] == "tx" {
		if !ref.Kind.Tx() {
			return CommandRef{}, malformed("command id %q: kind must be prepare, commit or abort", id)
		}
		if err := CheckName(parts[2]); err != nil {
			return CommandRef{}, malformed("command id %q: participant %v", id, err)
		}
		ref.TxID, ref.Participant = parts[1], parts[2]
		return ref, nil
	}
	if !ref.Kind.Saga() {
		return CommandRef{}, malformed("command id %q: kind must be action or compensate", id)
	}
	if ref.StepIndex, err = strconv.Atoi(parts[2]); err != nil || ref.StepIndex < 0 {
		return CommandRef{}, malformed("command id %q: bad step index", id)
	}
	ref.SagaID = parts[1]
	return ref, nil
}
