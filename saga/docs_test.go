package saga_test

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/saga"
)

const stateMachinesDoc = "../docs/state-machines.md"

var updateDocs = flag.Bool("update-docs", false, "rewrite the generated parts of "+stateMachinesDoc+" from the transition tables")

// generated are the parts of docs/state-machines.md made from the transition tables, by the name
// of their markers.
func generated() map[string]string {
	sagaEdges, stepEdges := saga.Transitions(), saga.StepTransitions()
	out := map[string]string{}

	var b strings.Builder
	b.WriteString("```mermaid\nstateDiagram-v2\n")
	for _, e := range sagaEdges {
		from := string(e.From)
		if from == "" {
			from = "[*]"
		}
		fmt.Fprintf(&b, "    %s --> %s : %s\n", from, e.To, e.Cause)
	}
	for _, s := range []saga.Status{saga.StatusCompleted, saga.StatusCompensated} {
		fmt.Fprintf(&b, "    %s --> [*]\n", s)
	}
	b.WriteString("```\n")
	out["saga-diagram"] = b.String()

	b.Reset()
	b.WriteString("| from | to | when |\n| --- | --- | --- |\n")
	for _, e := range sagaEdges {
		from := string(e.From)
		if from == "" {
			from = "(none)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", from, e.To, e.Cause)
	}
	out["saga-table"] = b.String()

	b.Reset()
	b.WriteString("```mermaid\nstateDiagram-v2\n")
	fmt.Fprintf(&b, "    [*] --> %s\n", saga.StepPending)
	for _, e := range stepEdges {
		fmt.Fprintf(&b, "    %s --> %s : %s\n", e.From, e.To, e.Cause)
	}
	for _, s := range []saga.StepStatus{saga.StepPending, saga.StepRunning, saga.StepSucceeded, saga.StepFailed,
		saga.StepCompensating, saga.StepCompensated, saga.StepSkipped} {
		if !slices.ContainsFunc(stepEdges, func(e saga.StepEdge) bool { return e.From == s }) {
			fmt.Fprintf(&b, "    %s --> [*]\n", s) // no way out
		}
	}
	b.WriteString("```\n")
	out["step-diagram"] = b.String()

	b.Reset()
	b.WriteString("| from | to | when | while the saga is |\n| --- | --- | --- | --- |\n")
	for _, e := range stepEdges {
		during := make([]string, len(e.During))
		for i, s := range e.During {
			during[i] = string(s)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", e.From, e.To, e.Cause, strings.Join(during, ", "))
	}
	out["step-table"] = b.String()
	return out
}

func markers(name string) (begin, end string) {
	return "<!-- BEGIN GENERATED " + name + ": go test ./saga -run TestStateMachineDoc -update-docs -->\n",
		"<!-- END GENERATED " + name + " -->"
}

// TestStateMachineDoc fails when the diagrams and tables of docs/state-machines.md differ from the
// transition tables that CheckHistory uses; -update-docs rewrites them.
func TestStateMachineDoc(t *testing.T) {
	raw, err := os.ReadFile(stateMachinesDoc)
	require.NoError(t, err)
	doc := string(raw)
	for name, want := range generated() {
		begin, end := markers(name)
		i := strings.Index(doc, begin)
		require.GreaterOrEqual(t, i, 0, "%s: marker %q missing", stateMachinesDoc, strings.TrimSpace(begin))
		j := strings.Index(doc[i:], end)
		require.GreaterOrEqual(t, j, 0, "%s: marker %q missing", stateMachinesDoc, end)
		got := doc[i+len(begin) : i+j]
		if *updateDocs {
			doc = doc[:i+len(begin)] + want + doc[i+j:]
			continue
		}
		require.Equal(t, want, got, "%s is out of date: run go test ./saga -run TestStateMachineDoc -update-docs", stateMachinesDoc)
	}
	if *updateDocs {
		require.NoError(t, os.WriteFile(stateMachinesDoc, []byte(doc), 0o644))
	}
}

var mermaidEdge = regexp.MustCompile(`^\s*(\S+)\s*-->\s*([^\s:]+)`)

// TestStateMachineDocEdges reads the edges of every mermaid diagram in the doc, generated or not,
// and checks each against the tables, so a hand-drawn diagram cannot show a transition the
// machine does not make.
func TestStateMachineDocEdges(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(stateMachinesDoc)
	require.NoError(t, err)
	legal := map[string]bool{"[*]->RUNNING": true, "[*]->PENDING": true}
	for _, e := range saga.Transitions() {
		legal[string(e.From)+"->"+string(e.To)] = true
	}
	for _, e := range saga.StepTransitions() {
		legal[string(e.From)+"->"+string(e.To)] = true
	}
	for _, s := range []string{"COMPLETED", "COMPENSATED", "SKIPPED"} {
		legal[s+"->[*]"] = true
	}
	diagrams, inMermaid := 0, false
	for n, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.HasPrefix(line, "```mermaid"):
			inMermaid = true
			diagrams++
		case strings.HasPrefix(line, "```"):
			inMermaid = false
		case inMermaid:
			if m := mermaidEdge.FindStringSubmatch(line); m != nil {
				require.True(t, legal[m[1]+"->"+m[2]], "%s:%d: %s -> %s is not in the transition tables", stateMachinesDoc, n+1, m[1], m[2])
			}
		}
	}
	require.GreaterOrEqual(t, diagrams, 2)
	for _, e := range saga.Transitions() {
		require.NotContains(t, e.Cause, ":")
		require.NotContains(t, e.Cause, ";")
		require.NotContains(t, e.Cause, "#")
	}
	for _, e := range saga.StepTransitions() {
		require.NotContains(t, e.Cause, ":")
		require.NotContains(t, e.Cause, ";")
		require.NotContains(t, e.Cause, "#")
	}
}
