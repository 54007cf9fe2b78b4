// Package cmdline is what the daemons' command lines (coordinator, participant-sim) add to cobra:
// flags that fall back to an environment variable, flags whose secret value may come from a
// file, and the single-dash long flags (-migrate) that the standard flag package, which they
// used before, accepted.
package cmdline

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sagacoord/sagacoord/internal/secrets"
)

// envKey is the flag annotation that names a flag's environment variable, and fileKey the one
// that names the flag whose value a -file flag holds.
const (
	envKey  = "sagacoord_env"
	fileKey = "sagacoord_file_of"
)

// Env binds the flag name of fs to the environment variable env and says so in its help.
// ApplyEnv then sets the flag from the variable when the command line leaves it out. The help
// shows the flag's own default, never the variable's value, so that a URL with a password in the
// environment is never printed.
func Env(fs *pflag.FlagSet, name, env string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("cmdline.Env: no flag --" + name)
	}
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	f.Annotations[envKey] = []string{env}
	f.Usage += " (env " + env + ")"
}

// FileFlag registers --NAME-file, bound to the environment variable env, next to the string
// flag NAME: a file that holds NAME's value, for a secret (a URL with a password) that should be
// neither on a command line, where every user of the machine can read it, nor in the
// environment. ApplyEnv reads the file when the flag or its variable is set.
func FileFlag(fs *pflag.FlagSet, name, env string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("cmdline.FileFlag: no flag --" + name)
	}
	file := name + "-file"
	fs.String(file, "", "file holding the value of --"+name+", which keeps its password off the command line; give one of the two")
	Env(fs, file, env)
	fs.Lookup(file).Annotations[fileKey] = []string{name}
}

// EnvOf returns the environment variable bound to f, or "".
func EnvOf(f *pflag.Flag) string {
	if v := f.Annotations[envKey]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// ApplyEnv sets every flag of fs that the command line left out, and that has an environment
// variable, from that variable when it is set and not empty. Then it sets each flag that has a
// -file flag (FileFlag) from its file, when one is named; the flag itself must then be given
// neither on the command line nor in the environment. Errors name files, never their content.
func ApplyEnv(fs *pflag.FlagSet, getenv func(string) string) error {
	var errs []error
	given := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) {
		env := EnvOf(f)
		given[f.Name] = f.Changed || (env != "" && getenv(env) != "")
		if env == "" || f.Changed {
			return
		}
		if v := getenv(env); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("$%s (for --%s): %w", env, f.Name, err))
			}
		}
	})
	fs.VisitAll(func(file *pflag.Flag) {
		target := file.Annotations[fileKey]
		if len(target) != 1 || file.Value.String() == "" {
			return
		}
		if given[target[0]] {
			errs = append(errs, fmt.Errorf("--%s and --%s are both given (on the command line or in the environment): give one", target[0], file.Name))
			return
		}
		v, err := secrets.ReadFile(file.Value.String())
		if err == nil {
			err = fs.Lookup(target[0]).Value.Set(v)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", file.Name, err))
		}
	})
	return errors.Join(errs...)
}

// DoubleDash rewrites -name and -name=value as --name and --name=value for every long flag of
// root and its subcommands (and -help), since the standard flag package accepted one dash as
// well as two. Arguments after "--", and anything that is not a known long flag, are left as
// they are.
func DoubleDash(root *cobra.Command, args []string) []string {
	long := map[string]bool{"help": true}
	var collect func(c *cobra.Command)
	collect = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
		}
		for _, sub := range c.Commands() {
			collect(sub)
		}
	}
	collect(root)
	out := make([]string, len(args))
	for i, a := range args {
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		out[i] = a
		if name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "="); strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 1 && long[name] {
			out[i] = "-" + a
		}
	}
	return out
}
