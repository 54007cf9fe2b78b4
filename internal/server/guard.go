package server

import (
	"context"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/telemetry"
)

// guard authenticates every call and checks its method's role (methodRoles), in grpc-go's
// interceptors, before any handler runs. The caller is a bearer token's identity when the call
// carries one, otherwise the subject common name of its verified client certificate
// (docs/decisions.md, decision 29). The identity goes into the call's context for the engine
// (auth.Caller) and onto the call's span as enduser.id.
type guard struct {
	creds *auth.CredentialsFile
	log   *slog.Logger
}

func (g *guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := g.admit(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (g *guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := g.admit(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &identifiedStream{ServerStream: ss, ctx: ctx})
}

// identifiedStream is a server stream whose context carries the caller's identity.
type identifiedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identifiedStream) Context() context.Context { return s.ctx }

// admit returns ctx with the caller's identity, or the status that refuses the call:
// Unauthenticated without valid credentials, PermissionDenied without the method's role.
func (g *guard) admit(ctx context.Context, method string) (context.Context, error) {
	role, known := methodRoles[method]
	if known && role == roleOpen {
		return ctx, nil
	}
	id, err := g.identify(ctx)
	if err != nil {
		g.refused(ctx, method, "", err)
		return nil, err
	}
	trace.SpanFromContext(ctx).SetAttributes(telemetry.AttrEndUserID.String(id.Name))
	if !known {
		err := status.Errorf(codes.PermissionDenied, "%s has no role in the coordinator's table of methods, so nobody may call it", method)
		g.refused(ctx, method, id.Name, err)
		return nil, err
	}
	if !id.Allows(role) {
		err := status.Errorf(codes.PermissionDenied, "%s needs role %s%s; %s", shortMethod(method), role, higher(role), rolesOf(id))
		g.refused(ctx, method, id.Name, err)
		return nil, err
	}
	return auth.WithIdentity(ctx, id), nil
}

// identify finds the caller: a bearer token first, else a verified client certificate.
func (g *guard) identify(ctx context.Context) (auth.Identity, error) {
	creds := g.creds.Current()
	md, _ := metadata.FromIncomingContext(ctx)
	if values := md.Get("authorization"); len(values) > 0 {
		scheme, token, ok := strings.Cut(values[0], " ")
		if len(values) > 1 || !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
			return auth.Identity{}, status.Error(codes.Unauthenticated, `the authorization metadata must be one "Bearer TOKEN"`)
		}
		id, ok := creds.Token(token)
		if !ok {
			return auth.Identity{}, status.Error(codes.Unauthenticated, "the bearer token is not in the coordinator's credentials file: check the token file (sagactl --token-file), or ask an operator to list its SHA-256")
		}
		return id, nil
	}
	if name, ok := certificateName(ctx); ok {
		return creds.Certificate(name), nil
	}
	return auth.Identity{}, status.Error(codes.Unauthenticated, "the call has no credentials: send a bearer token (sagactl --token-file) or a client certificate the coordinator trusts (sagactl --tls-cert and --tls-key)")
}

// certificateName returns the subject common name of the call's verified client certificate.
func certificateName(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", false
	}
	name := info.State.VerifiedChains[0][0].Subject.CommonName
	return name, name != ""
}

// refused logs a refused call, never its token.
func (g *guard) refused(ctx context.Context, method, who string, err error) {
	addr := ""
	if p, ok := peer.FromContext(ctx); ok {
		addr = p.Addr.String()
	}
	g.log.Info("call refused", "method", method, "code", status.Code(err).String(), "enduser_id", who, "peer", addr, "err", status.Convert(err).Message())
}

// shortMethod turns "/sagacoord.v1.SagaService/StartSaga" into "StartSaga".
func shortMethod(method string) string {
	return method[strings.LastIndex(method, "/")+1:]
}

// higher names the roles that include role, for the message of a refusal.
func higher(role auth.Role) string {
	switch role {
	case auth.RoleReader:
		return " (or submitter, or operator)"
	case auth.RoleSubmitter:
		return " (or operator)"
	}
	return ""
}

func rolesOf(id auth.Identity) string {
	if len(id.Roles) == 0 {
		return id.Name + " has no role (it is not in the coordinator's credentials file)"
	}
	names := make([]string, len(id.Roles))
	for i, r := range id.Roles {
		names[i] = string(r)
	}
	return id.Name + " has " + strings.Join(names, ", ")
}
