package memstore

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sagacoord/sagacoord/internal/store"
)

// refused is the error for a value PostgreSQL would refuse: it wraps store.ErrInvalidData, as
// pgstore wraps SQLSTATE class 22 (data exception).
func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", store.ErrInvalidData, fmt.Sprintf(format, args...))
}

// errNegativeLimit is PostgreSQL's refusal of a negative LIMIT, a data exception like the others.
var errNegativeLimit = refused("LIMIT must not be negative")

// checkText refuses what a text column cannot hold: a NUL character or bytes that are not UTF-8.
func checkText(what, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return refused("%s: invalid byte sequence for encoding \"UTF8\": 0x00", what)
	}
	if !utf8.ValidString(s) {
		return refused("%s: invalid byte sequence for encoding \"UTF8\"", what)
	}
	return nil
}

// The range of a timestamptz that pgx can send: from PostgreSQL's lowest (4714-11-24 BC) to the
// highest number of microseconds since 1970 an int64 holds.
var (
	minTime = time.Date(-4713, time.November, 24, 0, 0, 0, 0, time.UTC)
	maxTime = time.UnixMicro(math.MaxInt64)
)

// dbTime returns t as it comes back from a timestamptz column through pgx: truncated to the
// microsecond, in the local time zone, without a monotonic clock reading. The zero time stays
// zero (pgstore writes it as NULL).
func dbTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMicro(t.UnixMicro())
}

// storedTime is dbTime for a time a caller writes, refusing one outside timestamptz's range.
func storedTime(what string, t time.Time) (time.Time, error) {
	if t.IsZero() {
		return t, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, refused("%s: timestamp out of range: %v", what, t)
	}
	return dbTime(t), nil
}
