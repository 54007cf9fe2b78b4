package saga

import "time"

// Audited actions: the operator's calls that change a saga.
const (
	AuditAbort = "abort"
	AuditRetry = "retry"
)

// AuditEntry records one operator's call that changed a saga: what, who, when and why. The engine
// appends it to State.Audit in the transaction that applies the call; the machine never reads it.
type AuditEntry struct {
	// Action is AuditAbort or AuditRetry.
	Action string `json:"action"`
	// By is the caller's identity (auth.Caller): a token's name, a client certificate's common
	// name, or "anonymous" on a coordinator without authentication.
	By string `json:"by"`
	// At is the time of the transaction that applied the call (the database's clock).
	At time.Time `json:"at"`
	// Reason is what the caller gave; it may be empty.
	Reason string `json:"reason,omitempty"`
}
