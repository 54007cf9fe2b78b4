package chaos

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// writeScenario writes a scenario file, and the transfer definition next to it, into a temp
// dir and returns the scenario's path.
func writeScenario(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "transfer.yaml"), []byte(tinyDefinition), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// strictBase is a valid scenario file; the cases below append to it or edit it. Line 5 is
// bank-b's participant entry, line 9 the definition, line 11 the first timeline entry.
const strictBase = `name: strict
topology:
  participant_sims:
    - name: banks
      participants: [{name: bank-a, kind: transfer}, {name: bank-b, kind: transfer, faults: {credit: {fail_probability: 0.1}}}]
    - name: spare
      participants: [{name: bank-c, kind: noop}]
workload:
  definition: transfer.yaml
timeline:
  - {at: 1s, kind: sigkill, target: banks, duration: 1s}
`

// Settings that would be ignored are errors naming the file, the line and the field.
func TestSilentlyIgnoredSettingsAreErrorsWithTheirLine(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		want           []string
	}{
		{"misspelt action", "faults: {credit:", "faults: {crdit:",
			[]string{"line 5: topology.participant_sims[0].participants[1].faults.crdit:", `"crdit" never fires`, "sends bank-b only credit, undo_credit"}},
		{"knobs of a participant the workload never uses", "kind: noop}", "kind: noop, faults: {\"*\": {latency: 5ms}}}",
			[]string{"line 7: topology.participant_sims[1].participants[0].faults.*:", "sends bank-c no command"}},
		{"duration on pg_terminate", "kind: sigkill, target: banks, duration: 1s", "kind: pg_terminate, target: banks, duration: 1s",
			[]string{"line 11: timeline[0].duration: pg_terminate is instantaneous"}},
		{"duration on restart", "kind: sigkill, target: banks, duration: 1s", "kind: restart, target: banks, duration: 1s",
			[]string{"line 11: timeline[0].duration: restart is instantaneous"}},
		{"count on a kill", "duration: 1s}", "duration: 1s, count: 3}",
			[]string{"line 11: timeline[0].count: count is only for inject_duplicate and inject_poison"}},
		{"missing definition", "definition: transfer.yaml", "definition: defs/nope.yaml",
			[]string{"line 9: workload.definition: open ", "nope.yaml: no such file"}},
		{"zero hang_for", "{credit: {fail_probability: 0.1}}", "{credit: {hang_probability: 0.1, hang_for: 0s}}",
			[]string{"line 5: topology.participant_sims[0].participants[1].faults.credit.hang_for: 0s must be positive"}},
		{"negative hang_for", "{credit: {fail_probability: 0.1}}", "{credit: {hang_probability: 0.1, hang_for: -2s}}",
			[]string{"line 5: topology.participant_sims[0].participants[1].faults.credit.hang_for: duration -2s must not be negative"}},
		{"hang_for without a unit", "{credit: {fail_probability: 0.1}}", "{credit: {hang_probability: 0.1, hang_for: 5}}",
			[]string{"line 5: topology.participant_sims[0].participants[1].faults.credit.hang_for: a duration is a string with a unit"}},
		{"hang_for without hang_probability", "{credit: {fail_probability: 0.1}}", "{credit: {hang_for: 2s}}",
			[]string{"line 5: topology.participant_sims[0].participants[1].faults.credit.hang_for: hang_for without hang_probability never fires"}},
		{"a bad timeline duration names its field", "target: banks, duration: 1s}", "target: banks, duration: 1}",
			[]string{"line 11: timeline[0].duration: a duration is a string with a unit"}},
		{"pool size as a flag", "    - name: spare\n", "      flags: [--db-max-conns=40]\n    - name: spare\n",
			[]string{"line 6: topology.participant_sims[0].flags: flag --db-max-conns is set by the runner; set db_max_conns: on the process instead"}},
		{"pool size too big", "    - name: spare\n", "      db_max_conns: 500\n    - name: spare\n",
			[]string{"line 6: topology.participant_sims[0].db_max_conns: 500 must be between 1 and 90"}},
		{"max_batch too big", "{name: bank-a, kind: transfer}", "{name: bank-a, kind: transfer, max_batch: 65}",
			[]string{"line 5: topology.participant_sims[0].participants[0].max_batch: 65 must be between 1 and 64"}},
		{"definition step on an unknown participant", "{name: bank-a, kind: transfer}, ", "",
			[]string{"line 9: workload.definition: step debit of transfer.yaml goes to participant \"bank-a\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(strictBase, tc.from) {
				t.Fatalf("the base lacks %q", tc.from)
			}
			path := writeScenario(t, strings.Replace(strictBase, tc.from, tc.to, 1))
			_, err := LoadFile(path)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), "scenario "+path+": line ") {
				t.Errorf("err = %v, want it to start with the file and the line", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to contain %q", err, w)
				}
			}
		})
	}
	if _, err := LoadFile(writeScenario(t, strictBase)); err != nil {
		t.Fatalf("the base scenario is refused: %v", err)
	}
}

// Every problem of a file is reported, each on its own line naming the file.
func TestEveryProblemNamesTheFile(t *testing.T) {
	body := strings.Replace(strictBase, "faults: {credit:", "faults: {crdit:", 1) +
		"  - {at: 2s, kind: pg_terminate, target: banks, duration: 5s}\n"
	path := writeScenario(t, body)
	_, err := LoadFile(path)
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 problems, got %d: %v", len(lines), err)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "scenario "+path+": line ") {
			t.Errorf("%q does not name the file and the line", l)
		}
	}
}

// A 2PC workload sends prepare, commit and abort; a knob under another name never fires.
func TestTwoPCFaultKeys(t *testing.T) {
	twopc := strings.Replace(strings.Replace(minimal, "  definition: transfer.yaml\n", "  kind: 2pc\n  participants: [bank-a, bank-b]\n", 1),
		"seed_accounts: 5}\n", "seed_accounts: 5, faults: {prepare: {latency: 5ms}, \"*\": {latency: 1ms}}}\n", 1)
	if _, err := Parse([]byte(twopc)); err != nil {
		t.Fatalf("prepare and * refused: %v", err)
	}
	_, err := Parse([]byte(strings.Replace(twopc, "prepare:", "prepre:", 1)))
	if err == nil || !strings.Contains(err.Error(), `line 7: topology.participant_sims[0].participants[0].faults.prepre: "prepre" never fires`) {
		t.Fatalf("err = %v, want prepre refused at line 7", err)
	}
}

func TestLineOf(t *testing.T) {
	src := "a:\n  b:\n    - x: 1\n    - {y: 2,\n       z: 3}\nc: 4\n"
	root := mustNode(t, src)
	for path, want := range map[string]int{"a": 1, "a.b": 2, "a.b[0]": 3, "a.b[1].z": 5, "a.b[1].nope": 4, "c": 6, "d": 1, "": 1} {
		if got := lineOf(root, path); got != want {
			t.Errorf("lineOf(%q) = %d, want %d", path, got, want)
		}
	}
	if lineOf(nil, "a") != 0 {
		t.Error("a line without a document")
	}
}

func mustNode(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	return &n
}

// A bounded hang reaches participant-sim's config file as the runner writes it (JSON).
func TestBoundedHangReachesParticipantSim(t *testing.T) {
	s, err := LoadFile(writeScenario(t, strings.Replace(strictBase, "{credit: {fail_probability: 0.1}}", "{credit: {hang_probability: 0.5, hang_for: 1500ms}}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s.Topology.Sims[0].Participants[1])
	if err != nil {
		t.Fatal(err)
	}
	if want := `"faults":{"credit":{"hang_probability":0.5,"hang_for":"1.5s"}}`; !strings.Contains(string(b), want) {
		t.Errorf("config entry %s, want it to contain %s", b, want)
	}
	b, _ = json.Marshal(s.Topology.Sims[0].Participants[0])
	if strings.Contains(string(b), "hang_for") {
		t.Errorf("config entry %s names hang_for without one", b)
	}
}
