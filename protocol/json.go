package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits on the JSON values the protocol carries (a saga input, a step output, a dependency's
// output, a transaction payload) and on error texts: docs/protocol.md §11.
const (
	// MaxJSONDepth bounds the nesting of arrays and objects in a JSON value, well under the
	// 10,000 levels at which Go's encoding/json refuses a document.
	MaxJSONDepth = 64
	// MaxErrorBytes bounds the error text of a reply; decoders cut a longer one to this length.
	MaxErrorBytes = 4 << 10
)

// CheckJSON returns an error that says what is wrong with b as a JSON value of the protocol, or
// nil: one JSON value, valid UTF-8, nested at most MaxJSONDepth levels, without a \u0000 escape
// (PostgreSQL's jsonb cannot store it). An empty b (no value) is accepted. The coordinator applies
// this rule to what clients send, and the decoders and the Go SDK to what peers send, so a value
// one of them accepts no other refuses.
func CheckJSON(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if !utf8.Valid(b) {
		return errors.New("is not valid UTF-8")
	}
	if err := CheckJSONDepth(b); err != nil {
		return err
	}
	if !json.Valid(b) {
		return errors.New("is not valid JSON")
	}
	if hasNULEscape(b) {
		return errors.New("contains a \\u0000 escape, which PostgreSQL's jsonb cannot store")
	}
	return nil
}

// CheckJSONDepth returns an error when b, a JSON value, is nested more than MaxJSONDepth levels.
func CheckJSONDepth(b []byte) error {
	if d := jsonDepth(b); d > MaxJSONDepth {
		return fmt.Errorf("is nested %d levels deep; the limit is %d", d, MaxJSONDepth)
	}
	return nil
}

// jsonDepth returns the deepest nesting of arrays and objects in b, outside strings. It does not
// validate b; json.Valid does.
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// hasNULEscape reports whether b holds a \u0000 escape (one whose backslash is not itself
// escaped).
func hasNULEscape(b []byte) bool {
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(`u0000`))
		if j < 0 {
			return false
		}
		at := i + j
		slashes := 0
		for k := at - 1; k >= 0 && b[k] == '\\'; k-- {
			slashes++
		}
		if slashes%2 == 1 {
			return true
		}
		i = at + 1
	}
}

// checkJSONValue is CheckJSON for a decoder: the error names field and wraps ErrMalformed.
func checkJSONValue(field string, b []byte) error {
	if err := CheckJSON(b); err != nil {
		return malformed("%s %v", field, err)
	}
	return nil
}

// cutText cuts s to at most MaxErrorBytes, at a character boundary.
func cutText(s string) string {
	if len(s) <= MaxErrorBytes {
		return s
	}
	s = s[:MaxErrorBytes]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
