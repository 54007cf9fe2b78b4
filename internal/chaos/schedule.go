package chaos

import "sort"

// ScheduledFault is a timeline entry as the runner applies it.
type ScheduledFault struct {
	Fault
	// Random marks a fault drawn by random_faults.
	Random bool `json:"random,omitempty"`
}

// Schedule returns the timeline with the random faults drawn from seed, sorted by time. The same
// scenario and seed give the same schedule.
func (s *Scenario) Schedule(seed uint64) []ScheduledFault {
	var out []ScheduledFault
	for _, f := range s.Timeline {
		out = append(out, ScheduledFault{Fault: f})
	}
	if r := s.RandomFaults; r != nil {
		rng := newRand(seed, s.Name, "faults")
		for range r.Count {
			c := r.Choices[rng.intn(len(r.Choices))]
			c.At = Duration(int64(r.From) + rng.int63n(int64(r.To-r.From)))
			c.Duration = r.MinDuration
			if r.MaxDuration > r.MinDuration {
				c.Duration += Duration(rng.int63n(int64(r.MaxDuration - r.MinDuration + 1)))
			}
			if c.Kind == FaultDuplicate || c.Kind == FaultPoison {
				c.Count = max(c.Count, 10)
			}
			if !takesDuration(c.Kind) {
				c.Duration = 0
			}
			out = append(out, ScheduledFault{Fault: c, Random: true})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}
