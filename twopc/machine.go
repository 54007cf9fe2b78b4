// Package twopc holds the two-phase-commit state machine. Like package saga it is pure: it takes
// events (votes, acks, decision queries, timer ticks) with the time they happen and returns the new
// state plus the commands to send. The engine commits the new state and its commands in one
// transaction, so the decision is logged before any COMMIT or ABORT is published: that commit is
// the commit point. Presumed abort: no logged decision means abort.
//
// It is the coordinator's machinery, not an API for users, and may change in any release.
package twopc

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
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
	// VotedAt and AckedAt are when its vote and its acknowledgement of the decision were
	// applied: a participant that voted YES holds what it prepared from one to the other.
	VotedAt time.Time `json:"voted_at,omitzero"`
	AckedAt time.Time `json:"acked_at,omitzero"`
}

// Blocked is how long a participant that voted YES has held what it prepared: until its
// acknowledgement of the decision, or until now while it has none. Zero for any other vote.
func (p Participant) Blocked(now time.Time) time.Duration {
	if p.Vote != VoteYes || p.VotedAt.IsZero() {
		return 0
	}
	if p.Acked && !p.AckedAt.IsZero() {
		return p.AckedAt.Sub(p.VotedAt)
	}
	return max(0, now.Sub(p.VotedAt))
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
	Kind        protocol.Kind
	// Attempt numbers the decision messages to one participant (1 for PREPARE).
	Attempt int
}

// Effects is what one call of a Machine method decided: the commands to send, committed with the
// new state, and the events telemetry observes after that commit. saga.Effects has the same
// shape.
type Effects struct {
	Commands []Command
	Events   []Event
}

// Event is something a transition did: a StateChanged, a Voted or an Acked.
type Event interface{ txEvent() }

// StateChanged is a change of the transaction's state. The first is From "" to PREPARING; one
// from PREPARING is the decision.
type StateChanged struct {
	From, To State
	At       time.Time
}

// Voted is a participant's vote, counted.
type Voted struct {
	Participant int
	Vote        Vote
	At          time.Time
}

// Acked is a participant's acknowledgement of the decision.
type Acked struct {
	Participant int
	Kind        protocol.Kind
	At          time.Time
}

func (StateChanged) txEvent() {}
func (Voted) txEvent()        {}
func (Acked) txEvent()        {}

// Machine applies events to transactions. Like saga.Machine it is pure: time comes in with each
// event, and each method changes the transaction it is given and returns what it decided.
type Machine struct{}

// Begin returns a transaction in PREPARING and the PREPARE commands.
func (Machine) Begin(id string, parts []Participant, prepareTimeout time.Duration, now time.Time) (*Tx, Effects) {
	if prepareTimeout <= 0 {
		prepareTimeout = DefaultPrepareTimeout
	}
	t := &Tx{ID: id, Participants: parts, PrepareDeadline: now.Add(prepareTimeout)}
	var fx Effects
	setState(t, &fx, StatePreparing, now)
	for i := range parts {
		t.Participants[i].Vote, t.Participants[i].Acked = VoteNone, false
		t.Participants[i].VotedAt, t.Participants[i].AckedAt = time.Time{}, time.Time{}
		fx.Commands = append(fx.Commands, Command{Participant: i, Kind: protocol.KindPrepare, Attempt: 1})
	}
	return t, fx
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

// Reply applies a participant's reply: a vote to a PREPARE, or an ack of a COMMIT or ABORT. A
// reply that changes nothing (a duplicate, a vote after the decision, an unknown participant)
// returns changed false.
func (Machine) Reply(t *Tx, r protocol.Reply, now time.Time) (Effects, bool) {
	i := t.Index(r.Participant)
	if i < 0 {
		return Effects{}, false
	}
	var fx Effects
	switch r.Kind {
	case protocol.KindPrepare:
		v := map[protocol.Outcome]Vote{protocol.OutcomeVoteYes: VoteYes, protocol.OutcomeVoteNo: VoteNo}[r.Outcome]
		return fx, vote(t, &fx, i, v, r.Error, now)
	case protocol.KindCommit, protocol.KindAbort:
		return fx, ack(t, &fx, i, r.Kind, now)
	}
	return Effects{}, false
}

// vote records a vote. Votes after the decision change nothing (a late YES after a timeout is
// answered by the ABORT already being sent). The first NO decides ABORT; the last YES decides
// COMMIT.
func vote(t *Tx, fx *Effects, participant int, v Vote, reason string, now time.Time) bool {
	if t.State != StatePreparing {
		return false
	}
	p := &t.Participants[participant]
	if p.Vote != VoteNone || (v != VoteYes && v != VoteNo) {
		return false
	}
	if !t.PrepareDeadline.After(now) {
		// A vote that arrives after the prepare timeout (say, queued while the coordinator was
		// down) cannot count: the timeout means abort, whichever event is applied first.
		decide(t, fx, StateAborting, "prepare timed out at "+t.PrepareDeadline.UTC().Format(time.RFC3339Nano), now)
		return true
	}
	p.Vote, p.VotedAt = v, now
	fx.Events = append(fx.Events, Voted{Participant: participant, Vote: v, At: now})
	if v == VoteNo {
		p.LastError = reason
		decide(t, fx, StateAborting, fmt.Sprintf("participant %q voted NO: %s", p.Name, reason), now)
		return true
	}
	for _, q := range t.Participants {
		if q.Vote != VoteYes {
			return true
		}
	}
	decide(t, fx, StateCommitting, "", now)
	return true
}

// ack records that a participant applied the decision. Any copy of the decision counts, since
// the participant applies it once.
func ack(t *Tx, fx *Effects, participant int, kind protocol.Kind, now time.Time) bool {
	if !(t.State == StateCommitting && kind == protocol.KindCommit || t.State == StateAborting && kind == protocol.KindAbort) {
		return false
	}
	p := &t.Participants[participant]
	if p.Acked {
		return false
	}
	p.Acked, p.AckedAt = true, now
	p.ResendAt = time.Time{}
	fx.Events = append(fx.Events, Acked{Participant: participant, Kind: kind, At: now})
	for _, q := range t.Participants {
		if !q.Acked {
			return true
		}
	}
	if t.State == StateCommitting {
		setState(t, fx, StateCommitted, now)
	} else {
		setState(t, fx, StateAborted, now)
	}
	return true
}

// Query answers a participant that asks for the decision (it is prepared and heard nothing). With
// no decision logged, the coordinator decides ABORT first (presumed abort), so that a COMMIT can
// never follow; the answer is the decision message, re-sent to that participant.
func (Machine) Query(t *Tx, participant string, now time.Time) (Effects, bool) {
	i := t.Index(participant)
	if i < 0 {
		return Effects{}, false
	}
	var fx Effects
	switch t.State {
	case StatePreparing:
		decide(t, &fx, StateAborting, fmt.Sprintf("participant %q asked for the decision before one was made", participant), now)
	case StateCommitting, StateAborting, StateCommitted, StateAborted:
		fx.Commands = append(fx.Commands, send(t, i, now))
	default:
		return Effects{}, false
	}
	return fx, true
}

// Tick fires due timers: the prepare timeout (decide ABORT) and decision re-sends.
func (Machine) Tick(t *Tx, now time.Time) (Effects, bool) {
	var fx Effects
	switch t.State {
	case StatePreparing:
		if !t.PrepareDeadline.After(now) {
			decide(t, &fx, StateAborting, "prepare timed out at "+t.PrepareDeadline.UTC().Format(time.RFC3339Nano), now)
		}
	case StateCommitting, StateAborting:
		for i, p := range t.Participants {
			if !p.Acked && !p.ResendAt.IsZero() && !p.ResendAt.After(now) {
				fx.Commands = append(fx.Commands, send(t, i, now))
			}
		}
	}
	return fx, len(fx.Commands) > 0
}

// WakeAt returns when Tick must next run, or zero.
func (Machine) WakeAt(t *Tx) time.Time {
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
func decide(t *Tx, fx *Effects, to State, reason string, now time.Time) {
	t.DecidedAt = now
	t.Reason = reason
	setState(t, fx, to, now)
	for i := range t.Participants {
		fx.Commands = append(fx.Commands, send(t, i, now))
	}
}

// send builds the decision message to participant i and schedules its re-send.
func send(t *Tx, i int, now time.Time) Command {
	p := &t.Participants[i]
	p.Sends++
	kind := protocol.KindAbort
	if t.State == StateCommitting || t.State == StateCommitted {
		kind = protocol.KindCommit
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

func setState(t *Tx, fx *Effects, to State, now time.Time) {
	if t.State == to {
		return
	}
	t.History = append(t.History, Transition{From: t.State, To: to, At: now})
	fx.Events = append(fx.Events, StateChanged{From: t.State, To: to, At: now})
	t.State = to
}

// Edge is one legal transition of the transaction state machine and what causes it; the first of
// every transaction is From "" (no state yet) To PREPARING.
type Edge struct {
	From, To State
	Cause    string
}

var edges = []Edge{
	{"", StatePreparing, "BeginTransaction"},
	{StatePreparing, StateCommitting, "every participant voted YES"},
	{StatePreparing, StateAborting, "a NO vote, the prepare timeout, or a decision query before the decision"},
	{StateCommitting, StateCommitted, "every participant acknowledged COMMIT"},
	{StateAborting, StateAborted, "every participant acknowledged ABORT"},
}

// Transitions returns the legal transitions, for checks of recorded histories (T1, G7). The
// slice is a copy.
func Transitions() []Edge { return slices.Clone(edges) }
