package engine

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/saga"
	"github.com/sagacoord/sagacoord/twopc"
)

// gaugeTimeout bounds the queries of one collection, so a slow database delays a scrape by this
// much at most (the gauges are then left out of it).
const gaugeTimeout = 2 * time.Second

// registerGauges registers the gauges read from the database at each collection: the outbox
// backlog and the unfinished sagas and transactions. Every instance reports the same values (they
// describe the shared database): aggregate them with max, not sum.
func registerGauges(mp metric.MeterProvider, st store.Store, log *slog.Logger) (metric.Registration, error) {
	m := mp.Meter("github.com/sagacoord/sagacoord/engine")
	backlog, err := m.Int64ObservableGauge("sagacoord.outbox.backlog",
		metric.WithDescription("Outbox rows not yet confirmed by the broker (whole database)."), metric.WithUnit("{row}"))
	if err != nil {
		return nil, err
	}
	oldest, err := m.Float64ObservableGauge("sagacoord.outbox.oldest_age",
		metric.WithDescription("Age of the oldest outbox row not yet confirmed (0 when empty)."), metric.WithUnit("s"))
	if err != nil {
		return nil, err
	}
	sagas, err := m.Int64ObservableGauge("sagacoord.sagas.unfinished",
		metric.WithDescription("Sagas RUNNING, COMPENSATING or FAILED (whole database), by status."), metric.WithUnit("{saga}"))
	if err != nil {
		return nil, err
	}
	sagaAge, err := m.Float64ObservableGauge("sagacoord.sagas.oldest_unfinished_age",
		metric.WithDescription("Age (since StartSaga) of the oldest saga in each unfinished status (0 when none)."), metric.WithUnit("s"))
	if err != nil {
		return nil, err
	}
	inDoubt, err := m.Int64ObservableGauge("sagacoord.twopc.in_doubt",
		metric.WithDescription("Two-phase-commit transactions not finished (PREPARING, or COMMITTING/ABORTING not yet acknowledged by all), by state."),
		metric.WithUnit("{transaction}"))
	if err != nil {
		return nil, err
	}
	txAge, err := m.Float64ObservableGauge("sagacoord.twopc.oldest_in_doubt_age",
		metric.WithDescription("Age of the oldest unfinished transaction in each state (0 when none)."), metric.WithUnit("s"))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, gaugeTimeout)
		defer cancel()
		n, age, err := st.Outbox().Backlog(ctx)
		if err != nil {
			log.Warn("metrics: read the outbox backlog", "err", err)
		} else {
			o.ObserveInt64(backlog, int64(n))
			o.ObserveFloat64(oldest, age.Seconds())
		}
		stats, err := st.Stats(ctx)
		if err != nil {
			log.Warn("metrics: count unfinished sagas and transactions", "err", err)
			return nil
		}
		for _, s := range []saga.Status{saga.StatusRunning, saga.StatusCompensating, saga.StatusFailed} {
			p := stats.Sagas[s]
			attrs := metric.WithAttributes(telemetry.AttrStatus.String(string(s)))
			o.ObserveInt64(sagas, int64(p.Count), attrs)
			o.ObserveFloat64(sagaAge, p.OldestAge.Seconds(), attrs)
		}
		for _, s := range []twopc.State{twopc.StatePreparing, twopc.StateCommitting, twopc.StateAborting} {
			p := stats.Transactions[s]
			attrs := metric.WithAttributes(telemetry.AttrTxState.String(string(s)))
			o.ObserveInt64(inDoubt, int64(p.Count), attrs)
			o.ObserveFloat64(txAge, p.OldestAge.Seconds(), attrs)
		}
		return nil
	}, backlog, oldest, sagas, sagaAge, inDoubt, txAge)
}
