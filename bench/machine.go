package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// machine describes where a run happened, for the report: figures from a
// shared 2-core VM mean little without it.
type machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	Kernel      string `json:"kernel"`
	Memory      string `json:"memory"`
	Go          string `json:"go"`
	Commit      string `json:"commit"`
	LoadAtStart string `json:"load_at_start"`
	LoadAtEnd   string `json:"load_at_end,omitempty"`
}

func describeMachine(rootDir string) machine {
	m := machine{
		CPUs:        runtime.NumCPU(),
		Go:          runtime.Version(),
		Kernel:      firstLine("/proc/sys/kernel/osrelease"),
		LoadAtStart: loadAvg(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m.Memory = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command("git", "-C", rootDir, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		// The code measured is the working tree: say when it differs from
		// the commit (outside bench/, which does not change what is measured).
		if st, err := exec.Command("git", "-C", rootDir, "status", "--porcelain", "--", ".", ":!bench", ":!docs").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			m.Commit += " + uncommitted changes"
		}
	}
	return m
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	f := strings.Fields(firstLine("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
