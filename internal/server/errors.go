package server

import (
	"context"
	"log/slog"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hiddenCodes are the codes of errors nobody anticipated: their text (a database's error, say)
// is logged, never sent.
var hiddenCodes = map[codes.Code]string{
	codes.Internal:    "internal error",
	codes.Unknown:     "internal error",
	codes.Unavailable: "the coordinator cannot reach its database or broker; retry later",
}

// hideInternals replaces the message of an unexpected error with a generic one that carries a
// correlation id, and logs the original message under that id.
func hideInternals(log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	generic, hide := hiddenCodes[st.Code()]
	if !hide {
		return err
	}
	id := uuid.NewString()
	log.Error("call failed", "method", method, "code", st.Code().String(), "error_id", id, "err", st.Message())
	return status.Errorf(st.Code(), "%s (error id %s; the coordinator's log has the cause)", generic, id)
}

// errorInterceptors apply hideInternals to every call and stream, and refuse the requests that
// codec decoded despite invalid UTF-8.
func errorInterceptors(log *slog.Logger, codec *utf8Codec) []grpc.ServerOption {
	return []grpc.ServerOption{
		codec.option(),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := codec.refuse(req); err != nil {
				return nil, err
			}
			resp, err := h(ctx, req)
			return resp, hideInternals(log, info.FullMethod, err)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return hideInternals(log, info.FullMethod, h(srv, refusingStream{ss, codec}))
		}),
	}
}

// refusingStream refuses a streamed request that codec decoded despite invalid UTF-8.
type refusingStream struct {
	grpc.ServerStream
	codec *utf8Codec
}

func (s refusingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.codec.refuse(m)
}
