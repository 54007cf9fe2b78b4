package cli

import (
	"errors"
	"testing"
)

// FuzzParseDefinition checks that no input makes the definition parser panic, and that every
// rejection is a *FileError naming the file.
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
	})
}
