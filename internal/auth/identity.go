// Package auth says who calls the coordinator's API and what they may do: an Identity (from a
// client certificate or a bearer token) and its Roles. The gRPC server puts the caller's identity
// in the context of every call; the engine reads it to record who did what.
//
//	identity.go     Identity, Role, the identity in a context
//	credentials.go  the credentials file: hashed tokens and certificate identities with roles
//	reload.go       CredentialsFile: the file, read again when it changes
//	tls.go          ServerTLS: the API's certificate, re-read when rotated; the client CA
//
// It knows nothing of gRPC: internal/server's interceptors use it.
package auth

import (
	"context"
	"slices"
)

// Role is what a caller may do. Each role includes the ones before it.
type Role string

// Roles, from the least to the most.
const (
	// RoleReader may read: GetSaga, ListSagas, WatchSaga, the definitions and transactions.
	RoleReader Role = "reader"
	// RoleSubmitter may also register definitions, start sagas and begin transactions.
	RoleSubmitter Role = "submitter"
	// RoleOperator may also abort and retry sagas.
	RoleOperator Role = "operator"
)

// rank orders the roles: a role includes every role of a lower rank.
var rank = map[Role]int{RoleReader: 1, RoleSubmitter: 2, RoleOperator: 3}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return rank[r] > 0 }

// Identity is an authenticated caller.
type Identity struct {
	// Name identifies the caller in audit records, logs and traces: the token's name, or the
	// client certificate's subject.
	Name  string
	Roles []Role
}

// Allows reports whether id holds role, or a role that includes it.
func (id Identity) Allows(role Role) bool {
	return slices.ContainsFunc(id.Roles, func(r Role) bool { return rank[r] >= rank[role] })
}

type identityKey struct{}

// WithIdentity returns a context that carries id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the caller of ctx, if the call was authenticated.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// anonymous is the caller of a coordinator without authentication; no credential may take it.
const anonymous = "anonymous"

// Caller names the caller of ctx for audit records and logs: its identity's name, or
// "anonymous" when the coordinator runs without authentication.
func Caller(ctx context.Context) string {
	if id, ok := FromContext(ctx); ok && id.Name != "" {
		return id.Name
	}
	return anonymous
}
