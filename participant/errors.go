package participant

import (
	"errors"
	"fmt"
)

// BusinessError is a handler result that says the step cannot succeed as asked (insufficient
// funds, out of stock): retrying will not help. For an action the worker rolls the handler's
// effect back, stores a "failed" reply in the barrier and the coordinator compensates the saga's
// earlier steps. A compensation cannot fail for business reasons, so for a compensation it is
// treated like a retryable error.
//
// Any error that is not a BusinessError (nor wraps one) is retryable: the worker rolls the whole
// local transaction back, stores nothing, and replies "retry" so the coordinator tries again
// under the step's retry policy.
type BusinessError struct {
	// Err says why; its message is the reply's error text.
	Err error
}

// Error returns the message of the underlying error.
func (e *BusinessError) Error() string {
	if e.Err == nil {
		return "business failure"
	}
	return e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *BusinessError) Unwrap() error { return e.Err }

// Fail marks err as a business failure (see BusinessError). Fail(nil) is a business failure with
// the message "business failure".
func Fail(err error) error { return &BusinessError{Err: err} }

// Failf is Fail(fmt.Errorf(format, args...)).
func Failf(format string, args ...any) error { return &BusinessError{Err: fmt.Errorf(format, args...)} }

// IsBusiness reports whether err is, or wraps, a BusinessError.
func IsBusiness(err error) bool {
	var be *BusinessError
	return errors.As(err, &be)
}

// panicError is a recovered handler panic; it is retryable.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.value) }
