package cmdline

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestApplyEnvFillsWhatTheCommandLineLeftOut(t *testing.T) {
	cmd := &cobra.Command{Use: "x"}
	fs := cmd.Flags()
	url := fs.String("url", "postgres://default", "database")
	listen := fs.String("listen", "127.0.0.1:1", "address")
	migrate := fs.Bool("migrate", false, "apply migrations")
	grace := fs.Duration("grace", time.Second, "grace")
	Env(fs, "url", "X_URL")
	Env(fs, "listen", "X_LISTEN")
	Env(fs, "migrate", "X_MIGRATE")
	if err := fs.Parse([]string{"--listen", "0.0.0.0:2"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"X_URL": "postgres://u:secret@db/x", "X_LISTEN": "ignored:3", "X_MIGRATE": "true", "X_GRACE": "5s"}
	if err := ApplyEnv(fs, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *url != "postgres://u:secret@db/x" || *listen != "0.0.0.0:2" || !*migrate || *grace != time.Second {
		t.Errorf("url %q, listen %q, migrate %v, grace %v; want the environment's url and migrate, the command line's listen, grace untouched (no variable)", *url, *listen, *migrate, *grace)
	}
	if f := fs.Lookup("url"); f.DefValue != "postgres://default" || !strings.HasSuffix(f.Usage, "(env X_URL)") || EnvOf(f) != "X_URL" {
		t.Errorf("flag url: default %q, usage %q, env %q", f.DefValue, f.Usage, EnvOf(f))
	}
	if EnvOf(fs.Lookup("grace")) != "" {
		t.Error("a flag without a variable has one")
	}

	env["X_MIGRATE"] = "maybe"
	fs.Lookup("migrate").Changed = false
	err := ApplyEnv(fs, func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "$X_MIGRATE (for --migrate)") {
		t.Errorf("a bad value in the environment: %v", err)
	}
}

func TestDoubleDash(t *testing.T) {
	root := &cobra.Command{Use: "coordinator"}
	serve := &cobra.Command{Use: "serve"}
	serve.Flags().String("database-url", "", "")
	serve.Flags().Bool("migrate", false, "")
	migrate := &cobra.Command{Use: "migrate"}
	migrate.PersistentFlags().String("log-level", "", "")
	root.AddCommand(serve, migrate)
	got := DoubleDash(root, []string{"serve", "-database-url=x", "-migrate", "--log-level", "info", "-h", "-x", "-1", "-help", "--", "-migrate"})
	want := []string{"serve", "--database-url=x", "--migrate", "--log-level", "info", "-h", "-x", "-1", "--help", "--", "-migrate"}
	if !slices.Equal(got, want) {
		t.Errorf("DoubleDash =\n %q\nwant\n %q", got, want)
	}
}

func TestFileFlagReadsTheSecretFromItsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "url")
	if err := os.WriteFile(path, []byte("amqps://u:pw-s3cr3t@mq/v\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(env map[string]string, args ...string) (string, error) {
		fs := (&cobra.Command{Use: "x"}).Flags()
		url := fs.String("amqp-url", "amqp://default", "broker")
		Env(fs, "amqp-url", "X_AMQP_URL")
		FileFlag(fs, "amqp-url", "X_AMQP_URL_FILE")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		err := ApplyEnv(fs, func(k string) string { return env[k] })
		return *url, err
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"flag", nil, []string{"--amqp-url-file", path}},
		{"environment", map[string]string{"X_AMQP_URL_FILE": path}, nil},
	} {
		got, err := parse(tc.env, tc.args...)
		if err != nil || got != "amqps://u:pw-s3cr3t@mq/v" {
			t.Errorf("%s: got %q, %v; want the file's URL", tc.name, got, err)
		}
	}
	if got, err := parse(nil); err != nil || got != "amqp://default" {
		t.Errorf("no file: got %q, %v; want the default", got, err)
	}
	for _, tc := range []struct {
		name, want string
		env        map[string]string
		args       []string
	}{
		{"both flags", "give one", nil, []string{"--amqp-url", "amqp://x", "--amqp-url-file", path}},
		{"file and the URL's variable", "give one", map[string]string{"X_AMQP_URL": "amqp://x"}, []string{"--amqp-url-file", path}},
		{"missing file", filepath.Join(dir, "missing"), nil, []string{"--amqp-url-file", filepath.Join(dir, "missing")}},
	} {
		_, err := parse(tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: error %v; want one that says %q and never shows the secret", tc.name, err, tc.want)
		}
	}
}
