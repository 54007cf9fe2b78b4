package cli

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// checkDurations fails when def holds a duration protobuf calls invalid, which the server refuses.
func checkDurations(t *testing.T, def *sagacoordv1.SagaDefinition) {
	t.Helper()
	ds := []*durationpb.Duration{def.GetDeadline()}
	for _, s := range def.GetSteps() {
		ds = append(ds, s.GetTimeout(), s.GetRetry().GetInitialBackoff(), s.GetRetry().GetMaxBackoff(),
			s.GetCompensationRetry().GetInitialBackoff(), s.GetCompensationRetry().GetMaxBackoff())
	}
	for _, d := range ds {
		if d != nil && d.CheckValid() != nil {
			t.Fatalf("accepted an invalid duration %v: %v", d, d.CheckValid())
		}
	}
}

// FuzzParseDefinition checks that no input makes the definition parser panic, that every
// rejection is a *FileError naming the file, and that what it accepts can be sent: it marshals,
// and its durations are ones the server accepts.
func FuzzParseDefinition(f *testing.F) {
	for _, seed := range []string{
		orderYAML, orderJSON, "", "name: x", "{}", "[]", "- a", "name: [", "{\"steps\": [{\"retry\": 1}]}",
		"steps:\n  - timeout: 5s\n    retry: {max_backoff: -1s}\n", "a: &x [*x]\n", "<<: {name: a}\n",
		"name: a\n---\nname: b\n", "steps: [{name: a, depends_on: [b, c]}]", "\ufeff{\"name\":\"a\"}",
	} {
		f.Add("def.yaml", []byte(seed))
		f.Add("def.json", []byte(seed))
		f.Add("-", []byte(seed))
	}
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		def, err := ParseDefinition(name, data)
		if err != nil {
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FileError", err, err)
			}
			if fe.File != name {
				t.Fatalf("error names file %q, want %q", fe.File, name)
			}
			return
		}
		if def == nil {
			t.Fatal("nil definition without an error")
		}
		if _, err := proto.Marshal(def); err != nil {
			t.Fatalf("accepted a definition that cannot be sent: %v", err)
		}
		checkDurations(t, def)
	})
}
