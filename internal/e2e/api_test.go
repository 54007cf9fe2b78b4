package e2e_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// requireCode requires a gRPC error with the code and a message containing every fragment.
func requireCode(t *testing.T, err error, code codes.Code, fragments ...string) {
	t.Helper()
	require.Error(t, err)
	st := status.Convert(err)
	require.Equal(t, code, st.Code(), "message: %s", st.Message())
	for _, f := range fragments {
		require.Contains(t, st.Message(), f)
	}
}

// TestBadDefinitionsAreInvalidArgument: each malformed definition is refused with
// InvalidArgument and a message that names the offending field.
func TestBadDefinitionsAreInvalidArgument(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	// 100 steps (the most allowed) with the longest names allowed encode to more than 64 KiB.
	long := func(prefix string, i int) string {
		s := fmt.Sprintf("%s%03d", prefix, i)
		return s + strings.Repeat("x", 128-len(s))
	}
	var big []*pb.StepDefinition
	for i := range 100 {
		s := step(long("s", i), long("p", i))
		s.Action, s.Compensation = long("a", i), long("c", i)
		if i > 0 {
			s.DependsOn = []string{long("s", i-1)}
		}
		big = append(big, s)
	}

	cases := []struct {
		name      string
		def       *pb.SagaDefinition
		fragments []string
	}{
		{"cycle", dag("cycle", after(step("a", "p"), "c"), after(step("b", "p"), "a"), after(step("c", "p"), "b")),
			[]string{"steps", "depends_on has a cycle", "->"}},
		{"unknown dependency", dag("unknown", step("a", "p"), after(step("b", "p"), "nope")),
			[]string{"steps[1].depends_on[0]", `unknown step "nope"`}},
		{"self dependency", dag("self", after(step("a", "p"), "a")),
			[]string{"steps[0].depends_on[0]", "depends on itself"}},
		{"duplicate step name", chain("dup", step("a", "p"), step("a", "q")),
			[]string{"steps[1].name", `"a"`, "unique"}},
		{"missing participant", chain("nop", step("a", "p"), &pb.StepDefinition{Name: "b", Action: "do_b"}),
			[]string{"steps[1].participant", "must not be empty"}},
		{"missing action", chain("noa", &pb.StepDefinition{Name: "a", Participant: "p"}),
			[]string{"steps[0].action", "must not be empty"}},
		{"two pivots", chain("pivots", pivot(step("a", "p")), pivot(step("b", "p"))),
			[]string{"steps[1].pivot", "at most one pivot"}},
		{"pivot parallel to a step", dag("pivotpar", step("a", "p"), after(pivot(step("b", "p")), "a"), after(step("c", "p"), "a")),
			[]string{"steps[1].pivot", "concurrently"}},
		{"oversized definition", chain("big", big...),
			[]string{"definition", "bytes encoded", "the limit is 65536"}},
		{"no steps", chain("empty"), []string{"steps", "at least one step"}},
		{"bad name", chain("has space", step("a", "p")), []string{"name", "may contain only"}},
		{"zero max attempts is default, too many is not", chain("att", attempts(step("a", "p"), 100000)),
			[]string{"steps[0].retry.max_attempts", "between 1 and 1000"}},
		{"negative timeout", chain("neg", timeout(step("a", "p"), -time.Second)),
			[]string{"steps[0].timeout"}},
	}
	for _, c := range cases {
		_, err := e.client.RegisterDefinition(e.ctx, &pb.RegisterDefinitionRequest{Definition: c.def})
		t.Run(c.name, func(t *testing.T) {
			requireCode(t, err, codes.InvalidArgument, c.fragments...)
		})
	}
	_, err := e.client.RegisterDefinition(e.ctx, &pb.RegisterDefinitionRequest{})
	requireCode(t, err, codes.InvalidArgument, "definition", "must be set")

	list, err := e.client.ListDefinitions(e.ctx, &pb.ListDefinitionsRequest{})
	require.NoError(t, err)
	require.Empty(t, list.GetDefinitions(), "nothing invalid was stored")
}

// TestSagaAPIErrors: StartSaga, GetSaga, AbortSaga, RetrySaga and ListSagas answer bad requests
// with the documented codes, and StartSaga is idempotent on the client's id.
func TestSagaAPIErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startParticipant(participantOpts{name: "p"})
	e.register(chain("one", step("a", "p")))
	c := e.client

	start := func(id, def, input string) (*pb.StartSagaResponse, error) {
		return c.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: id, Definition: def, Input: []byte(input)})
	}

	_, err := start(uuid.NewString(), "no-such-definition", `{}`)
	requireCode(t, err, codes.NotFound, "no-such-definition")

	huge := `{"x":"` + strings.Repeat("a", 256<<10) + `"}`
	_, err = start(uuid.NewString(), "one", huge)
	requireCode(t, err, codes.ResourceExhausted, "input", "262144")

	_, err = start(uuid.NewString(), "one", `{"unterminated":`)
	requireCode(t, err, codes.InvalidArgument, "input", "JSON")

	_, err = start("not-a-uuid", "one", `{}`)
	requireCode(t, err, codes.InvalidArgument, "saga_id", "not-a-uuid")

	_, err = start(uuid.NewString(), "", `{}`)
	requireCode(t, err, codes.InvalidArgument, "definition")

	_, err = c.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: uuid.NewString(), Definition: "one", Deadline: durationpb.New(-time.Second)})
	requireCode(t, err, codes.InvalidArgument, "deadline")

	// Idempotency on the client's id.
	id := uuid.NewString()
	first, err := start(id, "one", `{"order":1}`)
	require.NoError(t, err)
	require.True(t, first.GetCreated())
	again, err := start(id, "one", `{"order":1}`)
	require.NoError(t, err)
	require.False(t, again.GetCreated(), "the same request again is not a new saga")
	require.Equal(t, id, again.GetSaga().GetId())
	require.Equal(t, first.GetSaga().GetCreatedAt().AsTime(), again.GetSaga().GetCreatedAt().AsTime())
	_, err = start(id, "one", `{"order":2}`)
	requireCode(t, err, codes.AlreadyExists, id)

	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus())
	again, err = start(id, "one", `{"order":1}`)
	require.NoError(t, err)
	require.False(t, again.GetCreated())
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, again.GetSaga().GetStatus(), "StartSaga again returns the saga as it is now")
	require.Len(t, e.ledgerRows(id), 1, "the repeated StartSaga ran nothing again")

	_, err = c.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: id})
	requireCode(t, err, codes.FailedPrecondition, "COMPLETED")
	_, err = c.RetrySaga(e.ctx, &pb.RetrySagaRequest{SagaId: id})
	requireCode(t, err, codes.FailedPrecondition, "COMPLETED")

	unknown := uuid.NewString()
	_, err = c.GetSaga(e.ctx, &pb.GetSagaRequest{SagaId: unknown})
	requireCode(t, err, codes.NotFound, unknown)
	_, err = c.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: unknown})
	requireCode(t, err, codes.NotFound)
	_, err = c.RetrySaga(e.ctx, &pb.RetrySagaRequest{SagaId: unknown})
	requireCode(t, err, codes.NotFound)
	_, err = c.GetSaga(e.ctx, &pb.GetSagaRequest{SagaId: "12345"})
	requireCode(t, err, codes.InvalidArgument, "saga_id")
	_, err = c.AbortSaga(e.ctx, &pb.AbortSagaRequest{SagaId: ""})
	requireCode(t, err, codes.InvalidArgument, "saga_id")

	_, err = c.ListSagas(e.ctx, &pb.ListSagasRequest{PageToken: "garbage"})
	requireCode(t, err, codes.InvalidArgument, "page_token")
	_, err = c.ListSagas(e.ctx, &pb.ListSagasRequest{PageSize: -1})
	requireCode(t, err, codes.InvalidArgument, "page_size")
	_, err = c.GetDefinition(e.ctx, &pb.GetDefinitionRequest{Name: "no-such-definition"})
	requireCode(t, err, codes.NotFound)
	_, err = c.GetDefinition(e.ctx, &pb.GetDefinitionRequest{})
	requireCode(t, err, codes.InvalidArgument, "name")
}

// TestConcurrentStartSagaWithOneID: many clients starting the same saga id at once get one saga:
// exactly one call creates it, every call returns it, and it runs once.
func TestConcurrentStartSagaWithOneID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startParticipant(participantOpts{name: "p"})
	e.register(chain("once", step("a", "p"), step("b", "p")))
	id := uuid.NewString()
	const callers = 16
	var wg sync.WaitGroup
	resps := make([]*pb.StartSagaResponse, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], errs[i] = e.client.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: id, Definition: "once", Input: []byte(`{"x":1}`)})
		}()
	}
	wg.Wait()
	created := 0
	for i := range callers {
		require.NoError(t, errs[i])
		require.Equal(t, id, resps[i].GetSaga().GetId())
		if resps[i].GetCreated() {
			created++
		}
	}
	require.Equal(t, 1, created, "exactly one call creates the saga")
	sg := e.waitStatus(id, 30*time.Second)
	require.Equal(t, pb.SagaStatus_SAGA_STATUS_COMPLETED, sg.GetStatus())
	require.Equal(t, []string{"a/action", "b/action"}, e.ledgerKeys(id))
}

// TestStartSagaPushesBackAtMaxActiveSagas: while as many sagas as the limit are running,
// StartSaga fails with ResourceExhausted; once they finish, the refused request succeeds when
// retried with the same id.
func TestStartSagaPushesBackAtMaxActiveSagas(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, envOpts{maxActiveSagas: 2})
	// No participant consumes yet: every saga started stays RUNNING. The count is refreshed each
	// second, so starts succeed until it catches up with the limit.
	e.register(chain("held", step("a", "late")))
	var (
		accepted []string
		refused  string
		lastErr  error
	)
	eventually(t, 30*time.Second, func() (bool, string) {
		id := uuid.NewString()
		_, lastErr = e.client.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: id, Definition: "held", Input: []byte(`{}`)})
		if lastErr == nil {
			accepted = append(accepted, id)
			return false, "StartSaga accepted"
		}
		refused = id
		return true, ""
	})
	requireCode(t, lastErr, codes.ResourceExhausted, "sagas are running or compensating", "the limit is 2")
	require.GreaterOrEqual(t, len(accepted), 2, "the limit refused a start below it")
	_, err := e.client.GetSaga(e.ctx, &pb.GetSagaRequest{SagaId: refused})
	requireCode(t, err, codes.NotFound, refused)

	e.startParticipant(participantOpts{name: "late"})
	for _, id := range accepted {
		e.waitStatus(id, 30*time.Second, pb.SagaStatus_SAGA_STATUS_COMPLETED)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		_, lastErr = e.client.StartSaga(e.ctx, &pb.StartSagaRequest{SagaId: refused, Definition: "held", Input: []byte(`{}`)})
		return lastErr == nil, fmt.Sprintf("StartSaga answered %v", lastErr)
	})
	e.waitStatus(refused, 30*time.Second, pb.SagaStatus_SAGA_STATUS_COMPLETED)
}
