package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sagacoord/sagacoord/client"
	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// rng is a deterministic random stream named by (seed, scenario, purpose).
type rng struct{ r *rand.Rand }

func newRand(seed uint64, parts ...string) *rng {
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	sum := h.Sum(nil)
	return &rng{rand.New(rand.NewPCG(binary.LittleEndian.Uint64(sum[:8]), binary.LittleEndian.Uint64(sum[8:16])))}
}

func (r *rng) intn(n int) int       { return r.r.IntN(n) }
func (r *rng) int63n(n int64) int64 { return r.r.Int64N(n) }

// request is one generated start: the same seed gives the same ids, inputs and order.
type request struct {
	ID    string
	Input json.RawMessage
	// Payloads of a 2PC transaction, one per workload participant.
	Payloads []json.RawMessage
}

// generate returns the requests of workload w for a seed. The first workload draws from the
// stream "workload"; the 2PC workload of a mixed scenario from its own.
func (s *Scenario) generate(seed uint64, w Workload) []request {
	in := w.Input
	stream := "workload"
	if s.mixed() && w.Kind == WorkloadTwoPC {
		stream = "workload-2pc"
	}
	r := newRand(seed, s.Name, stream)
	out := make([]request, w.Count)
	for i := range out {
		var id [16]byte
		r.r.Uint64()
		binary.LittleEndian.PutUint64(id[:8], r.r.Uint64())
		binary.LittleEndian.PutUint64(id[8:], r.r.Uint64())
		id[6] = (id[6] & 0x0f) | 0x40 // a version 4 UUID drawn from the seed
		id[8] = (id[8] & 0x3f) | 0x80
		out[i].ID = uuid.UUID(id).String()
		from := 1 + r.intn(in.Accounts)
		to := 1 + r.intn(in.Accounts)
		amount := in.MinAmount + r.int63n(in.MaxAmount-in.MinAmount+1)
		var v any
		switch in.Generator {
		case GenTransfer:
			v = map[string]any{"from": fmt.Sprintf("acct-%d", from), "to": fmt.Sprintf("acct-%d", to), "amount": amount}
		case GenOrder:
			v = map[string]any{"sku": fmt.Sprintf("sku-%d", from), "qty": 1 + amount%5, "account": fmt.Sprintf("cust-%d", to), "amount": amount}
		default:
			v = map[string]any{}
		}
		out[i].Input, _ = json.Marshal(v)
		if w.Kind == WorkloadTwoPC {
			for j := range w.Participants {
				// participant-sim's payload (see its --help): the first participant is
				// debited, the others credited; an order reserves stock and charges.
				p := map[string]any{"amount": amount}
				switch {
				case in.Generator == GenTransfer && j == 0:
					p["account"], p["direction"] = fmt.Sprintf("acct-%d", from), "debit"
				case in.Generator == GenTransfer:
					p["account"], p["direction"] = fmt.Sprintf("acct-%d", to), "credit"
				case in.Generator == GenOrder:
					p["sku"], p["qty"], p["account"] = fmt.Sprintf("sku-%d", from), 1+amount%5, fmt.Sprintf("cust-%d", to)
				}
				b, _ := json.Marshal(p)
				out[i].Payloads = append(out[i].Payloads, b)
			}
		}
	}
	return out
}

// workloadResult is what the client saw.
type workloadResult struct {
	Requested int `json:"requested"`
	Accepted  int `json:"accepted"`
	Rejected  int `json:"rejected"`
	// Retries counts calls that failed and were sent again (to the next coordinator).
	Retries int `json:"retries"`
	// Errors counts the gRPC codes of failed calls.
	Errors map[string]int `json:"errors,omitempty"`
	// AcceptedAt is each accepted request's time, from the start of the workload.
	AcceptedAt []time.Duration `json:"-"`
	// IDs of the accepted sagas or transactions; with both, IDsOf tells them apart.
	IDs []string `json:"-"`
	// TxIDs are the accepted 2PC transactions of a mixed run (IDs holds them too).
	TxIDs   []string      `json:"-"`
	Elapsed time.Duration `json:"-"`
}

// driver sends one workload to the coordinators that take it.
type driver struct {
	s       *Scenario
	w       Workload
	conns   []*client.Conn
	defName string
	t0      time.Time

	mu  sync.Mutex
	res workloadResult
}

func (d *driver) run(ctx context.Context, reqs []request) workloadResult {
	w := d.w
	d.res.Errors = map[string]int{}
	d.res.Requested = len(reqs)
	work := make(chan int)
	var wg sync.WaitGroup
	for range w.Concurrency {
		wg.Go(func() {
			for i := range work {
				d.one(ctx, i, reqs[i])
			}
		})
	}
	var tick *time.Ticker
	if w.Rate > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / w.Rate))
		defer tick.Stop()
	}
feed:
	for i := range reqs {
		if tick != nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
				break feed
			}
		}
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	d.res.Elapsed = time.Since(d.t0)
	return d.res
}

// one starts one saga or transaction, trying the coordinators in turn until one accepts it or
// the request deadline passes. Starts are idempotent on the id, so a repeat after an unknown
// outcome is safe.
func (d *driver) one(ctx context.Context, i int, r request) {
	w := d.w
	deadline := time.Now().Add(w.RequestDeadline.D())
	for attempt := 0; ; attempt++ {
		conn := d.conns[(i+attempt)%len(d.conns)]
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		if w.Kind == WorkloadTwoPC {
			req := &sagacoordv1.BeginTransactionRequest{TransactionId: r.ID}
			for j, p := range w.Participants {
				req.Participants = append(req.Participants, &sagacoordv1.TransactionParticipant{Name: p, Payload: r.Payloads[j]})
			}
			if w.PrepareTimeout > 0 {
				req.PrepareTimeout = durationpb.New(w.PrepareTimeout.D())
			}
			_, err = conn.TwoPC.BeginTransaction(cctx, req)
		} else {
			_, err = conn.Saga.StartSaga(cctx, &sagacoordv1.StartSagaRequest{SagaId: r.ID, Definition: d.defName, Input: r.Input})
		}
		cancel()
		d.mu.Lock()
		if err == nil {
			d.res.Accepted++
			d.res.AcceptedAt = append(d.res.AcceptedAt, time.Since(d.t0))
			d.res.IDs = append(d.res.IDs, r.ID)
			d.mu.Unlock()
			return
		}
		code := status.Code(err)
		d.res.Errors[code.String()]++
		permanent := code == codes.InvalidArgument || code == codes.AlreadyExists || code == codes.FailedPrecondition || code == codes.ResourceExhausted || code == codes.NotFound
		if permanent || time.Now().After(deadline) || ctx.Err() != nil {
			d.res.Rejected++
			d.mu.Unlock()
			return
		}
		d.res.Retries++
		d.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(min(attempt+1, 10)) * 50 * time.Millisecond):
		}
	}
}

// idsOf returns the accepted ids of the workload of kind: of a mixed run, TxIDs are the 2PC
// ones and the others the sagas.
func (w workloadResult) idsOf(kind string, mixed bool) []string {
	if !mixed {
		return w.IDs
	}
	tx := map[string]bool{}
	for _, id := range w.TxIDs {
		tx[id] = true
	}
	var out []string
	for _, id := range w.IDs {
		if tx[id] == (kind == WorkloadTwoPC) {
			out = append(out, id)
		}
	}
	return out
}

// merge adds the result of another workload run at the same time.
func (w *workloadResult) merge(o workloadResult, kind string) {
	w.Requested += o.Requested
	w.Accepted += o.Accepted
	w.Rejected += o.Rejected
	w.Retries += o.Retries
	if w.Errors == nil {
		w.Errors = map[string]int{}
	}
	for k, n := range o.Errors {
		w.Errors[k] += n
	}
	w.AcceptedAt = append(w.AcceptedAt, o.AcceptedAt...)
	w.IDs = append(w.IDs, o.IDs...)
	if kind == WorkloadTwoPC {
		w.TxIDs = append(w.TxIDs, o.IDs...)
	}
	w.Elapsed = max(w.Elapsed, o.Elapsed)
}
