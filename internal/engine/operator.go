package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/saga"
)

// AbortSaga starts compensation of a RUNNING saga, and records the caller of ctx, the time and
// the reason in the saga's audit list.
func (e *Engine) AbortSaga(ctx context.Context, id uuid.UUID, reason string) (*store.Saga, error) {
	return e.operate(ctx, id, saga.AuditAbort, reason, func(m *saga.Machine, st *saga.State, now time.Time) (saga.Effects, error) {
		return m.Abort(st, reason, now)
	})
}

// RetrySaga resumes a FAILED saga, and records the caller of ctx, the time and the reason (which
// may be empty) in the saga's audit list.
func (e *Engine) RetrySaga(ctx context.Context, id uuid.UUID, reason string) (*store.Saga, error) {
	return e.operate(ctx, id, saga.AuditRetry, reason, func(m *saga.Machine, st *saga.State, now time.Time) (saga.Effects, error) {
		return m.Retry(st, now)
	})
}

// operatorLog is the log message of each audited action.
var operatorLog = map[string]string{saga.AuditAbort: "saga aborted by an operator", saga.AuditRetry: "saga retried by an operator"}

// operate applies an operator's call to one saga and returns the saga as committed. A call the
// saga's state refuses is ErrFailedPrecondition. The audit entry commits with the change.
func (e *Engine) operate(ctx context.Context, id uuid.UUID, action, reason string, op func(*saga.Machine, *saga.State, time.Time) (saga.Effects, error)) (*store.Saga, error) {
	caller := auth.Caller(ctx)
	var result *store.Saga
	ev := event[*store.Saga]{id: id, apply: func(sg *store.Saga, now time.Time) (applied, error) {
		result = sg
		m, err := e.defs.of(sg)
		if err != nil {
			return applied{}, err
		}
		fx, err := op(m, sg.State, now)
		if err != nil {
			return applied{}, fmt.Errorf("%w: saga %s: %w", ErrFailedPrecondition, id, err)
		}
		sg.State.Audit = append(sg.State.Audit, saga.AuditEntry{Action: action, By: caller, At: now, Reason: reason})
		return e.sagaApplied(m, sg, fx, true)
	}}
	res, err := applyEvents(ctx, e, e.sagas, []event[*store.Saga]{ev})
	if err != nil {
		return nil, err
	}
	if res.verdicts[0] == verdictMissing {
		return nil, fmt.Errorf("saga %s: %w", id, store.ErrNotFound)
	}
	e.log.Info(operatorLog[action], "saga_id", id, "definition", result.DefinitionName, "reason", reason,
		"status", result.State.Status, logCaller, caller, "trace_id", telemetry.TraceID(result.State.Trace))
	return result, nil
}
