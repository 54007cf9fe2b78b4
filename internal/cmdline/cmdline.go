// Package cmdline is what the daemons' command lines (coordinator, participant-sim) add to cobra:
// flags that fall back to an environment variable, and the single-dash long flags (-migrate)
// that the standard flag package, which they used before, accepted.
package cmdline

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envKey is the flag annotation that names a flag's environment variable.
const envKey = "sagacoord_env"

// Env binds the flag name of fs to the environment variable env and says so in its help.
// ApplyEnv then sets the flag from the variable when the command line leaves it out. The help
// shows the flag's own default, never the variable's value, so that a URL with a password in the
// environment is never printed.
func Env(fs *pflag.FlagSet, name, env string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("cmdline.Env: no flag --" + name)
	}
	f.Annotations = map[string][]string{envKey: {env}}
	f.Usage += " (env " + env + ")"
}

// EnvOf returns the environment variable bound to f, or "".
func EnvOf(f *pflag.Flag) string {
	if v := f.Annotations[envKey]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// ApplyEnv sets every flag of fs that the command line left out, and that has an environment
// variable, from that variable when it is set and not empty.
func ApplyEnv(fs *pflag.FlagSet, getenv func(string) string) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		env := EnvOf(f)
		if env == "" || f.Changed {
			return
		}
		if v := getenv(env); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("$%s (for --%s): %w", env, f.Name, err))
			}
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
