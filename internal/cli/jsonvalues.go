package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// jsonValueFields are the API's bytes fields that hold JSON: Saga.input, Step.output and
// TransactionParticipant.payload (and StartSagaRequest.input). protojson prints bytes as base64;
// -o json prints these as the JSON they hold. No string field of the API has these names.
var jsonValueFields = map[string]bool{"input": true, "output": true, "payload": true}

// inlineJSONValues rewrites protojson output: each jsonValueFields member whose base64 holds
// valid JSON becomes that JSON (null when empty). Field order and everything else is kept.
func inlineJSONValues(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out bytes.Buffer
	if err := copyValue(dec, &out, false); err != nil {
		return nil, fmt.Errorf("rewrite JSON values: %w", err)
	}
	return out.Bytes(), nil
}

// copyValue copies the next JSON value of dec to out; inline says it is a jsonValueFields member.
func copyValue(dec *json.Decoder, out *bytes.Buffer, inline bool) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		return copyComposite(dec, out, t)
	case string:
		if b, err := base64.StdEncoding.DecodeString(t); inline && err == nil {
			if len(b) == 0 {
				out.WriteString("null")
				return nil
			}
			if json.Valid(b) {
				return json.Compact(out, b)
			}
		}
		writeToken(out, t)
	default:
		writeToken(out, t)
	}
	return nil
}

// writeToken writes a string, number, bool or null as JSON, without escaping HTML characters
// (as protojson does not).
func writeToken(out *bytes.Buffer, v any) {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)           // a decoded token always encodes
	out.Truncate(out.Len() - 1) // Encode's newline
}

// copyComposite copies an object or an array whose opening delimiter dec just returned.
func copyComposite(dec *json.Decoder, out *bytes.Buffer, open json.Delim) error {
	out.WriteRune(rune(open))
	for i := 0; dec.More(); i++ {
		if i > 0 {
			out.WriteByte(',')
		}
		inline := false
		if open == '{' {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key, ok := tok.(string)
			if !ok {
				return errors.New("object key is not a string")
			}
			writeToken(out, key)
			out.WriteByte(':')
			inline = jsonValueFields[key]
		}
		if err := copyValue(dec, out, inline); err != nil {
			return err
		}
	}
	tok, err := dec.Token()
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if d, ok := tok.(json.Delim); ok {
		out.WriteRune(rune(d))
	}
	return nil
}
