package console

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// keyset is a list page's position and size, read from its query: the rows come after the row
// (AfterAt, AfterID) in the list's order, and at most Size of them (n, at most maxPageSize).
type keyset struct {
	Size    int
	AfterAt time.Time
	AfterID uuid.UUID
}

// pageQuery reads the page of a list from q; ok is false when its cursor does not parse.
func pageQuery(q url.Values) (k keyset, ok bool) {
	k.Size = pageSize
	if n, err := strconv.Atoi(q.Get("n")); err == nil && n > 0 {
		k.Size = min(n, maxPageSize)
	}
	if after := q.Get("after"); after != "" {
		if k.AfterAt, k.AfterID, ok = parseCursor(after); !ok {
			return k, false
		}
	}
	return k, true
}

// nextPage cuts rows, read with a limit of k.Size+1, to the page, and returns the link to the
// next page when there is one: path with q, its cursor set after the page's last row.
func nextPage[T any](k keyset, rows []T, path string, q url.Values, key func(T) (time.Time, uuid.UUID)) ([]T, string) {
	if len(rows) <= k.Size {
		return rows, ""
	}
	q.Set("after", cursor(key(rows[k.Size-1])))
	return rows[:k.Size], path + "?" + q.Encode()
}

// cursor is a page's position: the last row's creation time and id.
func cursor(at time.Time, id uuid.UUID) string {
	return strconv.FormatInt(at.UnixNano(), 10) + "_" + id.String()
}

func parseCursor(s string) (time.Time, uuid.UUID, bool) {
	ns, idText, ok := strings.Cut(s, "_")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil {
		return time.Time{}, uuid.UUID{}, false
	}
	id, err := uuid.Parse(idText)
	return time.Unix(0, n), id, err == nil
}
