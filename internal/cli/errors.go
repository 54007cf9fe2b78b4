package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes. Scripts branch on them, so they never change meaning.
const (
	// ExitOK means the command did what was asked (for --wait and watch: the saga COMPLETED or the
	// transaction COMMITTED).
	ExitOK = 0
	// ExitUsage means the command line or an input file was wrong; nothing was sent, or the
	// problem was found before anything changed. The message names the flag or the file.
	ExitUsage = 1
	// ExitServer means the coordinator could not be reached or answered with an error; stderr shows
	// the gRPC code and message.
	ExitServer = 2
	// ExitCompensated means a watched saga ended COMPENSATED (or a transaction ABORTED).
	ExitCompensated = 3
	// ExitFailed means a watched saga ended FAILED and needs an operator.
	ExitFailed = 4
	// ExitInterrupted means the user interrupted the command (128 + SIGINT, as shells report it).
	ExitInterrupted = 130
)

// ExitError carries the exit code a command wants together with the message to print. Commands
// return it to choose their exit code (sagalab's chaos and bench do); any other error from a
// command exits with ExitUsage, and a gRPC status error with ExitServer.
type ExitError struct {
	// Code is the process exit code.
	Code int
	// Err is printed on stderr after "<program>: <command>: "; nil prints nothing.
	Err error

	// rpcCode is the gRPC code when the error came from a call (OK otherwise).
	rpcCode codes.Code
}

// Error returns the message, or the exit code when there is none.
func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit code %d", e.Code)
	}
	return e.Err.Error()
}

// Unwrap returns Err, so errors.Is and errors.As see through an ExitError.
func (e *ExitError) Unwrap() error { return e.Err }

// UsageErrorf returns an error that exits with ExitUsage.
func UsageErrorf(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// rpcError turns an error from a gRPC call into an ExitError whose message reads
// "<Code>: <message>", or "cannot reach coordinator at ADDR: ..." when the connection itself failed.
// reachable says whether the client connection was ready, which tells a server that answered
// Unavailable (its database is down, say) from a coordinator that could not be dialled. service
// names what an Unimplemented answer lacks.
func rpcError(ctx context.Context, addr, service string, reachable bool, err error) error {
	var ee *ExitError
	if errors.As(err, &ee) {
		return err
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return &ExitError{Code: ExitInterrupted, Err: errors.New("interrupted")}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &ExitError{Code: ExitServer, Err: err}
	}
	ee = &ExitError{Code: ExitServer, rpcCode: st.Code()}
	switch {
	case st.Code() == codes.Unavailable && !reachable:
		ee.Err = fmt.Errorf("cannot reach coordinator at %s: %s", addr, dialProblem(st.Message()))
	case st.Code() == codes.DeadlineExceeded && !reachable:
		ee.Err = fmt.Errorf("cannot reach coordinator at %s: no answer before the --timeout", addr)
	case st.Code() == codes.DeadlineExceeded:
		ee.Err = fmt.Errorf("%s: %s (raise --timeout if the coordinator is just slow)", st.Code(), st.Message())
	case st.Code() == codes.Unimplemented:
		if service == "" {
			service = "this call"
		}
		ee.Err = fmt.Errorf("%s: the coordinator at %s does not implement %s yet (%s)", st.Code(), addr, service, st.Message())
	default:
		ee.Err = fmt.Errorf("%s: %s", st.Code(), st.Message())
	}
	return ee
}

// indeterminate reports whether a failed call may still have taken effect: the request may have
// reached the coordinator although no answer came back.
func indeterminate(err error) bool {
	var ee *ExitError
	if !errors.As(err, &ee) {
		return false
	}
	return ee.rpcCode == codes.Unavailable || ee.rpcCode == codes.DeadlineExceeded
}

// exitCode classifies any error a command returned.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if _, ok := status.FromError(err); ok {
		return ExitServer
	}
	return ExitUsage
}

// dialProblem keeps the useful end of grpc's connection error, `connection error: desc =
// "transport: Error while dialing: dial tcp 127.0.0.1:7233: connect: connection refused"`.
func dialProblem(msg string) string {
	const marker = "Error while dialing: "
	if i := strings.Index(msg, marker); i >= 0 {
		return strings.TrimSuffix(msg[i+len(marker):], `"`)
	}
	return msg
}
