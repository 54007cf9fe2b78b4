package saga

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sagacoord/sagacoord/protocol"
)

// Status is a saga's state. See docs/state-machines.md.
type Status string

// Saga states.
const (
	StatusRunning      Status = "RUNNING"
	StatusCompleted    Status = "COMPLETED"
	StatusCompensating Status = "COMPENSATING"
	StatusCompensated  Status = "COMPENSATED"
	StatusFailed       Status = "FAILED"
)

// Terminal reports whether no event changes the saga any more. FAILED is not terminal: RetrySaga
// resumes it.
func (s Status) Terminal() bool { return s == StatusCompleted || s == StatusCompensated }

// StepStatus is a step's state.
type StepStatus string

// Step states.
const (
	StepPending      StepStatus = "PENDING"
	StepRunning      StepStatus = "RUNNING"
	StepSucceeded    StepStatus = "SUCCEEDED"
	StepFailed       StepStatus = "FAILED"
	StepCompensating StepStatus = "COMPENSATING"
	StepCompensated  StepStatus = "COMPENSATED"
	StepSkipped      StepStatus = "SKIPPED"
)

// StepState is the state of one step of one saga.
type StepState struct {
	Status StepStatus `json:"status"`
	// Attempt and CompAttempt count the commands sent; the attempt number makes each command's
	// message id unique and lets stale replies be recognised.
	Attempt     int `json:"attempt,omitempty"`
	CompAttempt int `json:"comp_attempt,omitempty"`
	// AttemptBase and CompAttemptBase are the attempt counts at the last RetrySaga: the retry
	// budget counts from there.
	AttemptBase     int `json:"attempt_base,omitempty"`
	CompAttemptBase int `json:"comp_attempt_base,omitempty"`
	// Waiting means no command is in flight: the step waits for TimerAt to send the next attempt,
	// or, with TimerAt zero, for an operator (the saga is FAILED).
	Waiting bool `json:"waiting,omitempty"`
	// Uncertain means an attempt timed out or answered retry: the action may have been applied
	// (a retry is followed by a redelivery if the participant died before its ack), so the step
	// is compensated even if it never reported success.
	Uncertain bool `json:"uncertain,omitempty"`
	// TimerAt is when the in-flight attempt times out, or when the waiting step retries.
	TimerAt    time.Time       `json:"timer_at,omitzero"`
	Output     json.RawMessage `json:"output,omitempty"`
	LastError  string          `json:"last_error,omitempty"`
	StartedAt  time.Time       `json:"started_at,omitzero"`
	FinishedAt time.Time       `json:"finished_at,omitzero"`
}

// Transition is one recorded state change: of the saga when Step is -1, else of that step.
type Transition struct {
	Step int       `json:"step"`
	From string    `json:"from"`
	To   string    `json:"to"`
	At   time.Time `json:"at"`
}

// State is everything the coordinator knows about one saga. It is stored whole and changed only
// through Machine.
type State struct {
	ID     string `json:"-"`
	Status Status `json:"-"`
	// ResumeStatus is what RetrySaga returns a FAILED saga to.
	ResumeStatus Status          `json:"resume_status,omitempty"`
	Reason       string          `json:"reason,omitempty"`
	Input        json.RawMessage `json:"-"`
	Deadline     time.Time       `json:"deadline,omitzero"`
	Steps        []StepState     `json:"steps"`
	History      []Transition    `json:"history,omitempty"`
	// Trace is the W3C traceparent of the span that started the saga (StartSaga's), when the
	// coordinator traces: the saga's spans belong to its trace, whichever instance emits them.
	// The machine never reads it.
	Trace string `json:"trace,omitempty"`
	// Audit lists the operators' calls that changed the saga, oldest first. The machine never
	// reads it.
	Audit []AuditEntry `json:"audit,omitempty"`
}

// Command is a step command the machine asks the engine to send.
type Command struct {
	StepIndex int
	Kind      protocol.Kind
	Attempt   int
}

// Errors of operator actions; the API maps them to FailedPrecondition.
var (
	ErrWrongState = errors.New("wrong state")
	ErrPastPivot  = errors.New("past the pivot")
)

// Machine applies events to saga states of one definition. It is pure: no I/O, no clock, no
// randomness; time comes in with each event. Each method mutates the state it is given and returns
// the commands to send, which the caller commits together with the new state.
type Machine struct {
	def   *Definition
	graph Graph
	pivot int
}

// NewMachine returns the machine of a normalized definition.
func NewMachine(def *Definition) *Machine {
	m := &Machine{def: def, graph: def.Graph(), pivot: -1}
	for i, s := range def.Steps {
		if s.Pivot {
			m.pivot = i
		}
	}
	return m
}

// Definition returns the machine's definition.
func (m *Machine) Definition() *Definition { return m.def }

// Graph returns the definition's dependency graph.
func (m *Machine) Graph() Graph { return m.graph }

// Start returns the initial state of a saga and the commands of its first steps.
func (m *Machine) Start(id string, input json.RawMessage, deadline time.Time, now time.Time) (*State, Effects) {
	s := &State{ID: id, Status: StatusRunning, Input: input, Deadline: deadline, Steps: make([]StepState, len(m.def.Steps))}
	s.History = append(s.History, Transition{Step: -1, From: "", To: string(StatusRunning), At: now})
	for i := range s.Steps {
		s.Steps[i].Status = StepPending
	}
	return s, m.effects(s, 0, nil, m.advance(s, now))
}

// Reply applies a participant's reply. A reply for an attempt that is not the one in flight
// (a duplicate, or a late answer to an attempt that timed out) changes nothing and returns
// changed false.
func (m *Machine) Reply(s *State, r protocol.Reply, now time.Time) (fx Effects, changed bool) {
	if r.StepIndex < 0 || r.StepIndex >= len(s.Steps) || s.Status.Terminal() {
		return Effects{}, false
	}
	mark := len(s.History)
	flight, inFlight := m.inFlight(s, r.StepIndex, now)
	cmds, changed := m.reply(s, r, now)
	if !changed {
		return Effects{}, false
	}
	var ended []Event
	if inFlight && flight.Step == r.StepIndex && flight.Kind == r.Kind {
		flight.Outcome, flight.Err = r.Outcome, s.Steps[r.StepIndex].LastError
		if r.Outcome == protocol.OutcomeSucceeded {
			flight.Err = ""
		}
		if r.Attempt != flight.Attempt {
			flight.AnsweredBy = r.Attempt
		}
		ended = append(ended, flight)
	}
	return m.effects(s, mark, ended, cmds), true
}

func (m *Machine) reply(s *State, r protocol.Reply, now time.Time) (cmds []Command, changed bool) {
	st := &s.Steps[r.StepIndex]
	switch r.Kind {
	case protocol.KindAction:
		if st.Status != StepRunning || r.Attempt > st.Attempt || r.Attempt < 1 {
			return nil, false
		}
		// A success from any attempt means the action was applied (the participant's barrier
		// applies it once whatever the attempt), so it is taken even when it arrives after its
		// attempt timed out. A failure or a retry counts only for the attempt in flight.
		if r.Outcome != protocol.OutcomeSucceeded && (st.Waiting || r.Attempt != st.Attempt) {
			return nil, false
		}
		switch r.Outcome {
		case protocol.OutcomeSucceeded:
			st.Output = r.Output
			st.TimerAt = time.Time{}
			st.Waiting = false
			st.LastError = ""
			m.setStep(s, r.StepIndex, StepSucceeded, now)
			m.resumeIfHealed(s, now)
		case protocol.OutcomeFailed:
			if m.pastPivot(s) {
				st.LastError = "business failure after the pivot, retrying forward: " + r.Error
				m.retryAction(s, r.StepIndex, now)
				break
			}
			st.LastError = r.Error
			st.TimerAt = time.Time{}
			m.setStep(s, r.StepIndex, StepFailed, now)
			m.compensate(s, fmt.Sprintf("step %q failed: %s", m.def.Steps[r.StepIndex].Name, r.Error), now)
		case protocol.OutcomeRetry:
			// A retry reply says the attempt was rolled back, but if the participant dies before
			// it acks, the redelivered attempt may still succeed: like a timeout, it leaves the
			// step uncertain, so it is compensated if the saga gives it up.
			st.Uncertain = true
			st.LastError = r.Error
			m.retryAction(s, r.StepIndex, now)
		default:
			return nil, false
		}
	case protocol.KindCompensate:
		if st.Status != StepCompensating || r.Attempt > st.CompAttempt || r.Attempt < 1 {
			return nil, false
		}
		// As for actions: a late success is a success; a failure counts only when current.
		if r.Outcome != protocol.OutcomeSucceeded && (st.Waiting || r.Attempt != st.CompAttempt) {
			return nil, false
		}
		if r.Outcome == protocol.OutcomeSucceeded {
			st.TimerAt = time.Time{}
			st.Waiting = false
			st.LastError = ""
			m.setStep(s, r.StepIndex, StepCompensated, now)
			m.resumeIfHealed(s, now)
		} else {
			st.LastError = r.Error
			m.retryCompensation(s, r.StepIndex, now)
		}
	default:
		return nil, false
	}
	return m.advance(s, now), true
}

// Tick fires every timer due at now: attempt timeouts, retry backoffs and the saga deadline.
func (m *Machine) Tick(s *State, now time.Time) (fx Effects, changed bool) {
	if s.Status.Terminal() {
		return Effects{}, false
	}
	mark := len(s.History)
	var cmds []Command
	// The deadline goes first so that no action retry due at the same time is sent after it.
	if s.Status == StatusRunning && !s.Deadline.IsZero() && !s.Deadline.After(now) && !m.pastPivot(s) && !m.pivotInFlight(s) {
		m.compensate(s, "deadline exceeded at "+s.Deadline.UTC().Format(time.RFC3339Nano), now)
		changed = true
	}
	// Timeouts go before retries: one that starts compensation must stop every retry, whatever
	// the step order.
	for pass := 0; pass < 2; pass++ {
		for i := range s.Steps {
			st := &s.Steps[i]
			if st.TimerAt.IsZero() || st.TimerAt.After(now) || st.Waiting != (pass == 1) {
				continue
			}
			switch {
			case st.Waiting && s.Status == StatusFailed:
				// Retries wait for the operator.
				continue
			case st.Waiting && st.Status == StepRunning && s.Status != StatusRunning:
				// The saga began compensating in this tick: advance cancels the retry.
				continue
			case st.Waiting:
				st.Waiting = false
				st.TimerAt = time.Time{}
				cmds = append(cmds, m.dispatch(s, i, now))
			case st.Status == StepRunning, st.Status == StepCompensating:
				fx.Events = append(fx.Events, m.timedOut(s, i, now))
			default:
				st.TimerAt = time.Time{}
			}
			changed = true
		}
	}
	if !changed {
		return Effects{}, false
	}
	return m.effects(s, mark, fx.Events, append(cmds, m.advance(s, now)...)), true
}

// timedOut ends step i's attempt in flight as timed out and schedules its retry.
func (m *Machine) timedOut(s *State, i int, now time.Time) AttemptEnded {
	st := &s.Steps[i]
	a, _ := m.inFlight(s, i, now)
	a.Outcome = OutcomeTimeout
	switch st.Status {
	case StepRunning:
		st.Uncertain = true
		st.LastError = fmt.Sprintf("attempt %d timed out after %s", st.Attempt, m.def.Steps[i].Timeout)
		m.retryAction(s, i, now)
	case StepCompensating:
		st.LastError = fmt.Sprintf("compensation attempt %d timed out after %s", st.CompAttempt, m.def.Steps[i].Timeout)
		m.retryCompensation(s, i, now)
	}
	a.Err = st.LastError
	return a
}

// Abort starts compensation of a RUNNING saga that has not passed its pivot.
func (m *Machine) Abort(s *State, reason string, now time.Time) (Effects, error) {
	if s.Status != StatusRunning {
		return Effects{}, fmt.Errorf("%w: saga is %s; only a RUNNING saga can be aborted", ErrWrongState, s.Status)
	}
	if m.pastPivot(s) {
		return Effects{}, fmt.Errorf("%w: step %q succeeded, so the saga can only complete (use RetrySaga if it is stuck)", ErrPastPivot, m.def.Steps[m.pivot].Name)
	}
	if m.pivotInFlight(s) {
		return Effects{}, fmt.Errorf("%w: the pivot step %q is running and may succeed; abort again once it has finished (if it fails, the saga compensates by itself)", ErrWrongState, m.def.Steps[m.pivot].Name)
	}
	if reason == "" {
		reason = "aborted by operator"
	}
	mark := len(s.History)
	m.compensate(s, reason, now)
	return m.effects(s, mark, nil, m.advance(s, now)), nil
}

// Retry resumes a FAILED saga with fresh retry budgets for its parked steps.
func (m *Machine) Retry(s *State, now time.Time) (Effects, error) {
	if s.Status != StatusFailed {
		return Effects{}, fmt.Errorf("%w: saga is %s; only a FAILED saga can be retried", ErrWrongState, s.Status)
	}
	mark := len(s.History)
	resume := s.ResumeStatus
	if resume == "" {
		resume = StatusRunning
	}
	m.setSaga(s, resume, now)
	s.ResumeStatus = ""
	var cmds []Command
	for i := range s.Steps {
		st := &s.Steps[i]
		if !st.Waiting || st.Status == StepRunning && resume != StatusRunning {
			// An action retry of a compensating saga is not sent: advance cancels it.
			continue
		}
		st.AttemptBase = st.Attempt
		st.CompAttemptBase = st.CompAttempt
		st.Waiting = false
		st.TimerAt = time.Time{}
		cmds = append(cmds, m.dispatch(s, i, now))
	}
	return m.effects(s, mark, nil, append(cmds, m.advance(s, now)...)), nil
}

// WakeAt returns when Tick must next run for s, or zero if no timer is set.
func (m *Machine) WakeAt(s *State) time.Time {
	var at time.Time
	if s.Status.Terminal() {
		return at
	}
	earlier := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	for _, st := range s.Steps {
		if st.Waiting && s.Status == StatusFailed {
			continue
		}
		earlier(st.TimerAt)
	}
	if s.Status == StatusRunning && !m.pastPivot(s) && !m.pivotInFlight(s) {
		earlier(s.Deadline)
	}
	return at
}

func (m *Machine) pastPivot(s *State) bool {
	return m.pivot >= 0 && s.Steps[m.pivot].Status == StepSucceeded
}

// pivotInFlight reports whether the pivot has started and may still succeed: compensation must
// not start then, since a pivot that succeeds cannot be undone.
func (m *Machine) pivotInFlight(s *State) bool {
	return m.pivot >= 0 && s.Steps[m.pivot].Status == StepRunning
}

// resumeIfHealed returns a FAILED saga to where it stopped once no step waits for an operator
// any more: a late success of the parked attempt settles what the operator would have retried.
func (m *Machine) resumeIfHealed(s *State, now time.Time) {
	if s.Status != StatusFailed {
		return
	}
	for _, st := range s.Steps {
		if st.Waiting && st.TimerAt.IsZero() {
			return
		}
	}
	resume := s.ResumeStatus
	if resume == "" {
		resume = StatusRunning
	}
	s.ResumeStatus = ""
	m.setSaga(s, resume, now)
}

// dispatch sends the next attempt of step i's action or compensation, by its status.
func (m *Machine) dispatch(s *State, i int, now time.Time) Command {
	st := &s.Steps[i]
	sd := &m.def.Steps[i]
	if st.Status == StepCompensating {
		st.CompAttempt++
		st.TimerAt = now.Add(sd.Timeout)
		return Command{StepIndex: i, Kind: protocol.KindCompensate, Attempt: st.CompAttempt}
	}
	st.Attempt++
	st.TimerAt = now.Add(sd.Timeout)
	return Command{StepIndex: i, Kind: protocol.KindAction, Attempt: st.Attempt}
}

func (m *Machine) retryAction(s *State, i int, now time.Time) {
	st := &s.Steps[i]
	policy := m.def.Steps[i].Retry
	if st.Attempt-st.AttemptBase < policy.MaxAttempts {
		st.Waiting = true
		st.TimerAt = now.Add(policy.Backoff(st.Attempt+1-st.AttemptBase, s.ID+"/"+strconv.Itoa(i)+"/a/"+strconv.Itoa(st.Attempt)))
		return
	}
	// Retries exhausted.
	name := m.def.Steps[i].Name
	if m.pastPivot(s) {
		st.Waiting = true
		st.TimerAt = time.Time{}
		m.fail(s, StatusRunning, fmt.Sprintf("step %q exhausted %d attempts after the pivot: %s", name, policy.MaxAttempts, st.LastError), now)
		return
	}
	st.TimerAt = time.Time{}
	st.Waiting = false
	m.setStep(s, i, StepFailed, now)
	if s.Status == StatusRunning {
		m.compensate(s, fmt.Sprintf("step %q exhausted %d attempts: %s", name, policy.MaxAttempts, st.LastError), now)
	}
}

func (m *Machine) retryCompensation(s *State, i int, now time.Time) {
	st := &s.Steps[i]
	policy := m.def.Steps[i].CompensationRetry
	if st.CompAttempt-st.CompAttemptBase < policy.MaxAttempts {
		st.Waiting = true
		st.TimerAt = now.Add(policy.Backoff(st.CompAttempt+1-st.CompAttemptBase, s.ID+"/"+strconv.Itoa(i)+"/c/"+strconv.Itoa(st.CompAttempt)))
		return
	}
	st.Waiting = true
	st.TimerAt = time.Time{}
	m.fail(s, StatusCompensating, fmt.Sprintf("compensation of step %q exhausted %d attempts: %s", m.def.Steps[i].Name, policy.MaxAttempts, st.LastError), now)
}

func (m *Machine) fail(s *State, resume Status, reason string, now time.Time) {
	if s.Status == StatusFailed {
		return
	}
	s.ResumeStatus = resume
	s.Reason = reason
	m.setSaga(s, StatusFailed, now)
}

func (m *Machine) compensate(s *State, reason string, now time.Time) {
	if s.Status != StatusRunning {
		return
	}
	s.Reason = reason
	m.setSaga(s, StatusCompensating, now)
}

// advance moves the saga as far as it can go without waiting: it starts steps whose dependencies
// succeeded, starts compensations whose dependents are undone, and settles the saga.
func (m *Machine) advance(s *State, now time.Time) []Command {
	var cmds []Command
	switch s.Status {
	case StatusRunning:
		done := true
		for i := range s.Steps {
			st := &s.Steps[i]
			if st.Status != StepSucceeded {
				done = false
			}
			if st.Status != StepPending || !m.depsSucceeded(s, i) {
				continue
			}
			st.StartedAt = now
			m.setStep(s, i, StepRunning, now)
			cmds = append(cmds, m.dispatch(s, i, now))
		}
		if done {
			m.setSaga(s, StatusCompleted, now)
		}
	case StatusCompensating:
		for i := range s.Steps {
			st := &s.Steps[i]
			switch {
			case st.Status == StepPending:
				m.setStep(s, i, StepSkipped, now)
			case st.Status == StepRunning && st.Waiting:
				// A retry that will not be sent. If an earlier attempt timed out it may have been
				// applied: compensate it like a success.
				st.Waiting = false
				st.TimerAt = time.Time{}
				st.LastError = "cancelled: the saga is compensating"
				m.setStep(s, i, StepFailed, now)
			}
		}
		// Compensate in reverse dependency order: a step is undone once no step that depends on
		// it still holds an effect. Loop because undoing a step with no compensation frees its
		// dependencies at once.
		for progress := true; progress; {
			progress = false
			for i := len(s.Steps) - 1; i >= 0; i-- {
				st := &s.Steps[i]
				if !m.needsCompensation(st) || !m.dependentsUndone(s, i) {
					continue
				}
				if m.def.Steps[i].Compensation == "" {
					st.LastError = ""
					m.setStep(s, i, StepCompensated, now)
					progress = true
					continue
				}
				m.setStep(s, i, StepCompensating, now)
				cmds = append(cmds, m.dispatch(s, i, now))
			}
		}
		for i := range s.Steps {
			switch st := s.Steps[i]; {
			case st.Status == StepCompensated, st.Status == StepSkipped:
			case st.Status == StepFailed && !st.Uncertain:
			default:
				return cmds
			}
		}
		m.setSaga(s, StatusCompensated, now)
	}
	return cmds
}

func (m *Machine) needsCompensation(st *StepState) bool {
	return st.Status == StepSucceeded || st.Status == StepFailed && st.Uncertain
}

func (m *Machine) depsSucceeded(s *State, i int) bool {
	for _, d := range m.graph.Deps[i] {
		if s.Steps[d].Status != StepSucceeded {
			return false
		}
	}
	return true
}

// dependentsUndone reports whether no step that depends on i holds, or may still gain, an effect.
func (m *Machine) dependentsUndone(s *State, i int) bool {
	for _, d := range m.graph.Dependents[i] {
		st := &s.Steps[d]
		switch {
		case st.Status == StepCompensated, st.Status == StepSkipped:
		case st.Status == StepFailed && !st.Uncertain:
		default:
			return false
		}
	}
	return true
}

func (m *Machine) setStep(s *State, i int, to StepStatus, now time.Time) {
	st := &s.Steps[i]
	if st.Status == to {
		return
	}
	s.History = append(s.History, Transition{Step: i, From: string(st.Status), To: string(to), At: now})
	st.Status = to
	switch to {
	case StepSucceeded, StepFailed, StepCompensated, StepSkipped:
		st.FinishedAt = now
	}
}

func (m *Machine) setSaga(s *State, to Status, now time.Time) {
	if s.Status == to {
		return
	}
	s.History = append(s.History, Transition{Step: -1, From: string(s.Status), To: string(to), At: now})
	s.Status = to
}
