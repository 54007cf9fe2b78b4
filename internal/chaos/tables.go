package chaos

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// money sums the balances of every transfer participant.
func (r *run) money(ctx context.Context) (int64, error) {
	if len(r.transfer) == 0 {
		return 0, nil
	}
	var parts []string
	for _, s := range r.transfer {
		parts = append(parts, "(SELECT coalesce(sum(balance), 0) FROM "+pgx.Identifier{s, "accounts"}.Sanitize()+")")
	}
	var total int64
	err := r.admin.QueryRow(ctx, "SELECT ("+strings.Join(parts, " + ")+")::bigint").Scan(&total)
	return total, err
}

func (r *run) table(name string) string { return pgx.Identifier{r.schema, name}.Sanitize() }

// mainTable is the table of the workload's kind; of a mixed run, both tables' common columns
// as one.
func (r *run) mainTable() string {
	switch {
	case r.s.mixed():
		cols := "id, status, created_at, updated_at, finished_at"
		return "(SELECT " + cols + " FROM " + r.table("sagas") + " UNION ALL SELECT " + cols + " FROM " + r.table("transactions") + ") AS work"
	case r.s.Workload.Kind == WorkloadTwoPC:
		return r.table("transactions")
	}
	return r.table("sagas")
}

// terminalSet are the statuses after which nothing changes (plus FAILED when allowed).
func (r *run) terminal(status string) bool {
	switch status {
	case "COMPLETED", "COMPENSATED", "COMMITTED", "ABORTED":
		return true
	case "FAILED":
		return r.s.Expect.AllowFailed
	}
	return false
}

func (r *run) sample(ctx context.Context, stop <-chan struct{}, drivers []*driver) {
	t := time.NewTicker(r.opts.SampleInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		sm, err := r.sampleOnce(sctx)
		cancel()
		if err != nil {
			continue // the database may be down on purpose
		}
		for _, d := range drivers {
			d.mu.Lock()
			sm.Accepted += d.res.Accepted
			d.mu.Unlock()
		}
		r.mu.Lock()
		r.res.Samples = append(r.res.Samples, sm)
		r.mu.Unlock()
	}
}

func (r *run) sampleOnce(ctx context.Context) (Sample, error) {
	sm := Sample{T: r.since(time.Now())}
	rows, err := r.admin.Query(ctx, "SELECT status, count(*) FROM "+r.mainTable()+" GROUP BY status")
	if err != nil {
		return sm, err
	}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return sm, err
		}
		switch st {
		case "COMPLETED", "COMMITTED":
			sm.Completed += n
		case "COMPENSATED", "ABORTED":
			sm.Compensated += n
		case "FAILED":
			sm.Failed += n
		default:
			sm.Open += n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return sm, err
	}
	if err := r.admin.QueryRow(ctx, "SELECT count(*) FROM "+r.table("outbox")).Scan(&sm.Outbox); err != nil {
		return sm, err
	}
	total, err := r.money(ctx)
	if err != nil {
		return sm, err
	}
	sm.MoneyInFlight = r.initial - total
	if r.s.hasKind(WorkloadTwoPC) && len(r.transfer) > 0 {
		var parts []string
		for _, s := range r.transfer {
			parts = append(parts, "(SELECT coalesce(sum(held), 0) FROM "+pgx.Identifier{s, "accounts"}.Sanitize()+")")
		}
		if err := r.admin.QueryRow(ctx, "SELECT ("+strings.Join(parts, " + ")+")::bigint").Scan(&sm.Held); err != nil {
			return sm, err
		}
	}
	return sm, nil
}

func (r *run) terminalStatuses() []string {
	out := []string{"COMPLETED", "COMPENSATED", "COMMITTED", "ABORTED"}
	if r.s.Expect.AllowFailed {
		out = append(out, "FAILED")
	}
	return out
}
