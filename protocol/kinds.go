package protocol

import (
	"fmt"
	"regexp"
)

// Kind is what a command asks of a participant. Saga steps have actions and compensations;
// two-phase-commit transactions have PREPARE, COMMIT and ABORT. The kind is carried in
// HeaderKind, in the command body and in the participant's barrier key.
type Kind string

// Command kinds.
const (
	KindAction     Kind = "action"
	KindCompensate Kind = "compensate"
	KindPrepare    Kind = "prepare"
	KindCommit     Kind = "commit"
	KindAbort      Kind = "abort"
)

// Saga reports whether k is a saga step kind (action or compensate).
func (k Kind) Saga() bool { return k == KindAction || k == KindCompensate }

// Tx reports whether k is a two-phase-commit kind (prepare, commit or abort).
func (k Kind) Tx() bool { return k == KindPrepare || k == KindCommit || k == KindAbort }

// Outcome is a participant's answer to a command.
type Outcome string

// Outcomes. A saga step answers succeeded, failed (a business failure: the saga compensates) or
// retry (transient: the coordinator tries again). A PREPARE answers vote_yes or vote_no; a
// COMMIT or ABORT answers ack.
const (
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeFailed    Outcome = "failed"
	OutcomeRetry     Outcome = "retry"
	OutcomeVoteYes   Outcome = "vote_yes"
	OutcomeVoteNo    Outcome = "vote_no"
	OutcomeAck       Outcome = "ack"
)

// Answers reports whether o is a valid answer to a command of kind k.
func (o Outcome) Answers(k Kind) bool {
	switch k {
	case KindAction, KindCompensate:
		return o == OutcomeSucceeded || o == OutcomeFailed || o == OutcomeRetry
	case KindPrepare:
		return o == OutcomeVoteYes || o == OutcomeVoteNo
	case KindCommit, KindAbort:
		return o == OutcomeAck
	}
	return false
}

// MaxNameLength bounds every name the protocol carries: participants, definitions, steps and
// actions. A participant's queue is QueuePrefix plus its name, well within AMQP's 255 bytes.
const MaxNameLength = 128

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// CheckName returns an error that says what is wrong with name, or nil when it is a valid
// participant, definition, step or action name: 1 to MaxNameLength letters, digits, '.', '_' or
// '-', starting with a letter or digit. This is the one name rule of sagacoord.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("must not be empty")
	case len(name) > MaxNameLength:
		return fmt.Errorf("is %d characters long; the limit is %d", len(name), MaxNameLength)
	case !namePattern.MatchString(name):
		return fmt.Errorf("%q may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit", name)
	}
	return nil
}
