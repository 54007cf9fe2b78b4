package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// watchOutput says what a watch prints.
type watchOutput int

const (
	// watchLines prints one human line per change.
	watchLines watchOutput = iota
	// watchNDJSON prints each change as one JSON object per line.
	watchNDJSON
	// watchFinal prints only the final state as one JSON object (start --wait -o json).
	watchFinal
)

func newSagaWatchCommand(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a saga until it ends",
		Long: `Follow a saga, printing one line per change: time, saga status, saga version, and the
steps that changed (all steps on the first line), with attempts past the first and new
errors. -o json prints each change as one JSON object per line.

Exits 0 when the saga COMPLETED, 3 when it COMPENSATED, 4 when it FAILED (it then waits for
an operator: 'saga retry' or 'saga abort'). --timeout does not apply; Ctrl-C stops (130).`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mode := watchLines
			if app.JSON() {
				mode = watchNDJSON
			}
			return watchSaga(cmd.Context(), app, args[0], mode)
		},
	}
}

// watchSaga streams WatchSaga until the saga reaches COMPLETED, COMPENSATED or FAILED and returns
// nil for COMPLETED, an ExitError with ExitCompensated or ExitFailed otherwise.
func watchSaga(ctx context.Context, app *App, id string, mode watchOutput) error {
	client, err := app.sagaClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream when we stop reading early
	stream, err := client.WatchSaga(ctx, &sagacoordv1.WatchSagaRequest{SagaId: id})
	if err != nil {
		return app.RPCError(ctx, err)
	}
	var prev *sagacoordv1.Saga
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			last := "no state received"
			if prev != nil {
				last = "last status " + sagaStatusName(prev.GetStatus())
			}
			return &ExitError{Code: ExitServer, Err: fmt.Errorf("the coordinator ended the watch before saga %s ended (%s)", id, last)}
		}
		if err != nil {
			return app.RPCError(ctx, err)
		}
		s := resp.GetSaga()
		switch mode {
		case watchLines:
			if _, err := fmt.Fprintln(app.Stdout(), sagaChangeLine(prev, s)); err != nil {
				return err
			}
		case watchNDJSON:
			if err := writeJSONLine(app.Stdout(), s); err != nil {
				return err
			}
		}
		prev = s
		code, done := sagaExitCode(s.GetStatus())
		if !done {
			continue
		}
		if mode == watchFinal {
			if err := writeJSON(app.Stdout(), s); err != nil {
				return err
			}
		}
		if code == ExitOK {
			return nil
		}
		msg := fmt.Sprintf("saga %s ended %s", s.GetId(), sagaStatusName(s.GetStatus()))
		if s.GetReason() != "" {
			msg += ": " + s.GetReason()
		}
		return &ExitError{Code: code, Err: errors.New(msg)}
	}
}

// sagaChangeLine describes what changed from prev (nil for the first state) to cur on one line:
//
//	2025-06-01T10:00:01.000Z RUNNING v2 reserve=SUCCEEDED charge=RUNNING
func sagaChangeLine(prev, cur *sagacoordv1.Saga) string {
	when := cur.GetUpdatedAt()
	if when == nil {
		when = cur.GetCreatedAt()
	}
	parts := []string{formatTS(when), sagaStatusName(cur.GetStatus()), fmt.Sprintf("v%d", cur.GetVersion())}
	if parts[0] == "" {
		parts[0] = "-"
	}
	before := map[string]*sagacoordv1.Step{}
	for _, st := range prev.GetSteps() {
		before[st.GetName()] = st
	}
	for _, st := range cur.GetSteps() {
		old, seen := before[st.GetName()]
		if seen && old.GetStatus() == st.GetStatus() && old.GetAttempt() == st.GetAttempt() &&
			old.GetCompensationAttempt() == st.GetCompensationAttempt() && old.GetLastError() == st.GetLastError() {
			continue
		}
		parts = append(parts, stepChange(old, st))
	}
	if cur.GetReason() != "" && cur.GetReason() != prev.GetReason() {
		parts = append(parts, fmt.Sprintf("reason=%q", cur.GetReason()))
	}
	return strings.Join(parts, " ")
}

func stepChange(old, st *sagacoordv1.Step) string {
	var notes []string
	switch st.GetStatus() {
	case sagacoordv1.StepStatus_STEP_STATUS_COMPENSATING, sagacoordv1.StepStatus_STEP_STATUS_COMPENSATED:
		if st.GetCompensationAttempt() > 1 {
			notes = append(notes, fmt.Sprintf("compensation attempt %d", st.GetCompensationAttempt()))
		}
	default:
		if st.GetAttempt() > 1 {
			notes = append(notes, fmt.Sprintf("attempt %d", st.GetAttempt()))
		}
	}
	if st.GetLastError() != "" && st.GetLastError() != old.GetLastError() {
		notes = append(notes, fmt.Sprintf("error %q", st.GetLastError()))
	}
	s := st.GetName() + "=" + stepStatusName(st.GetStatus())
	if len(notes) > 0 {
		s += "(" + strings.Join(notes, ", ") + ")"
	}
	return s
}

func newSagaAbortCommand(app *App) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "abort ID [--reason R]",
		Short: "Start compensating a RUNNING saga",
		Long: `Abort a RUNNING saga that has not passed its pivot: the coordinator compensates its
completed steps in reverse order. A saga in another state, or past its pivot, fails with
FailedPrecondition. Prints the saga's new status; -o json prints the saga.`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return steerSaga(cmd, app, "abort requested", func(ctx context.Context, c sagacoordv1.SagaServiceClient) (*sagacoordv1.Saga, error) {
				resp, err := c.AbortSaga(ctx, &sagacoordv1.AbortSagaRequest{SagaId: args[0], Reason: reason})
				return resp.GetSaga(), err
			})
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why the saga is aborted (recorded on the saga and in its audit trail)")
	return c
}

func newSagaRetryCommand(app *App) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "retry ID [--reason R]",
		Short: "Resume a FAILED saga",
		Long: `Resume a FAILED saga where it stopped, with fresh retry budgets. A saga in another state
fails with FailedPrecondition. Prints the saga's new status; -o json prints the saga.`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return steerSaga(cmd, app, "resumed", func(ctx context.Context, c sagacoordv1.SagaServiceClient) (*sagacoordv1.Saga, error) {
				resp, err := c.RetrySaga(ctx, &sagacoordv1.RetrySagaRequest{SagaId: args[0], Reason: reason})
				return resp.GetSaga(), err
			})
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why the saga is retried (recorded in its audit trail)")
	return c
}

// steerSaga runs one call that changes a saga and prints the result.
func steerSaga(cmd *cobra.Command, app *App, what string, call func(context.Context, sagacoordv1.SagaServiceClient) (*sagacoordv1.Saga, error)) error {
	client, err := app.sagaClient()
	if err != nil {
		return err
	}
	ctx, cancel := app.CallContext(cmd.Context())
	defer cancel()
	s, err := call(ctx, client)
	if err != nil {
		return app.RPCError(ctx, err)
	}
	if app.JSON() {
		return writeJSON(app.Stdout(), s)
	}
	_, err = fmt.Fprintf(app.Stdout(), "saga %s %s: %s\n", s.GetId(), what, sagaStatusName(s.GetStatus()))
	return err
}
