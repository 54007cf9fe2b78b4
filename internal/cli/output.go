package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Output formats of -o.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// jsonOptions give stable field names (the proto names, as in the definition file) and print every
// field, so scripts need not guess defaults.
func jsonOptions() protojson.MarshalOptions {
	return protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
}

// protoToJSON encodes a message with jsonOptions, with the JSON values it carries as JSON rather
// than base64 (inlineJSONValues).
func protoToJSON(m proto.Message) ([]byte, error) {
	raw, err := jsonOptions().Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return inlineJSONValues(raw)
}

// marshalJSON prints a message as indented JSON. protojson varies its whitespace on purpose, so the
// compact form is re-indented by encoding/json, which makes the bytes stable.
func marshalJSON(m proto.Message) ([]byte, error) {
	raw, err := protoToJSON(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("indent JSON: %w", err)
	}
	return out.Bytes(), nil
}

// writeJSON prints one message as a JSON object.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// writeJSONLine prints one message as compact JSON on one line (for streams: one object per change).
func writeJSONLine(w io.Writer, m proto.Message) error {
	raw, err := protoToJSON(m)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, raw); err != nil {
		return fmt.Errorf("compact JSON: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", out.Bytes())
	return err
}

// writeJSONArray prints messages as one JSON array (an empty list prints []).
func writeJSONArray[M proto.Message](w io.Writer, ms []M) error {
	items := make([]json.RawMessage, 0, len(ms))
	for _, m := range ms {
		raw, err := protoToJSON(m)
		if err != nil {
			return err
		}
		items = append(items, raw)
	}
	arr, err := json.Marshal(items)
	if err != nil {
		return fmt.Errorf("encode JSON array: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, arr, "", "  "); err != nil {
		return fmt.Errorf("indent JSON: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", out.Bytes())
	return err
}

// table writes aligned columns. Empty cells print as "-" so that every row has the same number of
// fields for awk and cut.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(headers) > 0 {
		t.row(headers...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		// A tab or newline inside a cell would break the columns.
		c = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(c)
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, c)
	}
	fmt.Fprint(t.tw, "\n")
}

func (t *table) flush() error { return t.tw.Flush() }

// formatTime prints UTC RFC 3339 with milliseconds: sortable, unambiguous, the same on every machine.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func formatTS(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return formatTime(ts.AsTime())
}

// formatElapsed prints a step duration rounded to what a person reads.
func formatElapsed(d time.Duration) string {
	switch {
	case d < 0:
		return ""
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
