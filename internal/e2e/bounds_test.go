package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/cli"
	"github.com/sagacoord/sagacoord/internal/coordinator"
	"github.com/sagacoord/sagacoord/protocol"
)

// Bounds: what a hostile but realistic caller found, each against a real coordinator over
// PostgreSQL and RabbitMQ. docs/api.md lists the limits.

// sagactlRun runs sagactl against addr and returns its exit code, stdout and stderr.
func sagactlRun(ctx context.Context, addr string, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := cli.Run(ctx, append([]string{"--addr", addr}, args...), cli.Options{Stdout: &out, Stderr: &errOut, Stdin: strings.NewReader("")})
	return code, out.String(), errOut.String()
}

// padded is a JSON object of exactly n bytes.
func padded(i, n int) string {
	head := fmt.Sprintf(`{"n":%d,"pad":"`, i)
	return head + strings.Repeat("x", n-len(head)-2) + `"}`
}

// Finding: 17 sagas with 256 KiB inputs, or one 4 MiB abort reason, made `sagactl saga list`
// fail on the client's 4 MiB limit; 300 definitions of 100 steps broke `definition list`.
func TestBoundsSagactlListsWhatTheAPIHolds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register(chain("big", step("a", "silent"))) // no worker: the sagas stay RUNNING
	var ids []string
	for i := range 17 {
		ids = append(ids, e.start("big", padded(i, 256<<10)))
	}
	_, err := e.client.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: ids[0], Reason: strings.Repeat("r", 4<<20-64)})
	requireCode(t, err, codes.InvalidArgument, "reason", "the limit is 1024")
	_, err = e.client.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: ids[0], Reason: strings.Repeat("r", 1024)})
	require.NoError(t, err)

	addr := e.coord.Addr()
	code, out, stderr := sagactlRun(e.ctx, addr, "-o", "json", "saga", "list", "--definition", "big")
	require.Equal(t, cli.ExitOK, code, stderr)
	var listed []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &listed))
	require.Len(t, listed, 17, "every saga, over several pages")

	// Finding: -o json printed the input as base64.
	code, out, stderr = sagactlRun(e.ctx, addr, "-o", "json", "saga", "get", ids[1])
	require.Equal(t, cli.ExitOK, code, stderr)
	var got struct {
		Input struct {
			N int `json:"n"`
		} `json:"input"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), "the input is a JSON object")
	require.Equal(t, 1, got.Input.N)

	for d := range 300 {
		def := &pb.SagaDefinition{Name: fmt.Sprintf("def-%03d-%s", d, strings.Repeat("n", 100))}
		for i := range 100 {
			s := step(fmt.Sprintf("step-%03d-%s", i, strings.Repeat("s", 60)), "silent")
			s.Action = fmt.Sprintf("action-%03d-%s", i, strings.Repeat("a", 60))
			def.Steps = append(def.Steps, s)
		}
		e.register(def)
	}
	code, out, stderr = sagactlRun(e.ctx, addr, "definition", "list")
	require.Equal(t, cli.ExitOK, code, stderr)
	require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 1+301, "a header and every definition")
}

// Finding: a NUL character in a name, a filter, a reason or a 2PC payload came back as Internal
// with PostgreSQL's error. Each is InvalidArgument naming the field.
func TestBoundsNULIsInvalidArgument(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register(chain("one", step("a", "silent")))
	id := e.start("one", `{}`)
	tx := e.twoPCClient(e.coord.Addr())
	for _, tc := range []struct {
		field string
		call  func() error
	}{
		{"name:", func() error {
			_, err := e.client.GetDefinition(e.ctx, &pb.GetDefinitionRequest{Name: "o\x00ne"})
			return err
		}},
		{"definition:", func() error {
			_, err := e.client.StartSaga(e.ctx, &pb.StartSagaRequest{Definition: "o\x00ne"})
			return err
		}},
		{"definition:", func() error {
			_, err := e.client.ListSagas(e.ctx, &pb.ListSagasRequest{Definition: "o\x00ne"})
			return err
		}},
		{"reason:", func() error {
			_, err := e.client.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: id, Reason: "a\x00b"})
			return err
		}},
		{"participants[0].payload:", func() error {
			_, err := tx.BeginTransaction(e.ctx, &pb.BeginTransactionRequest{Participants: []*pb.TransactionParticipant{
				{Name: "silent", Payload: []byte(`{"a":"\u0000"}`)}}})
			return err
		}},
		{"participants[0].name:", func() error {
			_, err := tx.BeginTransaction(e.ctx, &pb.BeginTransactionRequest{Participants: []*pb.TransactionParticipant{{Name: "sil\x00ent"}}})
			return err
		}},
	} {
		err := tc.call()
		requireCode(t, err, codes.InvalidArgument, tc.field)
		require.NotContains(t, status.Convert(err).Message(), "SQLSTATE")
	}
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_RUNNING, e.get(id).GetStatus(), "nothing changed")
}

// Finding: input nested 10,000 deep was accepted, then dead-lettered by every worker, and the
// saga parked in FAILED. StartSaga refuses it; input as deep as the limit runs.
func TestBoundsDeepInputIsRefusedAtStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startParticipant(participantOpts{name: "pa"})
	e.register(chain("deep", step("a", "pa")))
	nest := func(n int) []byte { return []byte(strings.Repeat("[", n) + strings.Repeat("]", n)) }
	_, err := e.client.StartSaga(e.ctx, &pb.StartSagaRequest{Definition: "deep", Input: nest(10_000)})
	requireCode(t, err, codes.InvalidArgument, "input", "nested 10000 levels deep; the limit is 64")
	r, err := e.client.StartSaga(e.ctx, &pb.StartSagaRequest{Definition: "deep", Input: nest(protocol.MaxJSONDepth)})
	require.NoError(t, err)
	sg := e.waitStatus(r.GetSaga().GetId(), 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus(), "reason %q", sg.GetReason())
}

// Finding: a reply with invalid UTF-8 was applied (encoding/json replaced the bytes) or, with a
// bad participant in its correlation id, acknowledged as stale. It is dead-lettered, and the
// saga it named is untouched.
func TestBoundsInvalidUTF8ReplyIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := e.consumeDeadLetters()
	e.register(chain("one", step("a", "silent")))
	id := e.start("one", `{}`)
	corr := protocol.CommandRef{SagaID: id, StepIndex: 0, Kind: protocol.KindAction, Attempt: 1}.ID()
	body := garbage("utf8-body", protocol.TypeReply, corr, "{\"outcome\":\"failed\",\"error\":\"n\xffo\"}")
	txCorr := garbage("utf8-corr", protocol.TypeReply, "tx:"+uuid.NewString()+":b\xffnk:prepare:1", `{"outcome":"vote_yes"}`)
	e.publish(toCoordinator(body), toCoordinator(txCorr))
	dead.await(t, 20*time.Second, body.MessageID, txCorr.MessageID)
	sg := e.get(id)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_RUNNING, sg.GetStatus(), "the failure was not applied")
	require.Empty(t, sg.GetSteps()[0].GetLastError())
}

// Finding: an unexpected error reached the client as the store wrote it ("list sagas: ...").
// The client gets a generic message and an id; the log has the cause.
func TestBoundsUnexpectedErrorsDoNotLeak(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := e.pool.Exec(e.ctx, `ALTER TABLE sagas RENAME TO sagas_elsewhere`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = e.pool.Exec(context.Background(), `ALTER TABLE sagas_elsewhere RENAME TO sagas`) })
	_, err = e.client.ListSagas(e.ctx, &pb.ListSagasRequest{})
	requireCode(t, err, codes.Internal, "internal error (error id ")
	msg := status.Convert(err).Message()
	require.Regexp(t, regexp.MustCompile(`error id [0-9a-f-]{36}`), msg)
	require.NotContains(t, msg, "sagas")
	require.NotContains(t, msg, "SQLSTATE")
}

// Finding: the API had no rate limit and no bound on watches. The coordinator's flags set both.
func TestBoundsRateAndWatchLimits(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{noCoordinator: true})
	c := e.runCoordinator(func(cfg *coordinator.Config) { cfg.RateLimit, cfg.RateBurst, cfg.MaxWatchesPerCaller = 0.01, 4, 1 })
	e.client = e.dial(c.Addr())
	e.register(chain("one", step("a", "silent")))
	id := e.start("one", `{}`)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	w, err := e.client.WatchSaga(ctx, &pb.WatchSagaRequest{SagaId: id})
	require.NoError(t, err)
	_, err = w.Recv()
	require.NoError(t, err, "the first watch is open")
	second, err := e.client.WatchSaga(e.ctx, &pb.WatchSagaRequest{SagaId: id})
	require.NoError(t, err)
	_, err = second.Recv()
	requireCode(t, err, codes.ResourceExhausted, "watch streams open")
	_, err = e.client.GetSaga(e.ctx, &pb.GetSagaRequest{SagaId: id})
	requireCode(t, err, codes.ResourceExhausted, "too many calls")
	var info *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			info = ri
		}
	}
	require.NotNil(t, info, "a RetryInfo says when to retry")
	require.Positive(t, info.GetRetryDelay().AsDuration())
}
