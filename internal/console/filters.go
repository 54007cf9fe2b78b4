package console

import (
	"fmt"
	"strconv"
	"time"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// timeLayouts are the forms a time filter may take: an HTML datetime-local input's, with or
// without seconds, or RFC 3339. Times without a zone are UTC.
var timeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339}

// listFilter turns the list page's filters into the store's; its error says which is wrong.
func listFilter(v listView) (store.ListFilter, error) {
	f := store.ListFilter{Status: saga.Status(v.Status), Definition: v.Definition}
	if v.Status != "" && !knownStatus(f.Status) {
		return f, fmt.Errorf("unknown status %q", v.Status)
	}
	if v.Version != "" {
		n, err := strconv.Atoi(v.Version)
		if err != nil || n <= 0 {
			return f, fmt.Errorf("version %q is not a positive number", v.Version)
		}
		if v.Definition == "" {
			return f, fmt.Errorf("a version filter needs a definition")
		}
		f.DefinitionVersion = n
	}
	var err error
	if f.CreatedFrom, err = parseTime("from", v.From); err != nil {
		return f, err
	}
	if f.CreatedBefore, err = parseTime("before", v.Before); err != nil {
		return f, err
	}
	return f, nil
}

func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range timeLayouts {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s %q is not a time like 2026-01-31T14:05 (UTC)", field, s)
}

func knownStatus(s saga.Status) bool {
	for _, k := range statuses {
		if k == s {
			return true
		}
	}
	return false
}
