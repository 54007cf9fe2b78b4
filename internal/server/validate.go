package server

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sagacoord/sagacoord/protocol"
)

// MaxTextBytes bounds a free-text field of a request (an abort reason): docs/api.md.
const MaxTextBytes = 1024

// maxQuoted bounds how much of a wrong value an error message repeats.
const maxQuoted = 64

// quote quotes s for an error message, cut to maxQuoted bytes.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:maxQuoted]) + "..."
}

// checkName applies the name rule (protocol.CheckName) to a request field.
func checkName(field, v string) error {
	if err := protocol.CheckName(v); err != nil {
		return invalid(field, "%v", err)
	}
	return nil
}

// checkText checks a free-text field: valid UTF-8 without NUL characters (PostgreSQL stores
// neither), at most MaxTextBytes.
func checkText(field, v string) error {
	switch {
	case !utf8.ValidString(v):
		return invalid(field, "is not valid UTF-8")
	case strings.IndexByte(v, 0) >= 0:
		return invalid(field, "contains a NUL character")
	case len(v) > MaxTextBytes:
		return invalid(field, "is %d bytes long; the limit is %d", len(v), MaxTextBytes)
	}
	return nil
}

// duration converts a request's duration, refusing one that protobuf calls invalid (seconds and
// nanos of different signs, nanos beyond a second, out of range) instead of reinterpreting it.
// An absent duration is 0.
func duration(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid(field, "seconds %d and nanos %d are not a valid duration: nanos must be within ±999,999,999 and have the sign of seconds", d.GetSeconds(), d.GetNanos())
	}
	return d.AsDuration(), nil
}
