package saga_test

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/protocol"
	"github.com/sagacoord/sagacoord/saga"
)

// threeSteps is a valid definition before defaults: a chain a, b, c.
func threeSteps() saga.Definition {
	return saga.Definition{Name: "transfer", Steps: []saga.StepDefinition{step("a"), step("b"), step("c")}}
}

func TestValidationErrors(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", protocol.MaxNameLength+1)
	for _, tc := range []struct {
		name   string
		mutate func(d *saga.Definition)
		field  string
		reason string
	}{
		{"empty name", func(d *saga.Definition) { d.Name = "" }, "name", "must not be empty"},
		{"name with a space", func(d *saga.Definition) { d.Name = "my saga" }, "name", `"my saga" may contain only letters, digits`},
		{"name starting with a dash", func(d *saga.Definition) { d.Name = "-x" }, "name", "must start with a letter or digit"},
		{"name too long", func(d *saga.Definition) { d.Name = long }, "name", "is 129 characters long; the limit is 128"},
		{"no steps", func(d *saga.Definition) { d.Steps = nil }, "steps", "at least one step"},
		{"too many steps", func(d *saga.Definition) {
			d.Steps = nil
			for i := 0; i <= saga.MaxSteps; i++ {
				d.Steps = append(d.Steps, step(fmt.Sprintf("s%d", i)))
			}
		}, "steps", "has 101 steps; the limit is 100"},
		{"negative deadline", func(d *saga.Definition) { d.Deadline = -time.Second }, "deadline", "between 0 (none) and 720h"},
		{"deadline too long", func(d *saga.Definition) { d.Deadline = 721 * time.Hour }, "deadline", "between 0 (none) and 720h"},
		{"empty step name", func(d *saga.Definition) { d.Steps[1].Name = "" }, "steps[1].name", "must not be empty"},
		{"non-ASCII step name", func(d *saga.Definition) { d.Steps[1].Name = "zahlung-ü" }, "steps[1].name", "may contain only"},
		{"step name with a slash", func(d *saga.Definition) { d.Steps[2].Name = "a/b" }, "steps[2].name", "may contain only"},
		{"duplicate step name", func(d *saga.Definition) { d.Steps[2].Name = "a" }, "steps[2].name", `"a" is already the name of steps[0]`},
		{"missing participant", func(d *saga.Definition) { d.Steps[0].Participant = "" }, "steps[0].participant", "must not be empty"},
		{"bad participant", func(d *saga.Definition) { d.Steps[0].Participant = "svc a" }, "steps[0].participant", "may contain only"},
		{"missing action", func(d *saga.Definition) { d.Steps[1].Action = "" }, "steps[1].action", "must not be empty"},
		{"bad compensation", func(d *saga.Definition) { d.Steps[1].Compensation = "undo!" }, "steps[1].compensation", "may contain only"},
		{"negative timeout", func(d *saga.Definition) { d.Steps[0].Timeout = -time.Second }, "steps[0].timeout", "between 1ms and 24h0m0s"},
		{"timeout too long", func(d *saga.Definition) { d.Steps[0].Timeout = 25 * time.Hour }, "steps[0].timeout", "between 1ms and 24h0m0s"},
		{"timeout below 1ms", func(d *saga.Definition) { d.Steps[0].Timeout = time.Microsecond }, "steps[0].timeout", "between 1ms and 24h0m0s"},
		{"negative max attempts", func(d *saga.Definition) { d.Steps[0].Retry.MaxAttempts = -1 }, "steps[0].retry.max_attempts", "between 1 and 1000"},
		{"too many attempts", func(d *saga.Definition) { d.Steps[0].Retry.MaxAttempts = 1001 }, "steps[0].retry.max_attempts", "between 1 and 1000"},
		{"tiny initial backoff", func(d *saga.Definition) { d.Steps[0].Retry.InitialBackoff = time.Microsecond }, "steps[0].retry.initial_backoff", "at least 1ms"},
		{"max backoff below initial", func(d *saga.Definition) {
			d.Steps[0].Retry.InitialBackoff, d.Steps[0].Retry.MaxBackoff = time.Second, time.Millisecond
		}, "steps[0].retry.max_backoff", "at least initial_backoff (1s)"},
		{"max backoff too long", func(d *saga.Definition) { d.Steps[0].Retry.MaxBackoff = 25 * time.Hour }, "steps[0].retry.max_backoff", "the limit is 24h0m0s"},
		{"multiplier below 1", func(d *saga.Definition) { d.Steps[0].Retry.Multiplier = 0.5 }, "steps[0].retry.multiplier", "between 1 and 10"},
		{"multiplier above 10", func(d *saga.Definition) { d.Steps[0].Retry.Multiplier = 11 }, "steps[0].retry.multiplier", "between 1 and 10"},
		{"multiplier NaN", func(d *saga.Definition) { d.Steps[0].Retry.Multiplier = math.NaN() }, "steps[0].retry.multiplier", "between 1 and 10"},
		{"multiplier infinite", func(d *saga.Definition) { d.Steps[0].Retry.Multiplier = math.Inf(1) }, "steps[0].retry.multiplier", "between 1 and 10"},
		{"bad compensation retry", func(d *saga.Definition) { d.Steps[1].CompensationRetry.MaxAttempts = -3 }, "steps[1].compensation_retry.max_attempts", "is -3"},
		{"compensation retry multiplier NaN", func(d *saga.Definition) { d.Steps[1].CompensationRetry.Multiplier = math.NaN() }, "steps[1].compensation_retry.multiplier", "between 1 and 10"},
		{"unknown dependency", func(d *saga.Definition) { d.Steps[1].DependsOn = []string{"zz"} }, "steps[1].depends_on[0]", `unknown step "zz"`},
		{"self dependency", func(d *saga.Definition) { d.Steps[1].DependsOn = []string{"b"} }, "steps[1].depends_on[0]", `step "b" depends on itself`},
		{"dependency listed twice", func(d *saga.Definition) { d.Steps[2].DependsOn = []string{"a", "b", "a"} }, "steps[2].depends_on[2]", `"a" is listed twice`},
		{"cycle of two", func(d *saga.Definition) {
			d.Steps[0].DependsOn, d.Steps[1].DependsOn = []string{"b"}, []string{"a"}
		}, "steps", "depends_on has a cycle: a -> b -> a"},
		{"cycle of three", func(d *saga.Definition) {
			d.Steps[0].DependsOn, d.Steps[1].DependsOn, d.Steps[2].DependsOn = []string{"c"}, []string{"a"}, []string{"b"}
		}, "steps", "depends_on has a cycle: a -> b -> c -> a"},
		{"cycle behind a root", func(d *saga.Definition) {
			d.Steps = append(d.Steps, step("d"))
			d.Steps[1].DependsOn, d.Steps[2].DependsOn, d.Steps[3].DependsOn = []string{"a", "d"}, []string{"b"}, []string{"c"}
		}, "steps", "depends_on has a cycle: b -> c -> d -> b"},
		{"two pivots", func(d *saga.Definition) { d.Steps[0].Pivot, d.Steps[2].Pivot = true, true }, "steps[2].pivot", "at most one pivot"},
		{"pivot concurrent with a step", func(d *saga.Definition) {
			d.Steps[1].DependsOn, d.Steps[2].DependsOn = []string{"a"}, []string{"a"}
			d.Steps[1].Pivot = true
		}, "steps[1].pivot", `step "c" may run concurrently with the pivot "b"`},
		{"oversized", func(d *saga.Definition) {
			// Every step depends on all before it: few steps, many bytes.
			d.Steps = nil
			var names []string
			for i := 0; i < 60; i++ {
				s := step(fmt.Sprintf("%02d-%s", i, strings.Repeat("x", 120)))
				s.DependsOn = append([]string(nil), names...)
				names = append(names, s.Name)
				d.Steps = append(d.Steps, s)
			}
		}, "definition", "bytes encoded; the limit is 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := threeSteps()
			tc.mutate(&d)
			got, err := saga.Normalize(d)
			require.Error(t, err)
			var verr *saga.ValidationError
			require.ErrorAs(t, err, &verr)
			require.Equal(t, tc.field, verr.Field)
			require.Contains(t, verr.Reason, tc.reason)
			require.Equal(t, tc.field+": "+verr.Reason, err.Error())
			require.Zero(t, got.Name, "Normalize returns no definition with an error")
		})
	}
}

func TestValidDefinitions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mutate func(d *saga.Definition)
	}{
		{"chain", func(*saga.Definition) {}},
		{"name at the limit", func(d *saga.Definition) { d.Name = strings.Repeat("n", protocol.MaxNameLength) }},
		{"dots, dashes and underscores", func(d *saga.Definition) { d.Name = "orders.v2_transfer-eu" }},
		{"no compensation", func(d *saga.Definition) { d.Steps[1].Compensation = "" }},
		{"pivot in a chain", func(d *saga.Definition) { d.Steps[1].Pivot = true }},
		{"pivot joining a DAG", func(d *saga.Definition) {
			d.Steps = append(d.Steps, step("d"))
			d.Steps[1].DependsOn, d.Steps[2].DependsOn, d.Steps[3].DependsOn = []string{"a"}, []string{"a"}, []string{"b", "c"}
			d.Steps[3].Pivot = true
		}},
		{"max steps", func(d *saga.Definition) {
			d.Steps = nil
			for i := 0; i < saga.MaxSteps; i++ {
				d.Steps = append(d.Steps, step(fmt.Sprintf("s%d", i)))
			}
		}},
		{"limits", func(d *saga.Definition) {
			d.Deadline = 720 * time.Hour
			d.Steps[0].Timeout = saga.MaxTimeout
			d.Steps[1].Timeout = time.Millisecond
			d.Steps[0].Retry = saga.RetryPolicy{MaxAttempts: saga.MaxAttempts, InitialBackoff: time.Millisecond, MaxBackoff: saga.MaxTimeout, Multiplier: 10}
			d.Steps[1].Retry = saga.RetryPolicy{MaxAttempts: 1, InitialBackoff: time.Second, MaxBackoff: time.Second, Multiplier: 1}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := threeSteps()
			tc.mutate(&d)
			n, err := saga.Normalize(d)
			require.NoError(t, err)
			again, err := saga.Normalize(n)
			require.NoError(t, err)
			require.Equal(t, n, again, "Normalize is idempotent")
		})
	}
}

func TestWithDefaults(t *testing.T) {
	t.Parallel()
	defaults := saga.RetryPolicy{
		MaxAttempts:    saga.DefaultMaxAttempts,
		InitialBackoff: saga.DefaultInitialBackoff,
		MaxBackoff:     saga.DefaultMaxBackoff,
		Multiplier:     saga.DefaultMultiplier,
	}
	t.Run("list order is a chain", func(t *testing.T) {
		t.Parallel()
		d := threeSteps().WithDefaults()
		require.Nil(t, d.Steps[0].DependsOn)
		require.Equal(t, []string{"a"}, d.Steps[1].DependsOn)
		require.Equal(t, []string{"b"}, d.Steps[2].DependsOn)
		for _, s := range d.Steps {
			require.Equal(t, defaults, s.Retry)
			require.Equal(t, defaults, s.CompensationRetry)
			require.Equal(t, saga.DefaultTimeout, s.Timeout)
		}
	})
	t.Run("any depends_on turns the chain off", func(t *testing.T) {
		t.Parallel()
		d := threeSteps()
		d.Steps[2].DependsOn = []string{"a"}
		n := d.WithDefaults()
		require.Nil(t, n.Steps[0].DependsOn)
		require.Nil(t, n.Steps[1].DependsOn, "b is a root")
		require.Equal(t, []string{"a"}, n.Steps[2].DependsOn)
		g := n.Graph()
		require.Equal(t, [][]int{nil, nil, {0}}, g.Deps)
		require.Equal(t, [][]int{{2}, nil, nil}, g.Dependents)
	})
	t.Run("compensation retry", func(t *testing.T) {
		t.Parallel()
		d := threeSteps()
		d.Steps[0].Retry = saga.RetryPolicy{MaxAttempts: 7, Multiplier: 3}
		d.Steps[1].CompensationRetry = saga.RetryPolicy{MaxBackoff: time.Minute}
		n := d.WithDefaults()
		custom := defaults
		custom.MaxAttempts, custom.Multiplier = 7, 3
		require.Equal(t, custom, n.Steps[0].Retry)
		require.Equal(t, custom, n.Steps[0].CompensationRetry, "unset: the action's policy")
		withMax := defaults
		withMax.MaxBackoff = time.Minute
		require.Equal(t, withMax, n.Steps[1].CompensationRetry, "set: filled with defaults, not copied")
	})
	t.Run("does not change its input", func(t *testing.T) {
		t.Parallel()
		d := threeSteps()
		d.Steps[1].DependsOn = []string{"a"}
		n := d.WithDefaults()
		n.Steps[1].DependsOn[0] = "changed"
		require.Equal(t, []string{"a"}, d.Steps[1].DependsOn)
		require.Zero(t, d.Steps[0].Timeout)
		require.Zero(t, d.Steps[0].Retry)
	})
}

func TestHash(t *testing.T) {
	t.Parallel()
	norm := func(mutate func(d *saga.Definition)) saga.Definition {
		d := threeSteps()
		mutate(&d)
		n, err := saga.Normalize(d)
		require.NoError(t, err)
		return n
	}
	base := norm(func(*saga.Definition) {})
	require.Len(t, base.Hash(), 64)
	same := norm(func(d *saga.Definition) {
		d.Version, d.CreatedAt = 7, t0
		d.Steps[1].Retry = saga.RetryPolicy{MaxAttempts: saga.DefaultMaxAttempts} // the default, spelled out
	})
	require.Equal(t, base.Hash(), same.Hash(), "version, creation time and spelled-out defaults are not content")

	for name, mutate := range map[string]func(d *saga.Definition){
		"name":         func(d *saga.Definition) { d.Name = "other" },
		"action":       func(d *saga.Definition) { d.Steps[1].Action = "other" },
		"participant":  func(d *saga.Definition) { d.Steps[1].Participant = "other" },
		"compensation": func(d *saga.Definition) { d.Steps[1].Compensation = "" },
		"order":        func(d *saga.Definition) { d.Steps[1], d.Steps[2] = d.Steps[2], d.Steps[1] },
		"dependencies": func(d *saga.Definition) { d.Steps[2].DependsOn = []string{"a"}; d.Steps[1].DependsOn = []string{"a"} },
		"timeout":      func(d *saga.Definition) { d.Steps[0].Timeout = time.Minute },
		"retry":        func(d *saga.Definition) { d.Steps[0].Retry.MaxAttempts = 4 },
		"pivot":        func(d *saga.Definition) { d.Steps[0].Pivot = true },
		"deadline":     func(d *saga.Definition) { d.Deadline = time.Hour },
	} {
		require.NotEqual(t, base.Hash(), norm(mutate).Hash(), name)
	}
}

func TestCanonicalJSONRoundTrip(t *testing.T) {
	t.Parallel()
	d := threeSteps()
	d.Deadline = time.Hour
	d.Steps[1].Pivot = true
	n, err := saga.Normalize(d)
	require.NoError(t, err)
	n.Version, n.CreatedAt = 3, t0

	var back saga.Definition
	require.NoError(t, json.Unmarshal(n.CanonicalJSON(), &back))
	n.Version, n.CreatedAt = 0, time.Time{}
	require.Equal(t, n, back)
	require.Equal(t, n.Hash(), back.Hash())
}

func TestGraphReaches(t *testing.T) {
	t.Parallel()
	d := normalize(t, step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"), step("e"))
	g := d.Graph()
	for _, tc := range []struct {
		from, to int
		want     bool
	}{
		{0, 1, true}, {0, 3, true}, {1, 3, true}, {2, 3, true},
		{3, 0, false}, {1, 2, false}, {2, 1, false}, {0, 0, false},
		{4, 0, false}, {0, 4, false},
	} {
		require.Equal(t, tc.want, g.Reaches(tc.from, tc.to), "%d reaches %d", tc.from, tc.to)
	}
}
