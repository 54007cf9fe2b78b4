package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// dumpTimeout bounds pg_dump of one run's schemas.
const dumpTimeout = 2 * time.Minute

// dumpDatabase writes the run's schemas (the coordinator's, chaos_<id>, and each participant's,
// chaos_<id>_<name>) with pg_dump, as plain SQL, into the report directory (Options.ReportDir)
// or else the run's work dir, before teardown drops them or stops a private PostgreSQL; it
// records the file in the result, or why there is none. A failed dump changes no verdict.
func (r *run) dumpDatabase(ctx context.Context) {
	dir := r.work
	if r.opts.ReportDir != "" {
		dir = filepath.Join(r.opts.ReportDir, "dumps")
	}
	path := filepath.Join(dir, filepath.Base(r.work)+".sql")
	if err := r.pgDump(ctx, path); err != nil {
		r.res.DumpError = err.Error()
		r.event("database dump failed: %v", err)
		return
	}
	r.res.DatabaseDump = path
	r.event("database dumped to %s", path)
}

// pgDump runs pg_dump for the run's schemas into path.
func (r *run) pgDump(ctx context.Context, path string) error {
	if r.schema == "" {
		return errors.New("the run has no schema")
	}
	bin, err := pgDumpBinary(r.opts.PostgresBin)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, dumpTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, dumpArgs(r.pgBase, r.schema, path)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("%s: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// dumpArgs are pg_dump's arguments: the schema and the participants' (schema_*), as plain SQL
// without owners or privileges, so that any database can load it.
func dumpArgs(dbURL, schema, path string) []string {
	return []string{"--dbname=" + dbURL, "--schema=" + schema, "--schema=" + schema + "_*",
		"--format=plain", "--no-owner", "--no-privileges", "--file=" + path}
}

// pgDumpBinary finds pg_dump next to initdb and pg_ctl (--postgres-bin: the same version as
// the private instances), else on PATH.
func pgDumpBinary(postgresBin string) (string, error) {
	if p := filepath.Join(postgresBin, "pg_dump"); postgresBin != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("pg_dump")
	if err != nil {
		return "", fmt.Errorf("pg_dump is neither in %s nor on PATH: %w", postgresBin, err)
	}
	return p, nil
}
