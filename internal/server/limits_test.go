package server_test

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/server"
	"github.com/sagacoord/sagacoord/internal/store"
)

// brokenList is a store whose ListSagas fails as a database would.
type brokenList struct{ store.Store }

func (brokenList) ListSagas(context.Context, store.ListFilter) ([]*store.Saga, error) {
	return nil, errors.New(`list sagas: ERROR: relation "sagas" does not exist (SQLSTATE 42P01)`)
}

// Finding: an unexpected error reached the client as the store wrote it. The client gets a
// generic message with an id; the log has the cause under that id.
func TestUnexpectedErrorsAreHiddenAndLogged(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{wrap: func(s store.Store) store.Store { return brokenList{s} }})
	_, err := a.sagas.ListSagas(a.ctx, &pb.ListSagasRequest{})
	requireCode(t, err, codes.Internal, "internal error", "error id")
	msg := status.Convert(err).Message()
	require.NotContains(t, msg, "sagas", "nothing of the store's error")
	id := regexp.MustCompile(`error id ([0-9a-f-]{36})`).FindStringSubmatch(msg)
	require.Len(t, id, 2, msg)
	require.Regexp(t, `error_id=`+id[1]+`.*relation \\"sagas\\" does not exist`, a.logs.String())
}

// Finding: the API had no rate limit. Each caller has a token bucket; a call beyond it is
// ResourceExhausted with a RetryInfo, and other callers are not held up.
func TestRateLimitPerCaller(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{limits: server.Limits{Rate: 0.001, Burst: 3}})
	get := func(ctx context.Context) error {
		_, err := a.sagas.GetSaga(ctx, &pb.GetSagaRequest{SagaId: uuid.NewString()})
		return err
	}
	for range 3 {
		requireCode(t, get(a.as("alice")), codes.NotFound)
	}
	err := get(a.as("alice"))
	requireCode(t, err, codes.ResourceExhausted, "too many calls")
	var info *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			info = ri
		}
	}
	require.NotNil(t, info, "the status carries a RetryInfo")
	require.Greater(t, info.GetRetryDelay().AsDuration(), 10*time.Minute, "one token comes back in 1000 s")
	require.Equal(t, codes.NotFound, status.Code(get(a.as("bob"))), "another identity has its own bucket")
	require.Equal(t, codes.NotFound, status.Code(get(a.ctx)), "so does an anonymous caller, by its host")
	_, err = a.sagas.WatchSaga(a.as("alice"), &pb.WatchSagaRequest{SagaId: uuid.NewString()})
	if err == nil {
		_, err = recvWatch(a, "alice")
	}
	requireCode(t, err, codes.ResourceExhausted, "too many calls")
}

// recvWatch opens a watch of an unknown saga as who and returns its first answer's error.
func recvWatch(a *api, who string) (*pb.WatchSagaResponse, error) {
	s, err := a.sagas.WatchSaga(a.as(who), &pb.WatchSagaRequest{SagaId: uuid.NewString()})
	if err != nil {
		return nil, err
	}
	return s.Recv()
}

// Finding: watch streams were not bounded. Each caller, and all of them together, may hold a
// bounded number open.
func TestWatchStreamsAreCapped(t *testing.T) {
	t.Parallel()
	a := newAPI(t, apiOpts{limits: server.Limits{WatchesPerCaller: 2, Watches: 3}})
	a.register("one")
	open := func(who string) (pb.SagaService_WatchSagaClient, context.CancelFunc) {
		r, err := a.sagas.StartSaga(a.ctx, &pb.StartSagaRequest{Definition: "one"})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(a.as(who))
		s, err := a.sagas.WatchSaga(ctx, &pb.WatchSagaRequest{SagaId: r.GetSaga().GetId()})
		require.NoError(t, err)
		_, err = s.Recv()
		require.NoError(t, err, "the watch is open: it sent the saga")
		return s, cancel
	}
	_, stopA1 := open("alice")
	_, stopA2 := open("alice")
	defer stopA2()
	_, err := recvWatch(a, "alice")
	requireCode(t, err, codes.ResourceExhausted, "this caller has 2 watch streams open")
	_, stopB := open("bob")
	defer stopB()
	_, err = recvWatch(a, "carol")
	requireCode(t, err, codes.ResourceExhausted, "3 watch streams are open on this coordinator")

	stopA1()
	require.Eventually(t, func() bool {
		_, err := recvWatch(a, "alice")
		return status.Code(err) == codes.NotFound
	}, 10*time.Second, 10*time.Millisecond, "an ended watch makes room")
}
