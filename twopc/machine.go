// Package twopc holds the two-phase-commit state machine. Like package saga it is pure: it takes
// events (votes, acks, decision queries, timer ticks) with the time they happen and returns the new
// state plus the commands to send. The engine commits the new state and its commands in one
// transaction, so the decision is logged before any COMMIT or ABORT is published: that commit is
// the commit point. Presumed abort: no logged decision means abort.
package twopc

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"
)

// State of a transaction. See docs/twopc.md.
type State string

// Transaction states. PREPARING has no decision; COMMITTING and ABORTING have a logged decision that
// is being delivered; COMMITTED and ABORTED are terminal (every participant acknowledged).
const (
	StatePreparing  State = "PREPARING"
	StateCommitting State = "COMMITTING"
	StateAborting   State = "ABORTING"
	StateCommitted  State = "COMMITTED"
	StateAborted    State = "ABORTED"
)

// Terminal reports whether the transaction is done.
func (s State) Terminal() bool { return s == StateCommitted || s == StateAborted }

// Vote of a participant.
type Vote string

// Votes. VoteNone means no vote arrived yet.
const (
	VoteNone Vote = ""
	VoteYes  Vote = "YES"
	VoteNo   Vote = "NO"
)

// Kinds of command.
const (
	KindPrepare = "prepare"
	KindCommit  = "commit"
	KindAbort   = "abort"
)

// Defaults.
const (
	DefaultPrepareTimeout = 10 * time.Second
	// ResendInitial and ResendMax bound the backoff of re-sending a decision to a participant that
	// has not acknowledged it.
	// The first re-send waits long enough for a loaded participant to answer the first copy:
	// re-sending sooner only adds duplicates to its queue.
	ResendInitial = 2 * time.Second
	ResendMax     = 30 * time.Second
	// MaxParticipants bounds a transaction.
	MaxParticipants = 32
)

// Participant is one participant's part of a transaction.
type Participant struct {
	Name    string          `json:"name"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Vote    Vote            `json:"vote,omitempty"`
	Acked   bool            `json:"acked,omitempty"`
	// Sends counts the decision messages sent; the resend backoff grows with it.
	Sends     int       `json:"sends,omitempty"`
	ResendAt  time.Time `json:"resend_at,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// Transition is one recorded state change.
type Transition struct {
	From State     `json:"from"`
	To   State     `json:"to"`
	At   time.Time `json:"at"`
}

// Tx is everything the coordinator knows about one transaction.
type Tx struct {
	ID              string        `json:"-"`
	State           State         `json:"-"`
	Participants    []Participant `json:"participants"`
	PrepareDeadline time.Time     `json:"prepare_deadline"`
	DecidedAt       time.Time     `json:"decided_at,omitzero"`
	Reason          string        `json:"reason,omitempty"`
	History         []Transition  `json:"history,omitempty"`
	// Trace is the W3C traceparent of the span that began the transaction, when the coordinator
	// traces (see saga.State.Trace). The machine never reads it.
	Trace string `json:"trace,omitempty"`
}

// Command is a message the machine asks the engine to send to one participant.
type Command struct {
	Participant int
	Kind        string
	// Attempt numbers the decision messages to one participant (1 for PREPARE).
	Attempt int
}

// New returns a transaction in PREPARING and the PREPARE commands.
func New(id string, parts []Participant, prepareTimeout time.Duration, now time.Time) (*Tx, []Command) {
	if prepareTimeout <= 0 {
		prepareTimeout = DefaultPrepareTimeout
	}
	t := &Tx{ID: id, State: StatePreparing, Participants: parts, PrepareDeadline: now.Add(prepareTimeout)}
	t.History = append(t.History, Transition{To: StatePreparing, At: now})
	cmds := make([]Command, len(parts))
	for i := range parts {
		t.Participants[i].Vote, t.Participants[i].Acked = VoteNone, false
		cmds[i] = Command{Participant: i, Kind: KindPrepare, Attempt: 1}
	}
	return t, cmds
}

// Index returns the position of the named participant, or -1.
func (t *Tx) Index(name string) int {
	for i, p := range t.Participants {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// ApplyVote records a vote. Votes after the decision change nothing (a late YES after a timeout
// is answered by the ABORT already being sent). The first NO decides ABORT; the last YES decides
// COMMIT.
func ApplyVote(t *Tx, participant int, v Vote, reason string, now time.Time) ([]Command, bool) {
	if t.State != StatePreparing || participant < 0 || participant >= len(t.Participants) {
		return nil, false
	}
	p := &t.Participants[participant]
	if p.Vote != VoteNone || (v != VoteYes && v != VoteNo) {
		return nil, false
	}
	if !t.PrepareDeadline.After(now) {
		// A vote that arrives after the prepare timeout (say, queued while the coordinator was
		// down) cannot count: the timeout means abort, whichever event is applied first.
		return decide(t, StateAborting, "prepare timed out at "+t.PrepareDeadline.UTC().Format(time.RFC3339Nano), now), true
	}
	p.Vote = v
	if v == VoteNo {
		p.LastError = reason
		return decide(t, StateAborting, fmt.Sprintf("participant %q voted NO: %s", p.Name, reason), now), true
	}
	for _, q := range t.Participants {
		if q.Vote != VoteYes {
			return nil, true
		}
	}
	return decide(t, StateCommitting, "", now), true
}

// ApplyAck records that a participant applied the decision. attempt is the decision message's;
// any attempt counts, since the participant applies the decision once.
func ApplyAck(t *Tx, participant int, kind string, now time.Time) bool {
	if participant < 0 || participant >= len(t.Participants) {
		return false
	}
	if !(t.State == StateCommitting && kind == KindCommit || t.State == StateAborting && kind == KindAbort) {
		return false
	}
	p := &t.Participants[participant]
	if p.Acked {
		return false
	}
	p.Acked = true
	p.ResendAt = time.Time{}
	for _, q := range t.Participants {
		if !q.Acked {
			return true
		}
	}
	if t.State == StateCommitting {
		setState(t, StateCommitted, now)
	} else {
		setState(t, StateAborted, now)
	}
	return true
}

// Query answers a participant that asks for the decision (it is prepared and heard nothing). With
// no decision logged, the coordinator decides ABORT first (presumed abort), so that a COMMIT can
// never follow; the answer is the decision message, re-sent to that participant.
func Query(t *Tx, participant int, now time.Time) ([]Command, bool) {
	if participant < 0 || participant >= len(t.Participants) {
		return nil, false
	}
	switch t.State {
	case StatePreparing:
		return decide(t, StateAborting, fmt.Sprintf("participant %q asked for the decision before one was made", t.Participants[participant].Name), now), true
	case StateCommitting, StateAborting, StateCommitted, StateAborted:
		return []Command{send(t, participant, now)}, true
	}
	return nil, false
}

// Tick fires due timers: the prepare timeout (decide ABORT) and decision re-sends.
func Tick(t *Tx, now time.Time) ([]Command, bool) {
	switch t.State {
	case StatePreparing:
		if !t.PrepareDeadline.After(now) {
			return decide(t, StateAborting, "prepare timed out at "+t.PrepareDeadline.UTC().Format(time.RFC3339Nano), now), true
		}
	case StateCommitting, StateAborting:
		var cmds []Command
		for i, p := range t.Participants {
			if !p.Acked && !p.ResendAt.IsZero() && !p.ResendAt.After(now) {
				cmds = append(cmds, send(t, i, now))
			}
		}
		return cmds, len(cmds) > 0
	}
	return nil, false
}

// WakeAt returns when Tick must next run, or zero.
func WakeAt(t *Tx) time.Time {
	switch t.State {
	case StatePreparing:
		return t.PrepareDeadline
	case StateCommitting, StateAborting:
		var at time.Time
		for _, p := range t.Participants {
			if !p.Acked && !p.ResendAt.IsZero() && (at.IsZero() || p.ResendAt.Before(at)) {
				at = p.ResendAt
			}
		}
		return at
	}
	return time.Time{}
}

// decide logs the decision and sends it to every participant.
func decide(t *Tx, to State, reason string, now time.Time) []Command {
	t.DecidedAt = now
	t.Reason = reason
	setState(t, to, now)
	cmds := make([]Command, len(t.Participants))
	for i := range t.Participants {
		cmds[i] = send(t, i, now)
	}
	return cmds
}

// send builds the decision message to participant i and schedules its re-send.
func send(t *Tx, i int, now time.Time) Command {
	p := &t.Participants[i]
	p.Sends++
	kind := KindAbort
	if t.State == StateCommitting || t.State == StateCommitted {
		kind = KindCommit
	}
	if !t.State.Terminal() {
		p.ResendAt = now.Add(resendBackoff(t.ID, p.Name, p.Sends))
	}
	return Command{Participant: i, Kind: kind, Attempt: p.Sends}
}

func resendBackoff(id, name string, sends int) time.Duration {
	d := ResendInitial
	for i := 1; i < sends && d < ResendMax; i++ {
		d *= 2
	}
	if d > ResendMax {
		d = ResendMax
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", id, name, sends)))
	frac := float64(uint16(h[0])<<8|uint16(h[1])) / 65536.0
	return time.Duration(float64(d) * (0.5 + frac/2))
}

func setState(t *Tx, to State, now time.Time) {
	if t.State == to {
		return
	}
	t.History = append(t.History, Transition{From: t.State, To: to, At: now})
	t.State = to
}

// Transitions lists the legal state changes, for checks of recorded histories (T1, G7).
func Transitions() map[State][]State {
	return map[State][]State{
		"":              {StatePreparing},
		StatePreparing:  {StateCommitting, StateAborting},
		StateCommitting: {StateCommitted},
		StateAborting:   {StateAborted},
	}
}
