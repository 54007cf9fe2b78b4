package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The --participants spec and the config file are outside input: whatever they hold, parsing
// and validation return an error or a configuration whose schemas PostgreSQL accepts.

func FuzzParseParticipants(f *testing.F) {
	for _, s := range []string{"bank-a,bank-b,inventory,payments", "a=transfer, b = noop", ",,=", "x=y=z", "ÄÖ=noop"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		ps, err := parseParticipants(spec)
		if err != nil {
			return
		}
		c := simConfig{SchemaPrefix: "sim_", Participants: ps}
		if c.validate() != nil {
			return
		}
		for _, p := range ps {
			if s := schemaOf(c.SchemaPrefix, p.Name); !validSchema(s) {
				t.Fatalf("participant %q: schema %q is not an identifier", p.Name, s)
			}
		}
	})
}

func FuzzConfigFile(f *testing.F) {
	f.Add([]byte("seed: 1\nparticipants:\n  - {name: a, kind: noop, faults: {'*': {latency: 5ms}}}\n"))
	f.Add([]byte(`{"participants":[{"name":"b","kind":"transfer","seed_accounts":2}]}`))
	f.Add([]byte("participants: [{name: a, faults: {x: {latency: 20}}}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "sim.yaml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := loadConfigFile(path)
		if err != nil {
			return
		}
		_ = c.withDefaults(1, 1).validate()
	})
}

func validSchema(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, r := range s {
		if !(r == '_' || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')) {
			return false
		}
	}
	return true
}
