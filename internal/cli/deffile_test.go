package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

const orderYAML = `# the order saga
name: order
deadline: 5m
steps:
  - name: reserve
    participant: inventory
    action: reserve
    compensation: release
    timeout: 5s
    retry: {max_attempts: 3, initial_backoff: 100ms, max_backoff: 5s, multiplier: 2}
  - name: charge
    participant: payments
    action: charge
    compensation: refund
    depends_on: [reserve]
    pivot: true
    compensation_retry:
      max_attempts: 10
      initial_backoff: 1s
  - name: ship
    participant: shipping
    action: ship
    depends_on: [charge]
`

const orderJSON = `{
	"name": "order",
	"deadline": "5m",
	"steps": [
		{"name": "reserve", "participant": "inventory", "action": "reserve", "compensation": "release",
		 "timeout": "5s", "retry": {"max_attempts": 3, "initial_backoff": "100ms", "max_backoff": "5s", "multiplier": 2}},
		{"name": "charge", "participant": "payments", "action": "charge", "compensation": "refund",
		 "depends_on": ["reserve"], "pivot": true,
		 "compensation_retry": {"max_attempts": 10, "initial_backoff": "1s"}},
		{"name": "ship", "participant": "shipping", "action": "ship", "depends_on": ["charge"]}
	]
}`

func orderDefinition() *sagacoordv1.SagaDefinition {
	return &sagacoordv1.SagaDefinition{
		Name:     "order",
		Deadline: durationpb.New(5 * time.Minute),
		Steps: []*sagacoordv1.StepDefinition{
			{
				Name: "reserve", Participant: "inventory", Action: "reserve", Compensation: "release",
				Timeout: durationpb.New(5 * time.Second),
				Retry: &sagacoordv1.RetryPolicy{MaxAttempts: 3, InitialBackoff: durationpb.New(100 * time.Millisecond),
					MaxBackoff: durationpb.New(5 * time.Second), Multiplier: 2},
			},
			{
				Name: "charge", Participant: "payments", Action: "charge", Compensation: "refund",
				DependsOn: []string{"reserve"}, Pivot: true,
				CompensationRetry: &sagacoordv1.RetryPolicy{MaxAttempts: 10, InitialBackoff: durationpb.New(time.Second)},
			},
			{Name: "ship", Participant: "shipping", Action: "ship", DependsOn: []string{"charge"}},
		},
	}
}

func requireProtoEqual(t *testing.T, want, got proto.Message) {
	t.Helper()
	if !proto.Equal(want, got) {
		t.Fatalf("messages differ\nwant: %s\ngot:  %s", prototext.Format(want), prototext.Format(got))
	}
}

func TestParseDefinitionFormats(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, data string
	}{
		{"yaml by extension", "order.yaml", orderYAML},
		{"yml by extension", "order.yml", orderYAML},
		{"json by extension", "order.json", orderJSON},
		{"json sniffed", "-", orderJSON},
		{"yaml sniffed", "order.def", orderYAML},
		{"json with tabs read as yaml", "order.yaml", orderJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			def, err := ParseDefinition(tt.file, []byte(tt.data))
			require.NoError(t, err)
			requireProtoEqual(t, orderDefinition(), def)
		})
	}
}

// Anchors, aliases and merge keys are ordinary YAML; the field check follows them. A merged key
// that is set again is refused, as it always was: merges can add fields but not override.
func TestParseDefinitionAnchors(t *testing.T) {
	t.Parallel()
	def, err := ParseDefinition("a.yaml", []byte(`name: order
steps:
  - name: a
    participant: p
    action: x
    retry: &retry {max_attempts: 5}
  - name: b
    participant: p
    action: y
    retry: *retry
    compensation_retry:
      <<: *retry
      max_backoff: 1m
  - name: c
    participant: p
    action: z
    retry:
      <<: [*retry]
`))
	require.NoError(t, err)
	require.Len(t, def.GetSteps(), 3)
	for _, s := range def.GetSteps() {
		require.Equal(t, int32(5), s.GetRetry().GetMaxAttempts())
	}
	require.Equal(t, time.Minute, def.GetSteps()[1].GetCompensationRetry().GetMaxBackoff().AsDuration())

	_, err = ParseDefinition("a.yaml", []byte("name: order\nsteps:\n  - &s {name: a, colour: red}\n  - *s\n"))
	require.ErrorContains(t, err, "a.yaml:3: steps[0].colour: unknown field")
	_, err = ParseDefinition("a.yaml", []byte("name: order\nsteps:\n  - name: a\n    retry: &r {max_attempts: 5}\n    compensation_retry: {<<: *r, max_attempts: 1}\n"))
	require.ErrorContains(t, err, `a.yaml:5: steps[0].compensation_retry.max_attempts: field given twice`)
}

// The example in the help text must stay a valid file.
func TestParseDefinitionHelpExample(t *testing.T) {
	t.Parallel()
	start := strings.Index(definitionFileHelp, "  name: order")
	end := strings.Index(definitionFileHelp, "\nThe fields version")
	require.True(t, start > 0 && end > start, "example not found in the help text")
	def, err := ParseDefinition("help.yaml", []byte(definitionFileHelp[start:end]))
	require.NoError(t, err)
	require.Equal(t, "order", def.GetName())
	require.Len(t, def.GetSteps(), 1)
	require.Equal(t, int32(10), def.GetSteps()[0].GetCompensationRetry().GetMaxAttempts())
	require.Equal(t, 2.0, def.GetSteps()[0].GetRetry().GetMultiplier())
}

func TestParseDefinitionErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, data string
		line             int
		path             string
		msg              string // substring of the message
	}{
		{
			name: "unknown top-level field", file: "o.yaml",
			data: "name: order\ndeadlin: 5m\nsteps: []\n",
			line: 2, path: "deadlin", msg: `unknown field (did you mean "deadline"?)`,
		},
		{
			name: "misspelt step field", file: "o.yaml",
			data: "name: order\nsteps:\n  - name: a\n    participant: p\n    action: x\n  - name: b\n    paticipant: p\n    action: y\n",
			line: 7, path: "steps[1].paticipant", msg: `did you mean "participant"?`,
		},
		{
			name: "field in the wrong case", file: "o.json",
			data: "{\"name\": \"order\",\n \"Steps\": []}",
			line: 2, path: "Steps", msg: `did you mean "steps"?`,
		},
		{
			name: "unknown retry field", file: "o.yaml",
			data: "name: order\nsteps:\n  - name: a\n    retry:\n      attempts: 3\n",
			line: 5, path: "steps[0].retry.attempts", msg: "known fields are initial_backoff, max_attempts, max_backoff, multiplier",
		},
		{
			name: "unknown field in json", file: "o.json",
			data: "{\n  \"name\": \"order\",\n  \"steps\": [\n    {\"name\": \"a\", \"colour\": \"red\"}\n  ]\n}",
			line: 4, path: "steps[0].colour", msg: "unknown field",
		},
		{
			name: "duplicate field", file: "o.yaml",
			data: "name: order\nname: other\nsteps: []\n",
			line: 2, path: "name", msg: "field given twice (first on line 1)",
		},
		{
			name: "bad duration", file: "o.yaml",
			data: "name: order\nsteps:\n  - name: a\n    timeout: 5 seconds\n",
			line: 4, path: "steps[0].timeout", msg: `invalid duration "5 seconds"`,
		},
		{
			name: "duration without unit", file: "o.yaml",
			data: "name: order\nsteps:\n  - name: a\n    timeout: 5\n",
			line: 4, path: "steps[0].timeout", msg: `invalid duration "5"`,
		},
		{
			name: "number as duration in json", file: "o.json",
			data: "{\"name\": \"order\",\n\"steps\": [{\"name\": \"a\",\n\"timeout\": 5}]}",
			line: 3, path: "steps[0].timeout", msg: `expected a duration string such as "500ms"`,
		},
		{
			name: "bad retry backoff", file: "o.yaml",
			data: "name: order\nsteps:\n  - name: a\n  - name: b\n    retry:\n      max_backoff: 1x\n",
			line: 6, path: "steps[1].retry.max_backoff", msg: "invalid duration",
		},
		{
			name: "negative deadline", file: "o.yaml",
			data: "name: order\ndeadline: -5m\nsteps: []\n",
			line: 2, path: "deadline", msg: "negative",
		},
		{
			name: "wrong type", file: "o.yaml",
			data: "name: order\nsteps:\n  - name: a\n    retry: {max_attempts: 3}\n  - name: b\n    retry: {max_attempts: three}\n",
			line: 6, path: "steps[1].retry.max_attempts", msg: "expected a whole number (int32), got string",
		},
		{
			name: "wrong type in json", file: "o.json",
			data: "{\"name\": \"order\", \"steps\": [\n{\"name\": \"a\",\n \"pivot\": \"yes\"}]}",
			line: 3, path: "steps[0].pivot", msg: "expected true or false, got string",
		},
		{
			name: "steps not a list", file: "o.yaml",
			data: "name: order\nsteps:\n  name: a\n",
			line: 3, path: "steps", msg: "expected a list, got a mapping",
		},
		{
			name: "top level list", file: "o.yaml",
			data: "- name: order\n",
			line: 1, msg: "expected a mapping of fields, got a list",
		},
		{
			name: "empty file", file: "o.yaml", data: " \n\n", msg: "the file is empty",
		},
		{
			name: "two documents", file: "o.yaml",
			data: "name: a\nsteps: []\n---\nname: b\n",
			line: 3, msg: "more than one document",
		},
		{
			name: "json syntax error", file: "o.json",
			data: "{\"name\": \"order\",\n \"steps\": [,]}",
			line: 2, msg: "invalid JSON",
		},
		{
			name: "json trailing data", file: "o.json",
			data: "{\"name\": \"order\", \"steps\": []}\n{}",
			line: 2, msg: "unexpected data after the JSON object",
		},
		{
			name: "yaml syntax error", file: "o.yaml",
			data: "name: order\nsteps: [\n",
			msg:  "invalid YAML",
		},
		{
			name: "negative max attempts", file: "o.yaml",
			data: "name: order\nsteps:\n  - name: a\n    retry:\n      max_attempts: -1\n",
			line: 5, path: "steps[0].retry.max_attempts", msg: "must not be negative",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseDefinition(tt.file, []byte(tt.data))
			require.Error(t, err)
			var fe *FileError
			require.True(t, errors.As(err, &fe), "error %v is not a *FileError", err)
			require.Equal(t, tt.file, fe.File)
			require.Equal(t, tt.line, fe.Line, "line; error: %v", err)
			require.Equal(t, tt.path, fe.Path, "path; error: %v", err)
			require.Contains(t, fe.Msg, tt.msg)
			require.True(t, strings.HasPrefix(err.Error(), tt.file+":"), "error %q does not start with the file name", err)
		})
	}
}

// What `definition get` prints, in either format, is accepted by `definition apply`.
func TestDefinitionRoundTrip(t *testing.T) {
	t.Parallel()
	def := orderDefinition()
	def.Version = 4
	def.CreatedAt = timestamppb.New(time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC))
	want := orderDefinition()

	y, err := definitionYAML(def)
	require.NoError(t, err)
	require.Contains(t, string(y), "deadline: 5m\n")
	require.Contains(t, string(y), "version: 4\n")
	got, err := ParseDefinition("get.yaml", y)
	require.NoError(t, err, "YAML:\n%s", y)
	requireProtoEqual(t, want, got)

	j, err := marshalJSON(def)
	require.NoError(t, err)
	got, err = ParseDefinition("get.json", j)
	require.NoError(t, err, "JSON:\n%s", j)
	requireProtoEqual(t, want, got)
}

func TestShortDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		5 * time.Minute:                   "5m",
		time.Hour:                         "1h",
		90 * time.Second:                  "1m30s",
		100 * time.Millisecond:            "100ms",
		time.Hour + 30*time.Second:        "1h0m30s",
		2*time.Hour + 5*time.Minute:       "2h5m",
		0:                                 "0s",
		1500 * time.Millisecond:           "1.5s",
		10*time.Minute + 10*time.Second:   "10m10s",
		10 * time.Hour:                    "10h",
		10*time.Hour + 10*time.Minute:     "10h10m",
		24 * time.Hour:                    "24h",
		20 * time.Second:                  "20s",
		30 * time.Minute:                  "30m",
		3*time.Hour + 30*time.Millisecond: "3h0m0.03s",
	} {
		require.Equal(t, want, shortDuration(d), "%v", d)
		back, err := time.ParseDuration(want)
		require.NoError(t, err)
		require.Equal(t, d, back)
	}
}

// The example files of the repository parse.
func TestExampleFilesParse(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"transfer.yaml", "order.yaml"} {
		path := filepath.Join("..", "..", "examples", name)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		def, err := ParseDefinition(path, b)
		require.NoError(t, err, path)
		require.NotEmpty(t, def.GetSteps(), path)
	}
	path := filepath.Join("..", "..", "examples", "transfer-2pc.yaml")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	req, err := ParseTransaction(path, b)
	require.NoError(t, err, path)
	require.Len(t, req.GetParticipants(), 2)
}
