package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/cairnhq/cairn/agent/internal/render"
)

// renderUsage documents --render.
const renderUsage = "write a document to a file, KIND/NAME[@CLUSTER_ID]=PATH[:MODE], e.g. cairn.dev/ingress/main=/etc/ingress.json:0640 " +
	"(the data plane's document, or with @CLUSTER_ID that cluster's; MODE octal, default 0644); repeat the flag or separate rules with commas"

// renderRules is the repeatable --render flag. The daemon validates the
// rules; this only splits them.
type renderRules []render.Rule

// modeSuffix is the optional ":MODE" at the end of a destination.
var modeSuffix = regexp.MustCompile(`:(0?[0-7]{3})$`)

func (rs *renderRules) String() string {
	if rs == nil {
		return ""
	}
	parts := make([]string, len(*rs))
	for i, r := range *rs {
		parts[i] = fmt.Sprintf("%s=%s", r, r.Path)
		if r.Mode != 0 {
			parts[i] += fmt.Sprintf(":%#o", uint32(r.Mode))
		}
	}
	return strings.Join(parts, ",")
}

// Set adds the comma-separated rules in v, so one environment variable can
// hold several.
func (rs *renderRules) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		r, err := parseRenderRule(s)
		if err != nil {
			return err
		}
		*rs = append(*rs, r)
	}
	return nil
}

// parseRenderRule splits KIND/NAME[@CLUSTER_ID]=PATH[:MODE]. Kinds, names
// and ids hold no '=' or '@' and names no '/', so the first '=' ends the
// document and its last '/' starts the name. A path ending in ":" and
// three octal digits must be given with an explicit mode.
func parseRenderRule(s string) (render.Rule, error) {
	doc, dest, ok := strings.Cut(s, "=")
	if !ok || dest == "" {
		return render.Rule{}, fmt.Errorf("render rule %q: want KIND/NAME[@CLUSTER_ID]=PATH[:MODE]", s)
	}
	var r render.Rule
	doc, r.ClusterID, _ = strings.Cut(doc, "@")
	i := strings.LastIndexByte(doc, '/')
	if i <= 0 || i == len(doc)-1 {
		return render.Rule{}, fmt.Errorf("render rule %q: want KIND/NAME before '='", s)
	}
	r.Kind, r.Name = doc[:i], doc[i+1:]
	if m := modeSuffix.FindStringSubmatch(dest); m != nil {
		mode, err := strconv.ParseUint(m[1], 8, 32)
		if err != nil {
			return render.Rule{}, fmt.Errorf("render rule %q: mode: %w", s, err)
		}
		r.Mode = os.FileMode(mode)
		dest = strings.TrimSuffix(dest, m[0])
	}
	r.Path = dest
	return r, nil
}

// parseCommand turns a command flag (--reload-command, --upgrade-hook)
// into argv: a JSON array of strings, or words separated by spaces. No
// shell is involved; for quoting, pipes or several commands, write a
// script.
func parseCommand(flag, s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if !strings.HasPrefix(s, "[") {
		return strings.Fields(s), nil
	}
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil {
		return nil, fmt.Errorf("%s: not a JSON array of strings: %w", flag, err)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("%s: no program", flag)
	}
	return argv, nil
}
