package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"

	"github.com/sagacoord/sagacoord/internal/cli"
)

// wildcardFaults is participant-sim's faults key for every command without an entry of its own.
const wildcardFaults = "*"

// definitionPath is the saga definition file, relative to the scenario's directory.
func (s *Scenario) definitionPath(dir string) string {
	def := s.sagaWorkload().Definition
	if filepath.IsAbs(def) {
		return def
	}
	return filepath.Join(dir, def)
}

// sagaWorkload is the saga workload (an empty one when there is none).
func (s *Scenario) sagaWorkload() Workload {
	if w := s.workloadOf(WorkloadSaga); w != nil {
		return *w
	}
	return Workload{}
}

// sagaWhere and twoPCSource name a workload's field in problems: workload. or workloads[i].
func (s *Scenario) sagaWhere() string { return s.workloadField(WorkloadSaga) }

func (s *Scenario) twoPCSource() string { return s.workloadField(WorkloadTwoPC) + ".participants" }

func (s *Scenario) workloadField(kind string) string {
	if s.mixedGiven {
		for i, w := range s.Workloads {
			if w.Kind == kind {
				return fmt.Sprintf("workloads[%d]", i)
			}
		}
	}
	return "workload"
}

// checkDefinition reads the saga workload's definition file (relative to dir, the scenario
// file's directory): it must exist and parse, its steps' participants must be in the topology,
// and every participant's fault knobs must name a command the definition sends it.
func (s *Scenario) checkDefinition(bad *problems, dir string) {
	w := s.sagaWorkload()
	if w.Kind != WorkloadSaga || w.Definition == "" {
		return
	}
	field := s.sagaWhere() + ".definition"
	path := s.definitionPath(dir)
	b, err := os.ReadFile(path)
	if err != nil {
		bad.at(field, "%v", err)
		return
	}
	def, err := cli.ParseDefinition(path, b)
	if err != nil {
		bad.at(field, "%v", err)
		return
	}
	var steps []string
	for _, st := range def.GetSteps() {
		steps = append(steps, st.GetName())
	}
	s.checkStepConditions(bad, def.GetName(), steps)
	parts := s.participants()
	for _, st := range def.GetSteps() {
		if _, ok := parts[st.GetParticipant()]; !ok {
			bad.at(field, "step %s of %s goes to participant %q, which no participant_sim runs", st.GetName(), w.Definition, st.GetParticipant())
		}
	}
	keys, source := sagaFaultKeys(def), w.Definition
	if tw := s.workloadOf(WorkloadTwoPC); tw != nil {
		for p, ks := range twoPCFaultKeys(tw.Participants) {
			keys[p] = append(keys[p], ks...)
		}
		source += " and " + s.twoPCSource()
	}
	s.validateFaultKeys(bad, keys, source)
}

// sagaFaultKeys returns, by participant, the commands a saga definition sends it: its steps'
// actions and compensations.
func sagaFaultKeys(def *sagacoordv1.SagaDefinition) map[string][]string {
	keys := map[string][]string{}
	for _, st := range def.GetSteps() {
		for _, k := range []string{st.GetAction(), st.GetCompensation()} {
			if k != "" && !slices.Contains(keys[st.GetParticipant()], k) {
				keys[st.GetParticipant()] = append(keys[st.GetParticipant()], k)
			}
		}
	}
	return keys
}

// twoPCFaultKeys returns, by participant, the commands a 2PC workload sends it: prepare, commit
// and abort to each of the transaction's participants.
func twoPCFaultKeys(participants []string) map[string][]string {
	keys := map[string][]string{}
	for _, p := range participants {
		keys[p] = []string{"prepare", "commit", "abort"}
	}
	return keys
}

// validateFaultKeys checks that each fault entry of each participant names a command the
// workload sends that participant (keys, from source), or is "*" for a participant that gets
// any: a knob under another name would never fire.
func (s *Scenario) validateFaultKeys(bad *problems, keys map[string][]string, source string) {
	for i, sim := range s.Topology.Sims {
		for j, p := range sim.Participants {
			names := make([]string, 0, len(p.Faults))
			for k := range p.Faults {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				if slices.Contains(keys[p.Name], k) || (k == wildcardFaults && len(keys[p.Name]) > 0) {
					continue
				}
				where := fmt.Sprintf("topology.participant_sims[%d].participants[%d].faults.%s", i, j, k)
				if len(keys[p.Name]) == 0 {
					bad.at(where, "never fires: the workload (%s) sends %s no command", source, p.Name)
					continue
				}
				bad.at(where, "%q never fires: the workload (%s) sends %s only %s; name one of them or \"*\"", k, source, p.Name, strings.Join(keys[p.Name], ", "))
			}
		}
	}
}
