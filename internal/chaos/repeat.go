package chaos

import (
	"time"
)

// Bounds of a repeated timeline entry (every:).
const (
	maxRepetitions = 1000
	minEvery       = 10 * time.Millisecond
)

// repetitions returns how many times a timeline entry happens: Times, or as many starts as fit
// before At+For, or once without Every.
func (f Fault) repetitions() int {
	switch {
	case f.Every <= 0:
		return 1
	case f.Times > 0:
		return f.Times
	case f.For <= 0:
		return 1
	}
	return int((f.For-1)/f.Every) + 1
}

// validateRepeat checks the every:, for: and times: of a timeline entry at where.
func validateRepeat(bad *problems, where string, f Fault) {
	if f.Every == 0 {
		if f.For != 0 {
			bad.at(where+".for", "for: needs every: (how often to repeat the fault)")
		}
		if f.Times != 0 {
			bad.at(where+".times", "times: needs every: (how often to repeat the fault)")
		}
		return
	}
	if f.Every.D() < minEvery {
		bad.at(where+".every", "%s is shorter than %s", f.Every.D(), minEvery)
		return
	}
	switch {
	case f.For == 0 && f.Times == 0:
		bad.at(where+".every", "every: needs for: (how long to repeat) or times: (how many times)")
		return
	case f.For != 0 && f.Times != 0:
		bad.at(where+".times", "give for: or times:, not both")
		return
	case f.Times < 0:
		bad.at(where+".times", "%d must be at least 1", f.Times)
		return
	}
	n := f.repetitions()
	if n > maxRepetitions {
		field := ".for"
		if f.Times != 0 {
			field = ".times"
		}
		bad.at(where+field, "%d repetitions; at most %d", n, maxRepetitions)
		return
	}
	if f.Duration != 0 && f.Duration >= f.Every {
		bad.at(where+".duration", "%s must be shorter than every (%s), or the repetitions overlap", f.Duration.D(), f.Every.D())
	}
	if last := f.At.D() + time.Duration(n-1)*f.Every.D(); last > 24*time.Hour {
		bad.at(where+".every", "the last repetition would start at %s, after 24h", last)
	}
}

// expandRepeats returns the timeline with each entry that has every: replaced by its
// repetitions, numbered, in the order written (Schedule sorts them by time).
func expandRepeats(timeline []Fault) []Fault {
	var out []Fault
	for _, f := range timeline {
		if f.Every == 0 {
			out = append(out, f)
			continue
		}
		n := f.repetitions()
		for k := range n {
			g := f
			g.At = f.At + Duration(k)*f.Every
			g.Every, g.For, g.Times = 0, 0, 0
			g.Repetition, g.Repetitions = k+1, n
			out = append(out, g)
		}
	}
	return out
}
