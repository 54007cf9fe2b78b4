package saga_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/saga"
)

// FuzzDefinitionJSON feeds outside input to Normalize, the one entry point for definitions: it
// must never panic, must fail only with a *ValidationError, and what it accepts must be a fixed
// point that a Machine runs to completion.
func FuzzDefinitionJSON(f *testing.F) {
	valid := threeSteps()
	norm, err := saga.Normalize(valid)
	require.NoError(f, err)
	raw, err := json.Marshal(valid)
	require.NoError(f, err)
	f.Add(raw)
	f.Add(norm.CanonicalJSON())
	for _, s := range []string{
		`{"name":"t","steps":[{"name":"a","participant":"p","action":"x","depends_on":["b"]},{"name":"b","participant":"p","action":"y","depends_on":["a"]}]}`,
		`{"name":"t","steps":[{"name":"a","participant":"p","action":"x"},{"name":"b","participant":"p","action":"y","depends_on":["a"],"pivot":true},{"name":"c","participant":"p","action":"z","depends_on":["a"]}]}`,
		`{"name":"t","deadline":1000000000,"steps":[{"name":"a","participant":"p","action":"x","timeout":1,"retry":{"max_attempts":1000,"initial_backoff":1000000,"max_backoff":86400000000000,"multiplier":10}}]}`,
		`{"name":"t","steps":[{"name":"a","participant":"p","action":"x","retry":{"multiplier":-1e308}}]}`,
		`{"name":"t","steps":[{"name":"a","participant":"p","action":"x","depends_on":["a","a"]}]}`,
		`{"name":"","steps":null}`,
		`{"steps":[{}]}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d saga.Definition
		if json.Unmarshal(data, &d) != nil {
			return
		}
		n, err := saga.Normalize(d)
		if err != nil {
			var verr *saga.ValidationError
			require.ErrorAs(t, err, &verr)
			require.NotEmpty(t, verr.Field)
			return
		}
		again, err := saga.Normalize(n)
		require.NoError(t, err)
		require.Equal(t, n.Hash(), again.Hash(), "Normalize is idempotent")
		require.LessOrEqual(t, len(n.CanonicalJSON()), saga.MaxDefinitionBytes)

		x, cmds := start(t, &n, time.Time{})
		require.NotEmpty(t, cmds)
		for range len(n.Steps) + 1 {
			for _, c := range inFlight(x.s) {
				x.ok(c.StepIndex)
			}
		}
		require.Equal(t, saga.StatusCompleted, x.s.Status)
	})
}

// historyStates are the names a fuzzed history draws from: every saga and step state, the empty
// state a saga starts from, and one that is neither.
var historyStates = []string{
	"", "RUNNING", "COMPLETED", "COMPENSATING", "COMPENSATED", "FAILED", "PENDING", "SUCCEEDED", "SKIPPED", "PAUSED",
}

// encodeHistory packs a history in 4 bytes a transition: step, from, to, and milliseconds since
// the previous transition (clipped), so that the fuzzer mutates transitions, not JSON syntax.
func encodeHistory(h []saga.Transition) []byte {
	var out []byte
	for i, t := range h {
		dt := int64(0)
		if i > 0 {
			dt = min(t.At.Sub(h[i-1].At).Milliseconds(), 127)
		}
		out = append(out, byte(int8(t.Step)), byte(slices.Index(historyStates, t.From)),
			byte(slices.Index(historyStates, t.To)), byte(int8(dt)))
	}
	return out
}

func decodeHistory(b []byte) []saga.Transition {
	var h []saga.Transition
	at := t0
	for ; len(b) >= 4; b = b[4:] {
		at = at.Add(time.Duration(int8(b[3])) * time.Millisecond)
		h = append(h, saga.Transition{
			Step: int(int8(b[0])),
			From: historyStates[int(b[1])%len(historyStates)],
			To:   historyStates[int(b[2])%len(historyStates)],
			At:   at,
		})
	}
	return h
}

// FuzzCheckHistory checks that CheckHistory never panics, reports problems as a *HistoryError
// pointing into the history, and accepts only histories that pass a plain re-check.
func FuzzCheckHistory(f *testing.F) {
	for seed := range 20 {
		rng := newRand(uint64(seed))
		def, _ := randomDefinition(f, rng)
		x, cmds := start(f, def, time.Time{})
		p := &prop{sim: x, rng: rng, sent: map[saga.Command]bool{}}
		for _, c := range cmds {
			p.sent[c] = true
		}
		for range 30 {
			p.randomEvent()
		}
		require.NoError(f, saga.CheckHistory(decodeHistory(encodeHistory(x.s.History)), len(def.Steps)))
		f.Add(encodeHistory(x.s.History), len(def.Steps))
	}
	f.Add([]byte{}, 1)
	f.Add([]byte{0xff, 0, 1, 0, 0, 6, 1, 0}, 0)

	sagaOK := map[[2]string]bool{}
	for _, e := range saga.Transitions() {
		sagaOK[[2]string{string(e.From), string(e.To)}] = true
	}
	stepOK := map[[2]string]bool{}
	for _, e := range saga.StepTransitions() {
		stepOK[[2]string{string(e.From), string(e.To)}] = true
	}
	f.Fuzz(func(t *testing.T, data []byte, nsteps int) {
		h := decodeHistory(data)
		err := saga.CheckHistory(h, nsteps)
		if err != nil {
			var herr *saga.HistoryError
			require.ErrorAs(t, err, &herr)
			require.True(t, herr.Index == 0 || herr.Index < len(h), "index %d of %d", herr.Index, len(h))
			return
		}
		require.NotEmpty(t, h)
		require.Equal(t, saga.Transition{Step: -1, From: "", To: "RUNNING", At: h[0].At}, h[0])
		for i, tr := range h {
			if i > 0 {
				require.False(t, tr.At.Before(h[i-1].At))
			}
			if tr.Step == -1 {
				require.True(t, sagaOK[[2]string{tr.From, tr.To}], "%+v", tr)
			} else {
				require.True(t, tr.Step >= 0 && tr.Step < nsteps)
				require.True(t, stepOK[[2]string{tr.From, tr.To}], "%+v", tr)
			}
		}
	})
}
