package cli

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// A YAML input file becomes JSON before it is decoded, so that its format is the json tags for
// both syntaxes. The conversion keeps the rules users had when sigs.k8s.io/yaml did it: a scalar
// bound for a string field is its text as written (timeout: 5 is "5", which the duration check
// then refuses by name), an unquoted YAML 1.1 yes/no/on/off is a boolean, and a key given twice,
// also through a merge (<<), is an error. One thing differs, on purpose: a key is its text, where
// the previous decoder turned a key such as on or 3.0 into "true" or "3".

// yaml11Bools are the unquoted words YAML 1.1 reads as booleans; yaml.v3 reads only true and
// false so, but files written for the previous decoder may use the others.
var yaml11Bools = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true, "on": true, "On": true, "ON": true,
	"true": true, "True": true, "TRUE": true,
	"n": false, "N": false, "no": false, "No": false, "NO": false, "off": false, "Off": false, "OFF": false,
	"false": false, "False": false, "FALSE": false,
}

// yamlToJSON converts the located file's document, bound for a value of type t, to JSON. An
// empty document (comments only) is null.
func yamlToJSON(loc *locator, t reflect.Type) ([]byte, error) {
	var v any
	if loc.root != nil {
		budget := maxTreeVisits
		var err error
		if v, err = jsonOf(loc, content(loc.root), t, "", 0, &budget); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &FileError{File: loc.file, Msg: "invalid YAML: " + err.Error()}
	}
	return b, nil
}

// jsonOf converts node n, bound for a Go value of type t (nil: any value), into a value that
// encoding/json marshals. path is the dotted field path, for errors.
func jsonOf(loc *locator, n *yaml.Node, t reflect.Type, path string, depth int, budget *int) (any, error) {
	n = deref(n, depth)
	if n == nil || isNull(n) {
		return nil, nil
	}
	if depth > maxTreeDepth {
		return nil, &FileError{File: loc.file, Line: n.Line, Path: renderPath(path), Msg: fmt.Sprintf("nested deeper than %d levels", maxTreeDepth)}
	}
	if *budget--; *budget < 0 {
		return nil, &FileError{File: loc.file, Line: n.Line, Msg: fmt.Sprintf("the file holds more than %d values once its aliases are expanded", maxTreeVisits)}
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(json.RawMessage(nil)) || (t != nil && t.Kind() == reflect.Interface) {
		t = nil // free-form value
	}
	switch n.Kind {
	case yaml.MappingNode:
		return mappingJSON(loc, n, t, path, depth, budget)
	case yaml.SequenceNode:
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		out := make([]any, 0, len(n.Content))
		for i, el := range n.Content {
			v, err := jsonOf(loc, el, elem, joinPath(path, strconv.Itoa(i)), depth+1, budget)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return scalarJSON(loc, n, t, path)
}

func mappingJSON(loc *locator, n *yaml.Node, t reflect.Type, path string, depth int, budget *int) (any, error) {
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct:
		fields = jsonFields(t)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	out := map[string]any{}
	seen := map[string]int{}
	err := eachEntry(loc, n, path, depth, func(k, val *yaml.Node, line int) error {
		if k.Kind != yaml.ScalarNode {
			return &FileError{File: loc.file, Line: line, Path: renderPath(path), Msg: "a key must be a string, not " + describeNode(k)}
		}
		kpath := joinPath(path, k.Value)
		if prev, dup := seen[k.Value]; dup {
			return &FileError{File: loc.file, Line: line, Path: renderPath(kpath), Msg: fmt.Sprintf("key given twice (first on line %d)", prev)}
		}
		seen[k.Value] = line
		vt := elem
		if fields != nil {
			vt = fields[k.Value]
		}
		v, err := jsonOf(loc, val, vt, kpath, depth+1, budget)
		out[k.Value] = v
		return err
	})
	return out, err
}

func scalarJSON(loc *locator, n *yaml.Node, t reflect.Type, path string) (any, error) {
	if t != nil && t.Kind() == reflect.String {
		return n.Value, nil
	}
	if b, ok := yaml11Bools[n.Value]; ok && n.Style == 0 && n.Tag == "!!str" {
		return b, nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, &FileError{File: loc.file, Line: n.Line, Path: renderPath(path), Msg: err.Error()}
	}
	if f, ok := v.(float64); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
		return nil, &FileError{File: loc.file, Line: n.Line, Path: renderPath(path), Msg: fmt.Sprintf("%s is not a number JSON can hold", n.Value)}
	}
	return v, nil
}

// eachEntry calls fn for every key and value of the mapping n, in order, with the entries of
// merged mappings (<<: *anchor, or a list of them) in the place of their merge key. line is the
// key's line, or the merge key's for a merged entry, so that an error points into n.
func eachEntry(loc *locator, n *yaml.Node, path string, depth int, fn func(k, val *yaml.Node, line int) error) error {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag != "!!merge" {
			if err := fn(k, val, k.Line); err != nil {
				return err
			}
			continue
		}
		merged := []*yaml.Node{val}
		if m := deref(val, depth); m != nil && m.Kind == yaml.SequenceNode {
			merged = m.Content // <<: [*a, *b]
		}
		for _, m := range merged {
			m = deref(m, depth)
			if m == nil || m.Kind != yaml.MappingNode || depth > maxTreeDepth {
				return &FileError{File: loc.file, Line: k.Line, Path: renderPath(path), Msg: "a merge (<<) takes a mapping or a list of mappings"}
			}
			err := eachEntry(loc, m, path, depth+1, func(mk, mval *yaml.Node, _ int) error {
				return fn(mk, mval, k.Line)
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}
