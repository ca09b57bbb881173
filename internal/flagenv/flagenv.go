// Package flagenv lets every command-line flag also be set by an
// environment variable, PREFIX_FLAG_NAME, as Kubernetes manifests and
// systemd units prefer. A flag given on the command line wins. It only
// parses; it does not validate values.
package flagenv

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// EnvName is the variable that sets flag name: prefix + "_" + NAME with
// '-' as '_'.
func EnvName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args into fs, then fills every flag not given on the
// command line from its environment variable, if set.
func Parse(fs *flag.FlagSet, prefix string, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := EnvName(prefix, f.Name)
		if v := getenv(env); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return err
}

// Usage returns a usage function that prints summary, then every flag with
// its environment variable and default.
func Usage(fs *flag.FlagSet, prefix, summary string, w io.Writer) func() {
	return func() {
		fmt.Fprintln(w, summary)
		fmt.Fprintln(w, "\nFlags (each can also be set by the environment variable shown):")
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" && f.DefValue != "false" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(w, "  --%s  [$%s]%s\n      %s\n", f.Name, EnvName(prefix, f.Name), def, f.Usage)
		})
	}
}
