package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Input files (saga definitions, transactions) are YAML or JSON whose format is a struct's json
// tags. A JSON file is decoded by encoding/json with DisallowUnknownFields; a YAML file is parsed
// by yaml.v3 into a node tree, converted to JSON by jsonOf (yamljson.go) and decoded the same way,
// so both formats obey one set of rules. The node tree (JSON is YAML too) also knows every line:
// checkFields checks field names exactly against it (encoding/json would match "Name" to "name"
// silently), and the errors the decoder reports are located in it.

// FileError reports a problem in an input file: the file, the line when known, the field path in
// the form steps[1].timeout, and what is wrong.
type FileError struct {
	// File is the name the user gave ("-" for standard input).
	File string
	// Line is 1-based; 0 when unknown.
	Line int
	// Path names the field, such as steps[1].retry.max_attempts; empty for the whole file.
	Path string
	// Msg says what is wrong and, where it can, what to write instead.
	Msg string
}

// Error returns "FILE:LINE: PATH: MSG", leaving out the parts that are unknown.
func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// durationString is a Go duration ("500ms", "1m30s") in a file. A named type, so that a type error
// on it can say what a duration looks like.
type durationString string

// fileFormat is the syntax of an input file.
type fileFormat int

const (
	formatYAML fileFormat = iota
	formatJSON
)

// sniffFormat decides by extension and, for any other name (or standard input), by the first
// significant character: a JSON file starts with '{' or '['.
func sniffFormat(name string, data []byte) fileFormat {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".json":
		return formatJSON
	case ".yaml", ".yml":
		return formatYAML
	}
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(data, []byte("\ufeff")), " \t\r\n")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		return formatJSON
	}
	return formatYAML
}

// maxTreeDepth bounds the recursion over the node tree (nesting and aliases), and maxTreeVisits
// the nodes one walk visits: aliases and merge keys can make a small file a huge tree.
const (
	maxTreeDepth  = 64
	maxTreeVisits = 100_000
)

// locator finds the line of a field path in the file's node tree. A nil tree (the file did not
// parse as YAML although the decoder accepted it) yields line 0.
type locator struct {
	file string
	root *yaml.Node
}

// errorf returns a FileError for the dotted path ("steps.1.timeout"), with its line when known.
func (l *locator) errorf(path string, format string, args ...any) error {
	return &FileError{File: l.file, Line: l.line(path), Path: renderPath(path), Msg: fmt.Sprintf(format, args...)}
}

func (l *locator) line(path string) int {
	if l.root == nil {
		return 0
	}
	n := content(l.root)
	var segs []string
	if path != "" {
		segs = strings.Split(path, ".")
	}
	for _, seg := range segs {
		if n == nil {
			return 0
		}
		n = deref(n, 0)
		switch n.Kind {
		case yaml.MappingNode:
			n = mappingValue(n, seg)
		case yaml.SequenceNode:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(n.Content) {
				return 0
			}
			n = n.Content[i]
		default:
			return 0
		}
	}
	if n == nil {
		return 0
	}
	return n.Line
}

// content returns the document's top node.
func content(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		return doc.Content[0]
	}
	return doc
}

// deref follows aliases, at most maxTreeDepth times.
func deref(n *yaml.Node, depth int) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && depth < maxTreeDepth {
		n = n.Alias
		depth++
	}
	return n
}

func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// renderPath turns "steps.1.retry.max_attempts" into "steps[1].retry.max_attempts".
func renderPath(dotted string) string {
	if dotted == "" {
		return ""
	}
	var b strings.Builder
	for i, seg := range strings.Split(dotted, ".") {
		if _, err := strconv.Atoi(seg); err == nil {
			b.WriteString("[" + seg + "]")
			continue
		}
		if i > 0 {
			b.WriteString(".")
		}
		b.WriteString(seg)
	}
	return b.String()
}

func joinPath(parent, child string) string {
	if parent == "" {
		return child
	}
	return parent + "." + child
}

// decodeFile decodes data (from the file called name) strictly into v, a pointer to a struct
// whose json tags define the format. It returns a locator for errors found after decoding, such as
// an invalid duration.
func decodeFile(name string, data []byte, v any) (*locator, error) {
	loc := &locator{file: name}
	if len(bytes.TrimSpace(data)) == 0 {
		return loc, &FileError{File: name, Msg: "the file is empty"}
	}
	format := sniffFormat(name, data)

	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	parseErr := dec.Decode(&doc)
	if parseErr == nil {
		loc.root = &doc
		var extra yaml.Node
		if err := dec.Decode(&extra); err == nil {
			return loc, &FileError{File: name, Line: extra.Line, Msg: "the file holds more than one document; put one per file"}
		}
		budget := maxTreeVisits
		if err := checkFields(loc, content(&doc), reflect.TypeOf(v).Elem(), "", 0, &budget); err != nil {
			return loc, err
		}
	}

	jsonData := data
	if format == formatYAML {
		if parseErr != nil && !errors.Is(parseErr, io.EOF) {
			return loc, explainDecodeError(loc, format, data, parseErr)
		}
		var err error
		if jsonData, err = yamlToJSON(loc, reflect.TypeOf(v).Elem()); err != nil {
			return loc, err
		}
	}
	jd := json.NewDecoder(bytes.NewReader(jsonData))
	jd.DisallowUnknownFields()
	err := jd.Decode(v)
	if err == nil && format == formatJSON && jd.Decode(new(json.RawMessage)) != io.EOF {
		return loc, &FileError{File: name, Line: lineAt(data, jd.InputOffset()), Msg: "unexpected data after the JSON object"}
	}
	if err != nil {
		return loc, explainDecodeError(loc, format, data, err)
	}
	return loc, nil
}

// checkFields walks the node tree against the Go type t: every mapping key must be a field of the
// struct (exactly, with case), no key may repeat, structs must be mappings and slices sequences.
// Scalars are left to the decoder. When the budget of visits runs out it stops checking; the
// decoder still rejects what is wrong, only with less precise messages.
func checkFields(loc *locator, n *yaml.Node, t reflect.Type, path string, depth int, budget *int) error {
	n = deref(n, depth)
	if n == nil || depth > maxTreeDepth || *budget <= 0 {
		return nil
	}
	*budget--
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(n) {
		return nil
	}
	switch {
	case t == reflect.TypeOf(json.RawMessage(nil)) || t.Kind() == reflect.Interface:
		return nil // free-form value
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return &FileError{File: loc.file, Line: n.Line, Path: renderPath(path), Msg: "expected a mapping of fields, got " + describeNode(n)}
		}
		fields := jsonFields(t)
		seen := map[string]int{}
		return eachEntry(loc, n, path, depth, func(k, val *yaml.Node, line int) error {
			fpath := joinPath(path, k.Value)
			if prev, dup := seen[k.Value]; dup {
				return &FileError{File: loc.file, Line: line, Path: renderPath(fpath), Msg: fmt.Sprintf("field given twice (first on line %d)", prev)}
			}
			seen[k.Value] = line
			ft, ok := fields[k.Value]
			if !ok {
				return &FileError{File: loc.file, Line: line, Path: renderPath(fpath), Msg: unknownFieldMsg(k.Value, fields)}
			}
			return checkFields(loc, val, ft, fpath, depth+1, budget)
		})
	case t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8:
		if n.Kind != yaml.SequenceNode {
			return &FileError{File: loc.file, Line: n.Line, Path: renderPath(path), Msg: "expected a list, got " + describeNode(n)}
		}
		for i, el := range n.Content {
			if err := checkFields(loc, el, t.Elem(), joinPath(path, strconv.Itoa(i)), depth+1, budget); err != nil {
				return err
			}
		}
	}
	return nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// jsonFields maps a struct's json names to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func unknownFieldMsg(key string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	msg := "unknown field"
	if s := closest(key, names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg + "; known fields are " + strings.Join(names, ", ")
}

// closest returns the known name nearest to key when it is plausibly a typo: equal ignoring case,
// or at most two edits away.
func closest(key string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if strings.EqualFold(n, key) {
			return n
		}
		if d := editDistance(strings.ToLower(key), n); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance, for typo hints on short field names.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// explainDecodeError turns a decoder error into a FileError with the field path and line.
func explainDecodeError(loc *locator, format fileFormat, data []byte, err error) error {
	var syn *json.SyntaxError
	if format == formatJSON && errors.As(err, &syn) {
		return &FileError{File: loc.file, Line: lineAt(data, syn.Offset), Msg: "invalid JSON: " + syn.Error()}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &FileError{File: loc.file, Msg: "invalid JSON: the file ends in the middle of a value"}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		path, line := findTypeError(loc, te)
		if line == 0 && format == formatJSON {
			line = lineAt(data, te.Offset)
		}
		if path == "" {
			path = te.Field
		}
		return &FileError{File: loc.file, Line: line, Path: renderPath(path), Msg: fmt.Sprintf("expected %s, got %s", describeType(te.Type), te.Value)}
	}
	msg := err.Error()
	// Strip the decoders' plumbing, keep what names the problem (yaml.v3 messages carry "line N").
	for _, p := range []string{"json: ", "yaml: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	if format == formatJSON {
		msg = "invalid JSON: " + msg
	} else {
		msg = "invalid YAML: " + msg
	}
	return &FileError{File: loc.file, Msg: msg}
}

// findTypeError finds the value the decoder rejected. encoding/json names the field without list
// indices ("steps.retry.max_attempts"), so every list element is tried and the first value that
// does not decode into the field's type is the culprit.
func findTypeError(loc *locator, te *json.UnmarshalTypeError) (string, int) {
	if loc.root == nil || te.Field == "" {
		return "", 0
	}
	budget := maxTreeVisits
	var search func(n *yaml.Node, segs []string, path string, depth int) (string, int)
	search = func(n *yaml.Node, segs []string, path string, depth int) (string, int) {
		n = deref(n, depth)
		if n == nil || depth > maxTreeDepth || budget <= 0 {
			return "", 0
		}
		budget--
		if len(segs) == 0 {
			if !fitsType(n, te.Type) {
				return path, n.Line
			}
			return "", 0
		}
		switch n.Kind {
		case yaml.SequenceNode:
			for i, el := range n.Content {
				if p, l := search(el, segs, joinPath(path, strconv.Itoa(i)), depth+1); l > 0 {
					return p, l
				}
			}
		case yaml.MappingNode:
			return search(mappingValue(n, segs[0]), segs[1:], joinPath(path, segs[0]), depth+1)
		}
		return "", 0
	}
	return search(content(loc.root), strings.Split(te.Field, "."), "", 0)
}

// fitsType reports whether the node decodes into a value of type t.
func fitsType(n *yaml.Node, t reflect.Type) (ok bool) {
	if t == nil {
		return true
	}
	if n.Kind == yaml.ScalarNode {
		// The decoder saw JSON: 5 is not a string, "yes" is not a bool, whatever YAML would allow.
		isString := t.Kind() == reflect.String
		if isString != (n.Tag == "!!str") && n.Tag != "!!null" {
			return false
		}
	}
	return n.Decode(reflect.New(t).Interface()) == nil
}

func describeType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	if t == reflect.TypeOf(durationString("")) {
		return `a duration string such as "500ms", "5s" or "1m30s"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		return fmt.Sprintf("a whole number (%s)", t.Kind())
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "a mapping of fields"
	}
	return t.String()
}

// lineAt returns the 1-based line of a byte offset.
func lineAt(data []byte, off int64) int {
	if off < 0 {
		return 0
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// parseDuration parses a file's duration; empty means unset. Negative durations are refused.
func parseDuration(loc *locator, path string, s durationString) (time.Duration, bool, error) {
	if s == "" {
		return 0, false, nil
	}
	d, err := time.ParseDuration(string(s))
	if err != nil {
		return 0, false, loc.errorf(path, "invalid duration %q: write a Go duration such as 500ms, 5s or 1m30s", string(s))
	}
	if d < 0 {
		return 0, false, loc.errorf(path, "duration %q is negative", string(s))
	}
	return d, true, nil
}
