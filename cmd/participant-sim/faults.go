package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/participant"
	"github.com/sagacoord/sagacoord/protocol"
)

// Fault decisions are a pure function of (seed, participant, command attempt, knob), not of a
// shared random stream, so the same seed injects the same faults whatever the scheduling; a new
// attempt of a step draws afresh, so a retried step eventually passes a retry_probability < 1.
type dice struct {
	seed        uint64
	participant string
}

// roll returns a number in [0, 1) for one knob of one command attempt.
func (d dice) roll(cmd *protocol.StepCommand, knob string) float64 {
	return d.rollKey(cmd.SagaID, cmd.Step, string(cmd.Kind), cmd.Action, strconv.Itoa(cmd.Attempt), knob)
}

// rollKey returns a number in [0, 1) for the key made of parts.
func (d dice) rollKey(parts ...string) float64 {
	h := fnv.New64a()
	var seed [8]byte
	binary.LittleEndian.PutUint64(seed[:], d.seed)
	h.Write(seed[:])
	for _, s := range append([]string{d.participant}, parts...) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	// splitmix64 finaliser: FNV's low bits alone are poorly mixed.
	z := h.Sum64()
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}

func (d dice) hit(cmd *protocol.StepCommand, knob string, p float64) bool {
	return p > 0 && d.roll(cmd, knob) < p
}

// errInjectedTransient is the retryable error of retry_probability.
var errInjectedTransient = errors.New("injected transient failure (retry_probability)")

// inflight counts handler calls and how many of them hang, so shutdown can stop waiting as soon as
// only hung handlers are left.
type inflight struct {
	mu      sync.Mutex
	active  int
	hung    int
	changed chan struct{}
}

func newInflight() *inflight { return &inflight{changed: make(chan struct{})} }

func (f *inflight) add(active, hung int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active += active
	f.hung += hung
	close(f.changed)
	f.changed = make(chan struct{})
}

// counts returns the handlers in flight, how many of them hang, and a channel closed at the next
// change.
func (f *inflight) counts() (active, hung int, changed <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active, f.hung, f.changed
}

// withFaults wraps h with the participant's fault knobs for the action h serves.
func withFaults(p participantConfig, d dice, track *inflight, log *slog.Logger, h participant.Handler) participant.Handler {
	return func(ctx context.Context, tx pgx.Tx, cmd *protocol.StepCommand) (json.RawMessage, error) {
		track.add(1, 0)
		defer track.add(-1, 0)
		f := p.faultsFor(cmd.Action)
		if f.Latency > 0 {
			t := time.NewTimer(time.Duration(f.Latency))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		if info, _ := participant.DeliveryFromContext(ctx); !info.Redelivered && d.hit(cmd, "hang", f.HangProbability) {
			log.Warn("injected hang", "for", f.hangDescription(), "saga_id", cmd.SagaID, "step", cmd.Step, "kind", cmd.Kind, "attempt", cmd.Attempt)
			if err := hang(ctx, f, track); err != nil {
				return nil, err
			}
		}
		if d.hit(cmd, "retry", f.RetryProbability) {
			return nil, errInjectedTransient
		}
		if d.hit(cmd, "fail", f.FailProbability) {
			return nil, participant.Failf("injected business failure (fail_probability) in %s", cmd.Action)
		}
		return h(ctx, tx, cmd)
	}
}

// hang blocks an injected hang: for f.HangFor when it is set, after which it returns nil and the
// handler goes on; else, or when ctx ends first (the SDK's deadline, or shutdown), until ctx
// ends, and it returns ctx's error. track counts the handler as hung meanwhile.
func hang(ctx context.Context, f faults, track *inflight) error {
	track.add(0, 1)
	defer track.add(0, -1)
	if f.HangFor == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	t := time.NewTimer(time.Duration(*f.HangFor))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hangDescription says how long an injected hang of f lasts, for the log.
func (f faults) hangDescription() string {
	if f.HangFor == nil {
		return "until shutdown"
	}
	return time.Duration(*f.HangFor).String()
}

// crashAfterCommit returns the worker's OnCommitted hook that injects crash_after_commit_probability.
func crashAfterCommit(p participantConfig, d dice, log *slog.Logger, exit func(int)) func(*protocol.StepCommand, protocol.StepReply) {
	return func(cmd *protocol.StepCommand, reply protocol.StepReply) {
		if d.hit(cmd, "crash", p.faultsFor(cmd.Action).CrashAfterCommitProbability) {
			log.Error("injected crash after the local commit, before the reply (crash_after_commit_probability)",
				"saga_id", cmd.SagaID, "step", cmd.Step, "kind", cmd.Kind, "attempt", cmd.Attempt, "outcome", reply.Outcome)
			exit(137)
		}
	}
}
