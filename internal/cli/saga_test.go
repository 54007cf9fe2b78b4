package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

const sagaID = "123e4567-e89b-12d3-a456-426614174000"

func ts(sec int) *timestamppb.Timestamp {
	return timestamppb.New(time.Date(2025, 6, 1, 10, 0, sec, 0, time.UTC))
}

// sampleSaga is a RUNNING order saga: reserve done, charge on its second attempt.
func sampleSaga() *sagacoordv1.Saga {
	return &sagacoordv1.Saga{
		Id: sagaID, Definition: "order", DefinitionVersion: 2,
		Status:    sagacoordv1.SagaStatus_SAGA_STATUS_RUNNING,
		Input:     []byte(`{"order":42}`),
		CreatedAt: ts(0), UpdatedAt: ts(4), Version: 5,
		Steps: []*sagacoordv1.Step{
			{Name: "reserve", Participant: "inventory", Status: sagacoordv1.StepStatus_STEP_STATUS_SUCCEEDED,
				Attempt: 1, Output: []byte(`{"reserved": ["sku-1"]}`), StartedAt: ts(0), FinishedAt: timestamppb.New(ts(0).AsTime().Add(120 * time.Millisecond))},
			{Name: "charge", Participant: "payments", Status: sagacoordv1.StepStatus_STEP_STATUS_RUNNING,
				Attempt: 2, LastError: "card network timeout", StartedAt: ts(1), Pivot: true},
			{Name: "ship", Participant: "shipping", Status: sagacoordv1.StepStatus_STEP_STATUS_PENDING},
		},
	}
}

func TestSagaGet(t *testing.T) {
	t.Parallel()
	fake := &fakeSaga{get: func(_ context.Context, r *sagacoordv1.GetSagaRequest) (*sagacoordv1.GetSagaResponse, error) {
		if r.GetSagaId() != sagaID {
			return nil, status.Errorf(codes.NotFound, "saga %s not found", r.GetSagaId())
		}
		return &sagacoordv1.GetSagaResponse{Saga: sampleSaga()}, nil
	}}
	addr := serve(t, fake, nil)

	r := sagactl(t, addr, "saga", "get", sagaID)
	requireExit(t, ExitOK, r)
	require.Equal(t, ""+
		"ID:          "+sagaID+"\n"+
		"DEFINITION:  order version 2\n"+
		"STATUS:      RUNNING\n"+
		"CREATED:     2025-06-01T10:00:00.000Z\n"+
		"UPDATED:     2025-06-01T10:00:04.000Z\n"+
		"VERSION:     5\n"+
		"INPUT:       {\"order\":42}\n"+
		"\n"+
		"STEP     PARTICIPANT  STATUS     ATTEMPT  COMP ATTEMPT  PIVOT  DURATION  LAST ERROR\n"+
		"reserve  inventory    SUCCEEDED  1        0             -      120ms     -\n"+
		"charge   payments     RUNNING    2        0             yes    9s+       card network timeout\n"+
		"ship     shipping     PENDING    0        0             -      -         -\n", r.stdout)

	r = sagactl(t, addr, "-o", "json", "saga", "get", sagaID)
	requireExit(t, ExitOK, r)
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	require.Equal(t, "SAGA_STATUS_RUNNING", got["status"])
	require.Equal(t, "order", got["definition"])
	require.Equal(t, float64(2), got["definition_version"])
	require.Contains(t, got, "finished_at", "unpopulated fields are printed")
	steps := got["steps"].([]any)
	require.Equal(t, "card network timeout", steps[1].(map[string]any)["last_error"])
	// Finding: input and output printed as base64. They are printed as the JSON they hold.
	require.Equal(t, map[string]any{"order": float64(42)}, got["input"])
	require.Equal(t, map[string]any{"reserved": []any{"sku-1"}}, steps[0].(map[string]any)["output"])
	require.Nil(t, steps[1].(map[string]any)["output"], "no output is null")
	// The same saga prints the same bytes every time (protojson alone varies its whitespace).
	again := sagactl(t, addr, "-o", "json", "saga", "get", sagaID)
	require.Equal(t, r.stdout, again.stdout)

	r = sagactl(t, addr, "saga", "get", "other")
	requireExit(t, ExitServer, r)
	require.Equal(t, "sagactl: saga get: NotFound: saga other not found\n", r.stderr)
}

func TestSagaStart(t *testing.T) {
	t.Parallel()
	fake := &fakeSaga{start: func(r *sagacoordv1.StartSagaRequest) (*sagacoordv1.StartSagaResponse, error) {
		if r.GetDefinition() == "missing" {
			return nil, status.Error(codes.NotFound, `definition "missing" not found`)
		}
		return &sagacoordv1.StartSagaResponse{Created: r.GetSagaId() != sagaID, Saga: &sagacoordv1.Saga{
			Id: r.GetSagaId(), Definition: r.GetDefinition(), DefinitionVersion: 2,
			Status: sagacoordv1.SagaStatus_SAGA_STATUS_RUNNING, Input: r.GetInput(),
		}}, nil
	}}
	addr := serve(t, fake, nil)

	t.Run("all flags", func(t *testing.T) {
		r := sagactl(t, addr, "saga", "start", "order", "--id", sagaID, "--input", `{"order": 42}`, "--version", "2", "--deadline", "90s")
		requireExit(t, ExitOK, r)
		require.Equal(t, "saga "+sagaID+" already started (same request): order version 2, RUNNING\n", r.stdout)
		req := lastRequest[*sagacoordv1.StartSagaRequest](t, fake)
		require.Equal(t, sagaID, req.GetSagaId())
		require.Equal(t, "order", req.GetDefinition())
		require.Equal(t, int32(2), req.GetDefinitionVersion())
		require.JSONEq(t, `{"order": 42}`, string(req.GetInput()))
		require.Equal(t, 90*time.Second, req.GetDeadline().AsDuration())
	})
	t.Run("generated id and input file", func(t *testing.T) {
		r := sagactl(t, addr, "saga", "start", "order", "--input-file", writeFile(t, "in.json", `{"x": [1, 2]}`))
		requireExit(t, ExitOK, r)
		req := lastRequest[*sagacoordv1.StartSagaRequest](t, fake)
		require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, req.GetSagaId())
		require.Equal(t, "saga "+req.GetSagaId()+" started: order version 2, RUNNING\n", r.stdout)
		require.JSONEq(t, `{"x": [1, 2]}`, string(req.GetInput()))
		require.Nil(t, req.GetDeadline())
	})
	t.Run("input from stdin, json output", func(t *testing.T) {
		r := sagactlWith(t, runOpts{stdin: `"hello"`}, addr, "-o", "json", "saga", "start", "order", "--input-file", "-")
		requireExit(t, ExitOK, r)
		var out struct {
			Saga struct {
				Status string `json:"status"`
				Input  string `json:"input"`
			} `json:"saga"`
			Created bool `json:"created"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
		require.True(t, out.Created)
		require.Equal(t, "SAGA_STATUS_RUNNING", out.Saga.Status)
		require.Equal(t, "hello", out.Saga.Input, "the input is printed as the JSON it is, not as base64")
	})
	t.Run("server error", func(t *testing.T) {
		r := sagactl(t, addr, "saga", "start", "missing")
		requireExit(t, ExitServer, r)
		require.Equal(t, "sagactl: saga start: NotFound: definition \"missing\" not found\n", r.stderr)
	})

	before := len(fake.requests())
	for _, tt := range []struct {
		name string
		args []string
		msg  string
	}{
		{"bad input", []string{"--input", "{order: 42}"}, "sagactl: saga start: --input: the saga input must be JSON: invalid character 'o'"},
		{"both inputs", []string{"--input", "{}", "--input-file", "x.json"}, "give --input or --input-file, not both"},
		{"bad id", []string{"--id", "42"}, `invalid --id "42": want a UUID`},
		{"bad deadline", []string{"--deadline", "soon"}, `invalid argument "soon" for "--deadline" flag`},
		{"negative deadline", []string{"--deadline", "-1m"}, "invalid --deadline -1m0s: must be positive"},
		{"negative version", []string{"--version", "-1"}, "invalid --version -1"},
		{"missing input file", []string{"--input-file", "/nonexistent/in.json"}, "read open /nonexistent/in.json: no such file or directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := sagactl(t, addr, append([]string{"saga", "start", "order"}, tt.args...)...)
			requireExit(t, ExitUsage, r)
			require.Contains(t, r.stderr, tt.msg)
		})
	}
	require.Len(t, fake.requests(), before, "usage errors send nothing")
}

// lastRequest returns the newest request of type R the fake got.
func lastRequest[R any](t *testing.T, f *fakeSaga) R {
	t.Helper()
	reqs := f.requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if r, ok := reqs[i].(R); ok {
			return r
		}
	}
	var zero R
	t.Fatalf("no %T request", zero)
	return zero
}

// streamOf returns a WatchSaga handler that sends the given states and then ends the stream.
func streamOf(states ...*sagacoordv1.Saga) func(*sagacoordv1.WatchSagaRequest, grpc.ServerStreamingServer[sagacoordv1.WatchSagaResponse]) error {
	return func(_ *sagacoordv1.WatchSagaRequest, s grpc.ServerStreamingServer[sagacoordv1.WatchSagaResponse]) error {
		for _, st := range states {
			if err := s.Send(&sagacoordv1.WatchSagaResponse{Saga: st}); err != nil {
				return err
			}
		}
		return nil
	}
}

// history builds a saga's successive states: each change is a saga status and step statuses.
func history(changes ...func(*sagacoordv1.Saga)) []*sagacoordv1.Saga {
	cur := &sagacoordv1.Saga{
		Id: sagaID, Definition: "order", DefinitionVersion: 2, Status: sagacoordv1.SagaStatus_SAGA_STATUS_RUNNING,
		Steps: []*sagacoordv1.Step{
			{Name: "reserve", Status: sagacoordv1.StepStatus_STEP_STATUS_RUNNING, Attempt: 1},
			{Name: "charge", Status: sagacoordv1.StepStatus_STEP_STATUS_PENDING},
		},
	}
	var out []*sagacoordv1.Saga
	for i, change := range changes {
		cur = proto.Clone(cur).(*sagacoordv1.Saga)
		cur.Version = int64(i + 1)
		cur.UpdatedAt = ts(i)
		change(cur)
		out = append(out, cur)
	}
	return out
}

func noChange(*sagacoordv1.Saga) {}

func completedHistory() []*sagacoordv1.Saga {
	return history(noChange,
		func(s *sagacoordv1.Saga) {
			s.Steps[0].Status = sagacoordv1.StepStatus_STEP_STATUS_SUCCEEDED
			s.Steps[1].Status, s.Steps[1].Attempt = sagacoordv1.StepStatus_STEP_STATUS_RUNNING, 1
		},
		func(s *sagacoordv1.Saga) {
			s.Steps[1].Attempt, s.Steps[1].LastError = 2, "timeout"
		},
		func(s *sagacoordv1.Saga) {
			s.Status = sagacoordv1.SagaStatus_SAGA_STATUS_COMPLETED
			s.Steps[1].Status = sagacoordv1.StepStatus_STEP_STATUS_SUCCEEDED
		},
	)
}

func compensatedHistory() []*sagacoordv1.Saga {
	return history(noChange,
		func(s *sagacoordv1.Saga) {
			s.Status, s.Reason = sagacoordv1.SagaStatus_SAGA_STATUS_COMPENSATING, "charge: card declined"
			s.Steps[0].Status = sagacoordv1.StepStatus_STEP_STATUS_COMPENSATING
			s.Steps[1].Status, s.Steps[1].LastError = sagacoordv1.StepStatus_STEP_STATUS_FAILED, "card declined"
		},
		func(s *sagacoordv1.Saga) {
			s.Status = sagacoordv1.SagaStatus_SAGA_STATUS_COMPENSATED
			s.Steps[0].Status, s.Steps[0].CompensationAttempt = sagacoordv1.StepStatus_STEP_STATUS_COMPENSATED, 2
		},
	)
}

func failedHistory() []*sagacoordv1.Saga {
	return history(noChange, func(s *sagacoordv1.Saga) {
		s.Status, s.Reason = sagacoordv1.SagaStatus_SAGA_STATUS_FAILED, "reserve: compensation exhausted its retries"
		s.Steps[0].Status, s.Steps[0].Attempt = sagacoordv1.StepStatus_STEP_STATUS_FAILED, 3
	})
}

func TestSagaWatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		states []*sagacoordv1.Saga
		code   int
		lines  string
		stderr string
	}{
		{
			name: "completed", states: completedHistory(), code: ExitOK,
			lines: "" +
				"2025-06-01T10:00:00.000Z RUNNING v1 reserve=RUNNING charge=PENDING\n" +
				"2025-06-01T10:00:01.000Z RUNNING v2 reserve=SUCCEEDED charge=RUNNING\n" +
				"2025-06-01T10:00:02.000Z RUNNING v3 charge=RUNNING(attempt 2, error \"timeout\")\n" +
				"2025-06-01T10:00:03.000Z COMPLETED v4 charge=SUCCEEDED(attempt 2)\n",
		},
		{
			name: "compensated", states: compensatedHistory(), code: ExitCompensated,
			lines: "" +
				"2025-06-01T10:00:00.000Z RUNNING v1 reserve=RUNNING charge=PENDING\n" +
				"2025-06-01T10:00:01.000Z COMPENSATING v2 reserve=COMPENSATING charge=FAILED(error \"card declined\") reason=\"charge: card declined\"\n" +
				"2025-06-01T10:00:02.000Z COMPENSATED v3 reserve=COMPENSATED(compensation attempt 2)\n",
			stderr: "sagactl: saga watch: saga " + sagaID + " ended COMPENSATED: charge: card declined\n",
		},
		{
			name: "failed", states: failedHistory(), code: ExitFailed,
			lines: "" +
				"2025-06-01T10:00:00.000Z RUNNING v1 reserve=RUNNING charge=PENDING\n" +
				"2025-06-01T10:00:01.000Z FAILED v2 reserve=FAILED(attempt 3) reason=\"reserve: compensation exhausted its retries\"\n",
			stderr: "sagactl: saga watch: saga " + sagaID + " ended FAILED: reserve: compensation exhausted its retries\n",
		},
		{
			name: "stream ends early", states: completedHistory()[:2], code: ExitServer,
			lines: "" +
				"2025-06-01T10:00:00.000Z RUNNING v1 reserve=RUNNING charge=PENDING\n" +
				"2025-06-01T10:00:01.000Z RUNNING v2 reserve=SUCCEEDED charge=RUNNING\n",
			stderr: "sagactl: saga watch: the coordinator ended the watch before saga " + sagaID + " ended (last status RUNNING)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := serve(t, &fakeSaga{watch: streamOf(tt.states...)}, nil)
			r := sagactl(t, addr, "saga", "watch", sagaID)
			requireExit(t, tt.code, r)
			require.Equal(t, tt.lines, r.stdout)
			require.Equal(t, tt.stderr, r.stderr)

			r = sagactl(t, addr, "-o", "json", "saga", "watch", sagaID)
			requireExit(t, tt.code, r)
			lines := splitLines(r.stdout)
			require.Len(t, lines, len(tt.states))
			for i, l := range lines {
				var got sagacoordv1.Saga
				require.NoError(t, unmarshalProtoJSON([]byte(l), &got), l)
				requireProtoEqual(t, tt.states[i], &got)
			}
		})
	}
}

// TestSagaStartWait checks --wait's exit codes, and that -o json then prints only the final saga.
func TestSagaStartWait(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		states []*sagacoordv1.Saga
		code   int
	}{
		{"completed", completedHistory(), ExitOK},
		{"compensated", compensatedHistory(), ExitCompensated},
		{"failed", failedHistory(), ExitFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := &fakeSaga{
				start: func(r *sagacoordv1.StartSagaRequest) (*sagacoordv1.StartSagaResponse, error) {
					return &sagacoordv1.StartSagaResponse{Saga: tt.states[0], Created: true}, nil
				},
				watch: streamOf(tt.states...),
			}
			addr := serve(t, fake, nil)
			r := sagactl(t, addr, "saga", "start", "order", "--id", sagaID, "--wait")
			requireExit(t, tt.code, r)
			lines := splitLines(r.stdout)
			require.Equal(t, "saga "+sagaID+" started: order version 2, RUNNING", lines[0])
			require.Len(t, lines, 1+len(tt.states))
			require.Equal(t, sagaID, lastRequest[*sagacoordv1.WatchSagaRequest](t, fake).GetSagaId())

			r = sagactl(t, addr, "-o", "json", "saga", "start", "order", "--id", sagaID, "--wait")
			requireExit(t, tt.code, r)
			var got sagacoordv1.Saga
			require.NoError(t, unmarshalProtoJSON([]byte(r.stdout), &got), r.stdout)
			requireProtoEqual(t, tt.states[len(tt.states)-1], &got)
		})
	}
}

// An interrupted watch (Ctrl-C) exits 130 and says so.
func TestSagaWatchInterrupted(t *testing.T) {
	t.Parallel()
	sent := make(chan struct{})
	addr := serve(t, &fakeSaga{watch: func(_ *sagacoordv1.WatchSagaRequest, s grpc.ServerStreamingServer[sagacoordv1.WatchSagaResponse]) error {
		if err := s.Send(&sagacoordv1.WatchSagaResponse{Saga: completedHistory()[0]}); err != nil {
			return err
		}
		close(sent)
		<-s.Context().Done()
		return s.Context().Err()
	}}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-sent
		cancel()
	}()
	r := sagactlWith(t, runOpts{ctx: ctx}, addr, "saga", "watch", sagaID)
	requireExit(t, ExitInterrupted, r)
	require.Equal(t, "sagactl: saga watch: interrupted\n", r.stderr)
}

// pagedSagas serves n sagas in pages of the requested size, with offsets as page tokens.
func pagedSagas(n int) func(*sagacoordv1.ListSagasRequest) (*sagacoordv1.ListSagasResponse, error) {
	return func(r *sagacoordv1.ListSagasRequest) (*sagacoordv1.ListSagasResponse, error) {
		start := 0
		if r.GetPageToken() != "" {
			var err error
			if start, err = strconv.Atoi(r.GetPageToken()); err != nil {
				return nil, status.Error(codes.InvalidArgument, "page_token: malformed")
			}
		}
		size := int(r.GetPageSize())
		if size == 0 {
			size = 50
		}
		resp := &sagacoordv1.ListSagasResponse{}
		for i := start; i < n && i < start+size; i++ {
			resp.Sagas = append(resp.Sagas, &sagacoordv1.Saga{
				Id: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Definition: "order", DefinitionVersion: 1,
				Status: sagacoordv1.SagaStatus_SAGA_STATUS_COMPLETED, CreatedAt: ts(i), UpdatedAt: ts(i + 1),
			})
		}
		if start+size < n {
			resp.NextPageToken = strconv.Itoa(start + size)
		}
		return resp, nil
	}
}

func TestSagaList(t *testing.T) {
	t.Parallel()
	fake := &fakeSaga{list: pagedSagas(5)}
	addr := serve(t, fake, nil)
	ids := func(out string) []string {
		var sagas []struct {
			ID string `json:"id"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &sagas), out)
		var got []string
		for _, s := range sagas {
			got = append(got, s.ID[len(s.ID)-1:])
		}
		return got
	}

	t.Run("table", func(t *testing.T) {
		r := sagactl(t, addr, "saga", "list", "--limit", "2")
		requireExit(t, ExitOK, r)
		require.Equal(t, ""+
			"ID                                    DEFINITION  VERSION  STATUS     CREATED                   UPDATED                   REASON\n"+
			"00000000-0000-4000-8000-000000000000  order       1        COMPLETED  2025-06-01T10:00:00.000Z  2025-06-01T10:00:01.000Z  -\n"+
			"00000000-0000-4000-8000-000000000001  order       1        COMPLETED  2025-06-01T10:00:01.000Z  2025-06-01T10:00:02.000Z  -\n", r.stdout)
		require.Equal(t, "more sagas: repeat with --page-token 2, or use --all\n", r.stderr)
	})
	t.Run("all follows page tokens", func(t *testing.T) {
		r := sagactl(t, addr, "-o", "json", "saga", "list", "--limit", "2", "--all")
		requireExit(t, ExitOK, r)
		require.Equal(t, []string{"0", "1", "2", "3", "4"}, ids(r.stdout))
		require.Empty(t, r.stderr)
	})
	t.Run("page token", func(t *testing.T) {
		r := sagactl(t, addr, "-o", "json", "saga", "list", "--limit", "2", "--page-token", "2")
		requireExit(t, ExitOK, r)
		require.Equal(t, []string{"2", "3"}, ids(r.stdout))
		require.Equal(t, "more sagas: repeat with --page-token 4, or use --all\n", r.stderr)
	})
	t.Run("limit spans pages", func(t *testing.T) {
		small := &fakeSaga{list: func(r *sagacoordv1.ListSagasRequest) (*sagacoordv1.ListSagasResponse, error) {
			r.PageSize = min(r.GetPageSize(), 2) // a server with a smaller maximum page
			return pagedSagas(5)(r)
		}}
		r := sagactl(t, serve(t, small, nil), "-o", "json", "saga", "list", "--limit", "3")
		requireExit(t, ExitOK, r)
		require.Equal(t, []string{"0", "1", "2"}, ids(r.stdout))
	})
	t.Run("filters", func(t *testing.T) {
		for _, s := range []string{"compensated", "COMPENSATED", "saga_status_compensated", "SAGA_STATUS_COMPENSATED"} {
			r := sagactl(t, addr, "saga", "list", "--status", s, "--definition", "order")
			requireExit(t, ExitOK, r)
			req := lastRequest[*sagacoordv1.ListSagasRequest](t, fake)
			require.Equal(t, sagacoordv1.SagaStatus_SAGA_STATUS_COMPENSATED, req.GetStatus(), s)
			require.Equal(t, "order", req.GetDefinition())
		}
	})
	t.Run("empty json list", func(t *testing.T) {
		empty := &fakeSaga{list: pagedSagas(0)}
		r := sagactl(t, serve(t, empty, nil), "-o", "json", "saga", "list")
		requireExit(t, ExitOK, r)
		require.Equal(t, "[]\n", r.stdout)
	})
	t.Run("bad flags", func(t *testing.T) {
		r := sagactl(t, addr, "saga", "list", "--status", "done")
		requireExit(t, ExitUsage, r)
		require.Contains(t, r.stderr, `invalid --status "done": want one of RUNNING, COMPLETED, COMPENSATING, COMPENSATED, FAILED`)
		r = sagactl(t, addr, "saga", "list", "--status", "unspecified")
		requireExit(t, ExitUsage, r)
		r = sagactl(t, addr, "saga", "list", "--limit", "0")
		requireExit(t, ExitUsage, r)
	})
	t.Run("server error mid-way", func(t *testing.T) {
		r := sagactl(t, addr, "saga", "list", "--page-token", "x")
		requireExit(t, ExitServer, r)
		require.Equal(t, "sagactl: saga list: InvalidArgument: page_token: malformed\n", r.stderr)
	})
}

func TestSagaAbortRetry(t *testing.T) {
	t.Parallel()
	fake := &fakeSaga{
		abort: func(r *sagacoordv1.AbortSagaRequest) (*sagacoordv1.AbortSagaResponse, error) {
			if r.GetSagaId() != sagaID {
				return nil, status.Error(codes.FailedPrecondition, "saga is past its pivot (charge); it can only go forward")
			}
			return &sagacoordv1.AbortSagaResponse{Saga: &sagacoordv1.Saga{Id: sagaID, Status: sagacoordv1.SagaStatus_SAGA_STATUS_COMPENSATING, Reason: r.GetReason()}}, nil
		},
		retry: func(r *sagacoordv1.RetrySagaRequest) (*sagacoordv1.RetrySagaResponse, error) {
			return &sagacoordv1.RetrySagaResponse{Saga: &sagacoordv1.Saga{Id: r.GetSagaId(), Status: sagacoordv1.SagaStatus_SAGA_STATUS_RUNNING}}, nil
		},
	}
	addr := serve(t, fake, nil)

	r := sagactl(t, addr, "saga", "abort", sagaID, "--reason", "customer cancelled")
	requireExit(t, ExitOK, r)
	require.Equal(t, "saga "+sagaID+" abort requested: COMPENSATING\n", r.stdout)
	require.Equal(t, "customer cancelled", lastRequest[*sagacoordv1.AbortSagaRequest](t, fake).GetReason())

	r = sagactl(t, addr, "saga", "abort", "other")
	requireExit(t, ExitServer, r)
	require.Equal(t, "sagactl: saga abort: FailedPrecondition: saga is past its pivot (charge); it can only go forward\n", r.stderr)

	r = sagactl(t, addr, "saga", "retry", sagaID)
	requireExit(t, ExitOK, r)
	require.Equal(t, "saga "+sagaID+" resumed: RUNNING\n", r.stdout)
	require.Empty(t, lastRequest[*sagacoordv1.RetrySagaRequest](t, fake).GetReason(), "the reason is optional")

	r = sagactl(t, addr, "saga", "retry", sagaID, "--reason", "payments is back")
	requireExit(t, ExitOK, r)
	require.Equal(t, "payments is back", lastRequest[*sagacoordv1.RetrySagaRequest](t, fake).GetReason())

	r = sagactl(t, addr, "-o", "json", "saga", "retry", sagaID)
	requireExit(t, ExitOK, r)
	require.Contains(t, r.stdout, `"status": "SAGA_STATUS_RUNNING"`)
}

// saga get prints the audit trail after the steps, and -o json carries it as "audit".
func TestSagaGetShowsTheAuditTrail(t *testing.T) {
	t.Parallel()
	sg := sampleSaga()
	sg.Steps = nil
	sg.Audit = []*sagacoordv1.AuditEntry{
		{Action: "abort", By: "ops-alice", At: ts(5), Reason: "customer cancelled"},
		{Action: "retry", By: "ops-bob", At: ts(9)},
	}
	fake := &fakeSaga{get: func(context.Context, *sagacoordv1.GetSagaRequest) (*sagacoordv1.GetSagaResponse, error) {
		return &sagacoordv1.GetSagaResponse{Saga: sg}, nil
	}}
	addr := serve(t, fake, nil)

	r := sagactl(t, addr, "saga", "get", sagaID)
	requireExit(t, ExitOK, r)
	require.Contains(t, r.stdout, "VERSION:     5\n"+
		"INPUT:       {\"order\":42}\n"+
		"\n"+
		"AUDIT AT                  ACTION  BY         REASON\n"+
		"2025-06-01T10:00:05.000Z  abort   ops-alice  customer cancelled\n"+
		"2025-06-01T10:00:09.000Z  retry   ops-bob    -\n")

	r = sagactl(t, addr, "-o", "json", "saga", "get", sagaID)
	requireExit(t, ExitOK, r)
	var got struct {
		Audit []map[string]string `json:"audit"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	require.Equal(t, []map[string]string{
		{"action": "abort", "by": "ops-alice", "at": "2025-06-01T10:00:05Z", "reason": "customer cancelled"},
		{"action": "retry", "by": "ops-bob", "at": "2025-06-01T10:00:09Z", "reason": ""},
	}, got.Audit)
}
