package chaos

import (
	"slices"
	"testing"
)

func TestParseSeeds(t *testing.T) {
	got, err := parseSeeds([]string{"1,2", " 3 "})
	if err != nil || !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("parseSeeds(1,2 and 3) = %v, %v", got, err)
	}
	if got, err := parseSeeds(nil); err != nil || !slices.Equal(got, []uint64{0}) {
		t.Errorf("parseSeeds() = %v, %v; want [0], each scenario's own seed", got, err)
	}
	for _, bad := range []string{"0", "x", "1,,2", "-1"} {
		if _, err := parseSeeds([]string{bad}); err == nil {
			t.Errorf("parseSeeds(%q) accepted it", bad)
		}
	}
}

func TestSelectScenarios(t *testing.T) {
	all := func() []*Scenario {
		return []*Scenario{{Name: "a", Tags: []string{"fast"}}, {Name: "b"}, {Name: "c", Tags: []string{"fast", "2pc"}}}
	}
	names := func(ss []*Scenario) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out
	}
	for _, tt := range []struct {
		tags, names, want []string
	}{
		{nil, nil, []string{"a", "b", "c"}},
		{[]string{"fast"}, nil, []string{"a", "c"}},
		{[]string{"fast"}, []string{"c", "b"}, []string{"c"}},
		{nil, []string{"b"}, []string{"b"}},
		{[]string{"slow"}, nil, nil},
	} {
		if got := names(selectScenarios(all(), tt.tags, tt.names)); !slices.Equal(got, tt.want) {
			t.Errorf("tags %v names %v: %v, want %v", tt.tags, tt.names, got, tt.want)
		}
	}
}
