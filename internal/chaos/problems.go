package chaos

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// problem is one thing Validate finds wrong, at a field path such as
// "timeline[3].duration" or "topology.participant_sims[0].participants[1].faults.crdit".
type problem struct {
	path, msg string
}

// problems collects what Validate finds.
type problems []problem

// at records a problem of the field at path ("" for the scenario as a whole).
func (p *problems) at(path, format string, args ...any) {
	*p = append(*p, problem{path: path, msg: fmt.Sprintf(format, args...)})
}

// lineError is a problem placed on its line of the scenario file, worded as the YAML decoder's
// own errors are ("line N: ...").
type lineError struct {
	line      int
	path, msg string
}

func (e *lineError) Error() string {
	var b strings.Builder
	if e.line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.line)
	}
	if e.path != "" {
		b.WriteString(e.path + ": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

// err joins the problems into one error, each with the line of its field in root (the decoded
// document; nil when there is none, as for a Scenario built in code).
func (p problems) err(root *yaml.Node) error {
	var errs []error
	for _, q := range p {
		errs = append(errs, &lineError{line: lineOf(root, q.path), path: q.path, msg: q.msg})
	}
	return errors.Join(errs...)
}

// lineOf returns the line of the field at path in root, or of the nearest enclosing field that
// the file has (a default filled in by the parser has no line of its own); 0 without root.
func lineOf(root *yaml.Node, path string) int {
	if root == nil {
		return 0
	}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, seg := range splitPath(path) {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		next := child(n, seg)
		if next == nil {
			break
		}
		line, n = next[0].Line, next[1]
	}
	return line
}

// child returns the key (or item) node and the value node of seg in n, nil if n has none.
func child(n *yaml.Node, seg string) *[2]*yaml.Node {
	if i, err := strconv.Atoi(seg); err == nil && n.Kind == yaml.SequenceNode {
		if i < 0 || i >= len(n.Content) {
			return nil
		}
		return &[2]*yaml.Node{n.Content[i], n.Content[i]}
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == seg {
			return &[2]*yaml.Node{n.Content[i], n.Content[i+1]}
		}
	}
	return nil
}

// splitPath splits "a.b[2].c" into "a", "b", "2", "c".
func splitPath(path string) []string {
	var out []string
	for part := range strings.SplitSeq(path, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			out = append(out, name)
		}
		for rest != "" {
			idx, after, _ := strings.Cut(rest, "]")
			out = append(out, idx)
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return out
}

// valueError is a value the decoder refused, at its line and column; parse names its field
// (fieldAt) so that the error reads like the checks' own.
type valueError struct {
	line, col int
	msg       string
}

func (e *valueError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// fieldAt returns the path ("timeline[2].duration") of the value node at line and col in root,
// or "" when no value starts there.
func fieldAt(root *yaml.Node, line, col int) string {
	if root == nil {
		return ""
	}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	path, ok := findValue(n, line, col, "")
	if !ok {
		return ""
	}
	return path
}

// findValue searches n, the node at path, for the value node at line and col.
func findValue(n *yaml.Node, line, col int, path string) (string, bool) {
	if n.Line == line && n.Column == col && n.Kind == yaml.ScalarNode {
		return path, true
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			key := k.Value
			if path != "" {
				key = path + "." + key
			}
			if k.Line == line && k.Column == col {
				return key, true // a key the decoder refused
			}
			if p, ok := findValue(n.Content[i+1], line, col, key); ok {
				return p, true
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if p, ok := findValue(c, line, col, fmt.Sprintf("%s[%d]", path, i)); ok {
				return p, true
			}
		}
	}
	return "", false
}
