// Package repo holds tests of the repository itself: the limits that keep the code readable
// (docs/decisions.md) and the rule that the repository speaks for itself.
package repo

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Limits of production Go code (tests and generated code are exempt).
const (
	maxFileLines = 600
	maxFuncLines = 80
)

// root returns the repository's top folder.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// trackedFiles lists the files git tracks, and those it does not ignore, relative to root.
func trackedFiles(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("git ls-files failed (%v): these checks need a git checkout", err)
	}
	var files []string
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if _, err := os.Stat(filepath.Join(root(t), f)); err == nil {
			files = append(files, f)
		}
	}
	return files
}

func productionGo(f string) bool {
	return strings.HasSuffix(f, ".go") && !strings.HasSuffix(f, "_test.go") && !strings.HasPrefix(f, "gen/")
}

func TestProductionFilesAndFunctionsStayShort(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	for _, f := range trackedFiles(t) {
		if !productionGo(f) {
			continue
		}
		file, err := parser.ParseFile(fset, filepath.Join(root(t), f), nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", f, err)
		}
		if n := fset.File(file.Pos()).LineCount(); n > maxFileLines {
			t.Errorf("%s has %d lines; split it by concern (the limit is %d)", f, n, maxFileLines)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			fn, ok := n.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				return true
			}
			lines := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
			if lines > maxFuncLines {
				t.Errorf("%s: func %s has %d lines; the limit is %d", f, fn.Name.Name, lines, maxFuncLines)
			}
			return false
		})
	}
}

// citation matches a reference to a document outside the repository or to an issue number.
var citation = regexp.MustCompile(`\bDESIGN\b|STYLE\.md|\.\./shared|\b[Ii]ssue [0-9]+\b`)

func TestNothingCitesDocumentsOutsideTheRepository(t *testing.T) {
	t.Parallel()
	for _, f := range trackedFiles(t) {
		if strings.HasSuffix(f, ".sum") || f == "internal/repo/shape_test.go" {
			continue
		}
		fh, err := os.Open(filepath.Join(root(t), f))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for line := 1; sc.Scan(); line++ {
			if m := citation.FindString(sc.Text()); m != "" {
				t.Errorf("%s:%d cites %q, which is not in the repository: bring what is needed into docs/ and cite that", f, line, m)
			}
		}
		fh.Close()
	}
}
