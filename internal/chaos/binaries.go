package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// testHooksDir is where, under the binaries' directory, the coordinator built with -tags
// testhooks is (make build-testhooks). Coordinators whose flags name a test hook (--test-*) run it;
// the others run the coordinator that ships, which has no such flags.
const testHooksDir = "testhooks"

// locateBinaries returns the directory holding coordinator and participant-sim, and with hooks
// testhooks/coordinator: binDir when given, else a fresh `go build` of the module this runs in
// (into a temp dir under work), else ./bin.
func locateBinaries(ctx context.Context, binDir, work string, hooks bool) (string, error) {
	need := []string{"coordinator", "participant-sim"}
	if hooks {
		need = append(need, filepath.Join(testHooksDir, "coordinator"))
	}
	check := func(dir string) error {
		for _, b := range need {
			if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() {
				return fmt.Errorf("%s not found in %s (run `make build build-testhooks`, or pass --bin)", b, dir)
			}
		}
		return nil
	}
	if binDir != "" {
		return binDir, check(binDir)
	}
	root, err := moduleRoot()
	if err == nil {
		if gobin, err := exec.LookPath("go"); err == nil {
			out := filepath.Join(work, "bin")
			if err := goBuild(ctx, gobin, root, out, hooks); err != nil {
				return "", err
			}
			return out, check(out)
		}
		if check(filepath.Join(root, "bin")) == nil {
			return filepath.Join(root, "bin"), nil
		}
	}
	return "bin", check("bin")
}

// goBuild builds the coordinator and participant-sim of the module at root into out, and with
// hooks the test build of the coordinator into out/testhooks.
func goBuild(ctx context.Context, gobin, root, out string, hooks bool) error {
	builds := [][]string{{"build", "-o", out + "/", "./cmd/coordinator", "./cmd/participant-sim"}}
	if hooks {
		builds = append(builds, []string{"build", "-tags", "testhooks", "-o", filepath.Join(out, testHooksDir) + "/", "./cmd/coordinator"})
	}
	for _, args := range builds {
		cmd := exec.CommandContext(ctx, gobin, args...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), err, b)
		}
	}
	return nil
}

// moduleRoot finds the sagacoord module's root above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/sagacoord/sagacoord\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the sagacoord module")
		}
		dir = parent
	}
}
