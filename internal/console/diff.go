package console

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sagacoord/sagacoord/saga"
)

// definitionDiff lists what version cur changes from prev, one line per change, in the order of
// cur's steps and then the steps it removed: what an operator reads before a rollout.
func definitionDiff(prev, cur *saga.Definition) []string {
	var out []string
	if prev.Deadline != cur.Deadline {
		out = append(out, fmt.Sprintf("deadline: %s → %s", durText(prev.Deadline), durText(cur.Deadline)))
	}
	old := map[string]saga.StepDefinition{}
	for _, s := range prev.Steps {
		old[s.Name] = s
	}
	kept := map[string]bool{}
	for _, s := range cur.Steps {
		p, ok := old[s.Name]
		if !ok {
			out = append(out, fmt.Sprintf("step %s added (participant %s, action %s)", s.Name, s.Participant, s.Action))
			continue
		}
		kept[s.Name] = true
		if changes := stepChanges(p, s); len(changes) > 0 {
			out = append(out, fmt.Sprintf("step %s: %s", s.Name, strings.Join(changes, "; ")))
		}
	}
	for _, s := range prev.Steps {
		if !kept[s.Name] {
			out = append(out, fmt.Sprintf("step %s removed", s.Name))
		}
	}
	return out
}

// stepChanges lists the fields of a step that differ between two versions.
func stepChanges(a, b saga.StepDefinition) []string {
	var out []string
	field := func(name, x, y string) {
		if x != y {
			out = append(out, fmt.Sprintf("%s %s → %s", name, orNone(x), orNone(y)))
		}
	}
	field("participant", a.Participant, b.Participant)
	field("action", a.Action, b.Action)
	field("compensation", a.Compensation, b.Compensation)
	if !slices.Equal(a.DependsOn, b.DependsOn) {
		field("depends on", strings.Join(a.DependsOn, ", "), strings.Join(b.DependsOn, ", "))
	}
	field("timeout", durText(a.Timeout), durText(b.Timeout))
	field("attempts", fmt.Sprint(a.Retry.MaxAttempts), fmt.Sprint(b.Retry.MaxAttempts))
	field("compensation attempts", fmt.Sprint(a.CompensationRetry.MaxAttempts), fmt.Sprint(b.CompensationRetry.MaxAttempts))
	field("pivot", fmt.Sprint(a.Pivot), fmt.Sprint(b.Pivot))
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func durText(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}
