package console

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"time"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/internal/telemetry"
	"github.com/sagacoord/sagacoord/saga"
)

// sagaView is what /sagas/{id} shows. JSON is formatted text, which the template escapes: user
// JSON is never HTML.
type sagaView struct {
	ID, Definition, Status, Reason string
	Version                        int
	RowVersion                     int64
	Created, Updated, Finished     time.Time
	Deadline                       time.Time
	Input                          string
	TraceID, TraceURL              string
	Steps                          []stepView
	Timeline                       []bar
	Audit                          []saga.AuditEntry
	// CanRetry and CanAbort say which action the saga's status allows.
	CanRetry, CanAbort bool
}

type stepView struct {
	Index                                   int
	Name, Participant, Action, Compensation string
	Pivot                                   bool
	Status, LastError, Output               string
	Attempts, CompAttempts                  int
	Started, Finished                       time.Time
	Took                                    time.Duration
}

// bar is one interval of the timeline: a step in one status, from its transition into that
// status to the next, placed in percent of the saga's span.
type bar struct {
	Step          string
	Row           int
	Status        string
	From, To      time.Time
	X, Width, Y   float64
	StatusClass   string
	DurationLabel string
}

// newSagaView builds the page of sg, whose definition is def.
func newSagaView(sg *store.Saga, def *saga.Definition, traceURL string, now time.Time) sagaView {
	st := sg.State
	v := sagaView{ID: sg.ID.String(), Definition: sg.DefinitionName, Version: sg.DefinitionVersion, RowVersion: sg.Version,
		Status: string(st.Status), Reason: st.Reason, Created: sg.CreatedAt, Updated: sg.UpdatedAt, Finished: sg.FinishedAt,
		Deadline: st.Deadline, Input: prettyJSON(st.Input), Audit: st.Audit,
		CanRetry: st.Status == saga.StatusFailed, CanAbort: st.Status == saga.StatusRunning}
	if v.TraceID = telemetry.TraceID(st.Trace); v.TraceID != "" && traceURL != "" {
		v.TraceURL = strings.ReplaceAll(traceURL, "{trace_id}", url.PathEscape(v.TraceID))
	}
	for i, s := range st.Steps {
		sv := stepView{Index: i, Status: string(s.Status), LastError: s.LastError, Output: prettyJSON(s.Output),
			Attempts: s.Attempt, CompAttempts: s.CompAttempt, Started: s.StartedAt, Finished: s.FinishedAt}
		if i < len(def.Steps) {
			d := def.Steps[i]
			sv.Name, sv.Participant, sv.Action, sv.Compensation, sv.Pivot = d.Name, d.Participant, d.Action, d.Compensation, d.Pivot
		}
		if !s.StartedAt.IsZero() && !s.FinishedAt.IsZero() {
			sv.Took = s.FinishedAt.Sub(s.StartedAt)
		}
		v.Steps = append(v.Steps, sv)
	}
	end := sg.FinishedAt
	if end.IsZero() {
		end = now
	}
	v.Timeline = timeline(st.History, v.Steps, sg.CreatedAt, end)
	return v
}

// timeline turns the steps' recorded transitions into bars: each status a step was in, until
// its next transition (or the end of the saga, for the last).
func timeline(history []saga.Transition, steps []stepView, start, end time.Time) []bar {
	span := end.Sub(start)
	if span <= 0 {
		span = time.Millisecond
	}
	pct := func(t time.Time) float64 {
		p := float64(t.Sub(start)) / float64(span) * 100
		return min(max(p, 0), 100)
	}
	var out []bar
	open := map[int]int{} // step -> index in out of its open bar
	for _, t := range history {
		if t.Step < 0 || t.Step >= len(steps) {
			continue
		}
		if i, ok := open[t.Step]; ok {
			out[i].To = t.At
		}
		open[t.Step] = len(out)
		out = append(out, bar{Step: steps[t.Step].Name, Row: t.Step, Status: t.To, From: t.At, To: end})
	}
	for i := range out {
		b := &out[i]
		b.X, b.Y = pct(b.From), float64(b.Row*22)
		b.Width = max(pct(b.To)-b.X, 0.3)
		b.StatusClass = "st-" + strings.ToLower(b.Status)
		b.DurationLabel = b.To.Sub(b.From).Round(time.Millisecond).String()
	}
	return out
}

// prettyJSON indents JSON for display; what is not JSON is shown as it is.
func prettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}
