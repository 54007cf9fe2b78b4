package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// writeFile writes a file in the test's temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// registerOnce answers like the server: the first registration creates version 2, identical
// content afterwards is unchanged.
func registerOnce() func(*sagacoordv1.RegisterDefinitionRequest) (*sagacoordv1.RegisterDefinitionResponse, error) {
	var last *sagacoordv1.SagaDefinition
	return func(r *sagacoordv1.RegisterDefinitionRequest) (*sagacoordv1.RegisterDefinitionResponse, error) {
		def := proto.Clone(r.GetDefinition()).(*sagacoordv1.SagaDefinition)
		def.Version = 2
		created := last == nil || !proto.Equal(last, r.GetDefinition())
		last = r.GetDefinition()
		return &sagacoordv1.RegisterDefinitionResponse{Definition: def, Created: created}, nil
	}
}

func TestDefinitionApply(t *testing.T) {
	t.Parallel()
	fake := &fakeSaga{register: registerOnce()}
	addr := serve(t, fake, nil)
	file := writeFile(t, "order.yaml", orderYAML)

	r := sagactl(t, addr, "definition", "apply", "-f", file)
	requireExit(t, ExitOK, r)
	require.Equal(t, "definition order version 2 (created)\n", r.stdout)
	require.Empty(t, r.stderr)
	reqs := fake.requests()
	require.Len(t, reqs, 1)
	requireProtoEqual(t, orderDefinition(), reqs[0].(*sagacoordv1.RegisterDefinitionRequest).GetDefinition())

	r = sagactl(t, addr, "definition", "apply", "-f", file)
	requireExit(t, ExitOK, r)
	require.Equal(t, "definition order version 2 (unchanged)\n", r.stdout)

	// JSON from standard input, -o json.
	r = sagactlWith(t, runOpts{stdin: orderJSON}, addr, "-o", "json", "definition", "apply", "-f", "-")
	requireExit(t, ExitOK, r)
	var out struct {
		Definition struct {
			Name    string `json:"name"`
			Version int    `json:"version"`
			Steps   []struct {
				Name      string   `json:"name"`
				DependsOn []string `json:"depends_on"`
				Timeout   *string  `json:"timeout"`
			} `json:"steps"`
		} `json:"definition"`
		Created *bool `json:"created"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.Equal(t, "order", out.Definition.Name)
	require.Equal(t, 2, out.Definition.Version)
	require.NotNil(t, out.Created, "unpopulated fields are printed")
	require.False(t, *out.Created)
	require.Equal(t, "5s", *out.Definition.Steps[0].Timeout)
	require.Nil(t, out.Definition.Steps[2].Timeout)
	require.Equal(t, []string{"charge"}, out.Definition.Steps[2].DependsOn)
}

func TestDefinitionApplyErrors(t *testing.T) {
	t.Parallel()
	fake := &fakeSaga{register: func(*sagacoordv1.RegisterDefinitionRequest) (*sagacoordv1.RegisterDefinitionResponse, error) {
		return nil, status.Error(codes.InvalidArgument, "steps[1].participant: must not be empty")
	}}
	addr := serve(t, fake, nil)

	t.Run("server rejects", func(t *testing.T) {
		r := sagactl(t, addr, "definition", "apply", "-f", writeFile(t, "order.yaml", orderYAML))
		requireExit(t, ExitServer, r)
		require.Equal(t, "sagactl: definition apply: InvalidArgument: steps[1].participant: must not be empty\n", r.stderr)
		require.Empty(t, r.stdout)
	})
	t.Run("unknown field", func(t *testing.T) {
		file := writeFile(t, "bad.yaml", "name: order\nsteps:\n  - name: a\n    particpant: p\n")
		r := sagactl(t, addr, "definition", "apply", "-f", file)
		requireExit(t, ExitUsage, r)
		require.Equal(t, "sagactl: definition apply: "+file+`:4: steps[0].particpant: unknown field (did you mean "participant"?); `+
			"known fields are action, compensation, compensation_retry, depends_on, name, participant, pivot, retry, timeout\n", r.stderr)
	})
	t.Run("bad duration", func(t *testing.T) {
		file := writeFile(t, "bad.json", `{"name": "order", "steps": [{"name": "a", "timeout": "soon"}]}`)
		r := sagactl(t, addr, "definition", "apply", "-f", file)
		requireExit(t, ExitUsage, r)
		require.Contains(t, r.stderr, file+`:1: steps[0].timeout: invalid duration "soon"`)
	})
	t.Run("missing file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "nope.yaml")
		r := sagactl(t, addr, "definition", "apply", "-f", file)
		requireExit(t, ExitUsage, r)
		require.Contains(t, r.stderr, "sagactl: definition apply: read open "+file+": no such file or directory")
	})
	t.Run("no -f", func(t *testing.T) {
		r := sagactl(t, addr, "definition", "apply")
		requireExit(t, ExitUsage, r)
		require.Contains(t, r.stderr, "-f FILE is required")
		require.Contains(t, r.stderr, "Run 'sagactl definition apply --help' for usage.")
	})
	// Nothing reached the server but the one request of "server rejects".
	require.Len(t, fake.requests(), 1)
}

func TestDefinitionListAndGet(t *testing.T) {
	t.Parallel()
	created := timestamppb.New(time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC))
	stored := orderDefinition()
	stored.Version = 3
	stored.CreatedAt = created
	stored.RegisteredBy = "ci-bot"
	fake := &fakeSaga{
		// Two pages: sagactl follows the token (finding: definitions were not paged).
		listDefs: func(r *sagacoordv1.ListDefinitionsRequest) (*sagacoordv1.ListDefinitionsResponse, error) {
			if r.GetPageToken() == "" {
				return &sagacoordv1.ListDefinitionsResponse{Definitions: []*sagacoordv1.SagaDefinition{stored}, NextPageToken: "p2"}, nil
			}
			return &sagacoordv1.ListDefinitionsResponse{Definitions: []*sagacoordv1.SagaDefinition{
				{Name: "transfer", Version: 1, CreatedAt: created, Steps: []*sagacoordv1.StepDefinition{{Name: "debit"}}},
			}}, nil
		},
		getDef: func(r *sagacoordv1.GetDefinitionRequest) (*sagacoordv1.GetDefinitionResponse, error) {
			if r.GetName() != "order" {
				return nil, status.Errorf(codes.NotFound, "definition %q not found", r.GetName())
			}
			return &sagacoordv1.GetDefinitionResponse{Definition: stored}, nil
		},
	}
	addr := serve(t, fake, nil)

	r := sagactl(t, addr, "definition", "list")
	requireExit(t, ExitOK, r)
	require.Equal(t, ""+
		"NAME      VERSION  STEPS  DEADLINE  CREATED                   REGISTERED BY\n"+
		"order     3        3      5m        2025-06-01T09:00:00.000Z  ci-bot\n"+
		"transfer  1        1      -         2025-06-01T09:00:00.000Z  -\n", r.stdout)

	r = sagactl(t, addr, "-o", "json", "definition", "list")
	requireExit(t, ExitOK, r)
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list))
	require.Len(t, list, 2)
	require.Equal(t, "transfer", list[1]["name"])
	require.Contains(t, list[1], "deadline", "unpopulated fields are printed")

	r = sagactl(t, addr, "definition", "get", "order", "--version", "3")
	requireExit(t, ExitOK, r)
	require.Equal(t, int32(3), fake.requests()[len(fake.requests())-1].(*sagacoordv1.GetDefinitionRequest).GetVersion())
	require.Contains(t, r.stdout, "name: order\n")
	require.Contains(t, r.stdout, "    timeout: 5s\n")
	require.Contains(t, r.stdout, "created_at: \"2025-06-01T09:00:00.000Z\"\n")
	require.Contains(t, r.stdout, "registered_by: ci-bot\n")
	// What get prints, apply takes.
	def, err := ParseDefinition("get.yaml", []byte(r.stdout))
	require.NoError(t, err)
	requireProtoEqual(t, orderDefinition(), def)

	r = sagactl(t, addr, "-o", "json", "definition", "get", "order")
	requireExit(t, ExitOK, r)
	def, err = ParseDefinition("-", []byte(r.stdout))
	require.NoError(t, err)
	requireProtoEqual(t, orderDefinition(), def)
	require.Contains(t, r.stdout, `"created_at": "2025-06-01T09:00:00Z"`)
	require.Contains(t, r.stdout, `"registered_by": "ci-bot"`)

	r = sagactl(t, addr, "definition", "get", "nope")
	requireExit(t, ExitServer, r)
	require.Equal(t, "sagactl: definition get: NotFound: definition \"nope\" not found\n", r.stderr)

	r = sagactl(t, addr, "definition", "get")
	requireExit(t, ExitUsage, r)
	require.Contains(t, r.stderr, "want 1 argument(s) (NAME), got 0")
}
