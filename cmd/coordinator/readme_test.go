package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/sagacoord/sagacoord/internal/cmdline"
)

// readmeRow is one row of README.md's table of `coordinator serve` flags.
type readmeRow struct {
	line               int
	flag, env, defText string
}

// readmeServeTable parses the table that follows the line introducing the flags of
// `coordinator serve` in README.md.
func readmeServeTable(t *testing.T) []readmeRow {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "`coordinator serve` flags") {
			start = i + 1
			break
		}
	}
	if start < 0 {
		t.Fatal("README.md has no line starting with \"`coordinator serve` flags\" before the table")
	}
	for start < len(lines) && !strings.HasPrefix(lines[start], "|") {
		start++
	}
	var rows []readmeRow
	for i := start + 2; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ { // after the header and |---|
		cells := strings.Split(strings.Trim(lines[i], "|"), "|")
		if len(cells) < 4 {
			t.Fatalf("README.md:%d: want | flag | env | default | meaning |, got %q", i+1, lines[i])
		}
		cell := func(j int) string { return strings.Trim(strings.TrimSpace(cells[j]), "`") }
		rows = append(rows, readmeRow{line: i + 1, flag: cell(0), env: cell(1), defText: cell(2)})
	}
	if len(rows) == 0 {
		t.Fatal("README.md: the table of coordinator serve flags is empty")
	}
	return rows
}

// sameDefault compares the README's default with the flag's: "off" is an empty string, and
// durations compare by value (168h is 168h0m0s).
func sameDefault(f *pflag.Flag, readme string) bool {
	if readme == "off" {
		readme = ""
	}
	if f.Value.Type() == "duration" {
		a, errA := time.ParseDuration(readme)
		b, errB := time.ParseDuration(f.DefValue)
		return errA == nil && errB == nil && a == b
	}
	return readme == f.DefValue
}

// README.md's configuration table is true: every row is a flag of `coordinator serve` with that
// environment variable and default, and every flag has a row (the test hooks of a testhooks
// build aside).
func TestReadmeConfigurationTable(t *testing.T) {
	fs := newServeCommand(io.Discard, io.Discard).Flags()
	seen := map[string]bool{}
	for _, r := range readmeServeTable(t) {
		name, ok := strings.CutPrefix(r.flag, "--")
		f := fs.Lookup(name)
		if !ok || f == nil {
			t.Errorf("README.md:%d: %q is not a flag of coordinator serve", r.line, r.flag)
			continue
		}
		seen[name] = true
		if env := cmdline.EnvOf(f); env != r.env {
			t.Errorf("README.md:%d: --%s: env %q in the table, %q in the binary", r.line, name, r.env, env)
		}
		if !sameDefault(f, r.defText) {
			t.Errorf("README.md:%d: --%s: default %q in the table, %q in the binary", r.line, name, r.defText, f.DefValue)
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if !seen[f.Name] && !strings.HasPrefix(f.Usage, "TEST ONLY") {
			t.Errorf("README.md's table of coordinator serve flags lacks --%s (default %q, env %q)", f.Name, f.DefValue, cmdline.EnvOf(f))
		}
	})
}
