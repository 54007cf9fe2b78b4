package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procCPU is one process's name group, CPU seconds and context switches.
type procCPU struct {
	group    string
	seconds  float64
	switches int64
}

// machineCPU reads the CPU seconds of every process in /proc, by pid; nil without /proc.
func machineCPU() map[string]procCPU {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make(map[string]procCPU, len(entries))
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		if comm, secs, ok := parseStat(string(b)); ok {
			out[pid] = procCPU{group: processGroup(comm), seconds: secs, switches: taskSwitches(pid)}
		}
	}
	return out
}

// parseStat reads the command name and the CPU seconds (user and system) of a /proc/PID/stat
// line.
func parseStat(s string) (comm string, cpuSeconds float64, ok bool) {
	// The command name is in parentheses and may contain spaces and parentheses itself.
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) <= 13 {
		return "", 0, false
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return s[open+1 : end], (ut + st) / 100, true // USER_HZ is 100 on Linux
}

// processGroup names the group of a process by its command name.
func processGroup(comm string) string {
	switch {
	case strings.HasPrefix(comm, "postgres"), strings.HasPrefix(comm, "postmaster"):
		return "postgres"
	case strings.HasPrefix(comm, "beam"), comm == "erl_child_setup", comm == "epmd", comm == "inet_gethost":
		return "rabbitmq"
	case comm == "coordinator", comm == "participant-sim", comm == "sagalab", comm == "sagactl":
		return comm
	}
	return "other"
}

// cpuByGroup turns two machineCPU readings secs apart into cores by group, with their total. A
// process that started between them counts from zero; one that ended is not counted.
func cpuByGroup(before, after map[string]procCPU, secs float64) map[string]float64 {
	if secs <= 0 {
		return nil
	}
	return byGroupDelta(before, after, secs, func(p procCPU) float64 { return p.seconds })
}

// byGroupDelta sums, by group and in all, what each process used between two readings (value's
// growth), divided by per. A process that started between them counts from zero; one that ended
// is not counted.
func byGroupDelta(before, after map[string]procCPU, per float64, value func(procCPU) float64) map[string]float64 {
	if len(after) == 0 {
		return nil
	}
	out := map[string]float64{}
	for pid, a := range after {
		used := value(a)
		if b, ok := before[pid]; ok && b.group == a.group {
			used -= value(b)
		}
		if used > 0 {
			out[a.group] += used / per
			out["total"] += used / per
		}
	}
	return out
}

// procStats reads a process's CPU seconds and current and peak RSS in MB from /proc.
func procStats(pid int) (cpu, rssMB, peakMB float64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		_, cpu, _ = parseStat(string(b))
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			kb, _ := strconv.ParseFloat(f[1], 64)
			switch f[0] {
			case "VmRSS:":
				rssMB = kb / 1024
			case "VmHWM:":
				peakMB = kb / 1024
			}
		}
	}
	return cpu, rssMB, peakMB
}
