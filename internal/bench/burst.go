package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// burst starts cfg.Burst sagas with cfg.Concurrency start calls at a time, retrying those the
// coordinator pushes back, and waits until every one has finished.
func (d *driver) burst(ctx context.Context, res *Result) (*Result, error) {
	res.Mode, res.Burst = "burst", d.cfg.Burst
	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range d.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= d.cfg.Burst && ctx.Err() == nil; i = next.Add(1) {
				id := uuid.New()
				for !d.start(ctx, id, i) && ctx.Err() == nil {
					// Pushed back (or failed): the same id again is idempotent.
					_ = sleep(ctx, 50*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	res.BurstStartSeconds = time.Since(t0).Seconds()
	res.Started, res.StartErrors, res.Shed = d.startedInWindow.Load(), d.startErrors.Load(), d.shed.Load()
	fmt.Fprintf(d.cfg.Log, "burst: %d started in %.1fs; waiting for them to finish\n", res.Started, res.BurstStartSeconds)
	for {
		// FAILED sagas wait for an operator: they are not in flight, and are reported.
		open, failed, err := d.openSagas(ctx, t0)
		if err != nil {
			return nil, err
		}
		res.BurstInFlightPeak = max(res.BurstInFlightPeak, open)
		res.Unfinished = failed
		for _, pid := range d.cfg.CoordinatorPIDs {
			_, rss, peak := procStats(pid)
			res.CoordinatorRSSMB = max(res.CoordinatorRSSMB, rss)
			res.CoordinatorPeakMB = max(res.CoordinatorPeakMB, peak)
		}
		if open == 0 {
			break
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return nil, err
		}
	}
	res.BurstEndSeconds = time.Since(t0).Seconds()
	if err := d.pool.QueryRow(ctx, `SELECT count(*) FROM sagas WHERE definition_name = 'bench-3step' AND created_at >= $1 AND status = 'COMPLETED'`, t0).Scan(&res.Completed); err != nil {
		return nil, fmt.Errorf("bench: count completed sagas: %w", err)
	}
	res.SagasPerSecond = float64(res.Started-res.Unfinished) / res.BurstEndSeconds // every saga that reached a terminal state
	return res, nil
}

// prefill runs one benchmark saga to completion and copies it n times as finished sagas, in
// chunks, then analyzes the table so the planner knows its size.
func (d *driver) prefill(ctx context.Context, n int64) error {
	id := uuid.New()
	fmt.Fprintf(d.cfg.Log, "prefill: running template saga %s\n", id)
	if !d.start(ctx, id, 0) {
		return fmt.Errorf("bench: prefill: start the template saga failed")
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var done bool
		if err := d.pool.QueryRow(ctx, `SELECT finished_at IS NOT NULL FROM sagas WHERE id = $1`, id).Scan(&done); err != nil {
			return fmt.Errorf("bench: prefill: read the template saga: %w", err)
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: prefill: template saga %s did not finish within a minute (are the participants running?)", id)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	const chunk = 200_000
	for done := int64(0); done < n; {
		k := min(chunk, n-done)
		_, err := d.pool.Exec(ctx, `INSERT INTO sagas (id, definition_name, definition_version, status, input, request_hash, state, version, wake_at, created_at, updated_at, finished_at)
			SELECT gen_random_uuid(), t.definition_name, t.definition_version, t.status, t.input, t.request_hash, t.state, t.version, NULL,
				x.ts - interval '50 milliseconds', x.ts, x.ts
			FROM sagas t, generate_series(1, $2::bigint) g,
				LATERAL (SELECT g, now() - random() * interval '48 hours' AS ts) x
			WHERE t.id = $1`, id, k)
		if err != nil {
			return fmt.Errorf("bench: prefill: insert finished sagas: %w", err)
		}
		done += k
		fmt.Fprintf(d.cfg.Log, "prefill: %d of %d finished sagas\n", done, n)
	}
	if _, err := d.pool.Exec(ctx, `ANALYZE sagas`); err != nil {
		return fmt.Errorf("bench: prefill: analyze: %w", err)
	}
	return nil
}
