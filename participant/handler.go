package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/sagacoord/sagacoord/protocol"
)

// maxErrorBytes bounds the error text stored in the barrier and sent in a reply, so a handler that
// returns a huge error cannot make the reply exceed protocol.MaxBodyBytes.
const maxErrorBytes = 4 << 10

// maxOutputBytes bounds a handler's output: the coordinator refuses larger ones.
const maxOutputBytes = protocol.MaxOutputBytes

// callInSavepoint runs the handler of k in the savepoint sp, bounded by k.limit, and reports it to
// hung if it outlives its context. herr is the handler's result; a business failure's effect is
// rolled back to the savepoint, in next when the handler left the savepoint intact, else at once.
// err is an infrastructure failure.
func callInSavepoint(ctx context.Context, sp *savepointTx, k kindRules, next *batch, hung *hungWatch) (out json.RawMessage, herr error, err error) {
	sp.owner.calls++
	hctx, cancel := handlerContext(ctx, k.limit)
	defer cancel()
	returned := hung.watch(hctx, k.row, k.attempt)
	out, herr = call(hctx, k.call, sp)
	returned()
	if k.limit > 0 && stoppedByDeadline(ctx, hctx, herr) {
		herr = k.late(k.limit, herr)
	}
	if herr == nil {
		herr = checkOutput(out)
	}
	if IsBusiness(herr) {
		if err := sp.discard(ctx, next); err != nil {
			return nil, nil, fmt.Errorf("roll back to savepoint after business failure: %w", err)
		}
		return nil, herr, nil
	}
	if herr != nil {
		return nil, herr, nil // the caller rolls back the whole transaction
	}
	if err := sp.keep(ctx); err != nil {
		// The handler left its transaction unusable (a swallowed SQL error, or it ended the
		// transaction itself): retry rather than record a success whose effect is gone.
		return nil, fmt.Errorf("handler returned success but its transaction cannot be kept: %w", err), nil
	}
	if len(out) == 0 {
		out = nil
	}
	return out, nil, nil
}

// call runs h, turning a panic into a panicError.
func call(ctx context.Context, h func(context.Context, pgx.Tx) (json.RawMessage, error), tx pgx.Tx) (out json.RawMessage, err error) {
	defer func() {
		if v := recover(); v != nil {
			out, err = nil, &panicError{value: v, stack: debug.Stack()}
		}
	}()
	return h(ctx, tx)
}

// handlerLimit is how long a handler may run given the command's timeout and
// Config.HandlerTimeout: the shorter of the two, none when HandlerTimeout is negative; 0 for no
// limit.
func handlerLimit(command, configured time.Duration) time.Duration {
	switch {
	case configured < 0:
		return 0
	case configured > 0 && (command == 0 || configured < command):
		return configured
	}
	return command
}

// handlerContext returns the context a handler runs with: ctx, ended after limit when limit is
// positive.
func handlerContext(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	if limit <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, limit)
}

// stoppedByDeadline reports whether herr, what a handler running with hctx returned, is a
// failure that its own deadline caused: not a business failure, and not the worker stopping.
func stoppedByDeadline(ctx, hctx context.Context, herr error) bool {
	return herr != nil && !IsBusiness(herr) && ctx.Err() == nil && errors.Is(hctx.Err(), context.DeadlineExceeded)
}

func checkOutput(out json.RawMessage) error {
	if len(out) == 0 {
		return nil
	}
	if len(out) > maxOutputBytes {
		return Failf("handler output of %d bytes exceeds the limit of %d", len(out), maxOutputBytes)
	}
	if !json.Valid(out) {
		return Failf("handler output is not valid JSON")
	}
	if err := protocol.CheckJSONDepth(out); err != nil {
		return Failf("handler output %v", err)
	}
	return nil
}

// truncate makes an error text fit for a reply: at most maxErrorBytes, and without NUL bytes,
// which jsonb cannot store.
func truncate(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	if len(s) <= maxErrorBytes {
		return s
	}
	s = s[:maxErrorBytes]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
