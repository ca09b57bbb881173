package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
)

// manifestDirs are the kustomize directories under deploy/.
var manifestDirs = []string{"kubernetes", "cockroachdb"}

// buildDir holds the cairn-controlplane binary the tests build; TestMain
// removes it.
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cairn-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ---- the control plane's flags, from the real binary ----

// cpFlag is one flag as cairn-controlplane --help prints it.
type cpFlag struct {
	name string // "admin-addr"
	env  string // "CAIRN_ADMIN_ADDR"
	def  string // default value; "" when none is printed
}

// flagSet is everything cairn-controlplane accepts.
type flagSet struct {
	byName map[string]cpFlag
	byEnv  map[string]cpFlag
}

// helpLine matches a flag line of --help:
//
//	--admin-addr  [$CAIRN_ADMIN_ADDR] (default ":7443")
var helpLine = regexp.MustCompile(`^\s+--([a-z0-9][a-z0-9-]*)\s+\[\$([A-Z][A-Z0-9_]*)\](?:\s+\(default (".*")\))?\s*$`)

// parseHelp reads the flags out of cairn-controlplane --help. It fails
// rather than return a set so small that every check would pass.
func parseHelp(help string) (flagSet, error) {
	fs := flagSet{byName: map[string]cpFlag{}, byEnv: map[string]cpFlag{}}
	for _, line := range strings.Split(help, "\n") {
		m := helpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := cpFlag{name: m[1], env: m[2]}
		if m[3] != "" {
			def, err := strconv.Unquote(m[3])
			if err != nil {
				return flagSet{}, fmt.Errorf("default of --%s: %v", f.name, err)
			}
			f.def = def
		}
		if want := "CAIRN_" + strings.ToUpper(strings.ReplaceAll(f.name, "-", "_")); f.env != want {
			return flagSet{}, fmt.Errorf("--%s reads $%s; want $%s", f.name, f.env, want)
		}
		fs.byName[f.name] = f
		fs.byEnv[f.env] = f
	}
	for _, must := range []string{"admin-addr", "database-url", "tls-cert"} {
		if _, ok := fs.byName[must]; !ok {
			return flagSet{}, fmt.Errorf("found no --%s among %d flags in --help; has its format changed?\n%s", must, len(fs.byName), help)
		}
	}
	return fs, nil
}

// envNames lists the variables, for error messages.
func (fs flagSet) envNames() string {
	var names []string
	for n := range fs.byEnv {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// runtimeVars may be set for the Go runtime beside cairn-controlplane's own.
var runtimeVars = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true, "GODEBUG": true, "TZ": true}

// checkVar reports an environment variable given to cairn-controlplane
// that it does not read: a misspelt CAIRN_ name, or a misspelt prefix.
func (fs flagSet) checkVar(name string) []string {
	if _, ok := fs.byEnv[name]; ok || runtimeVars[name] {
		return nil
	}
	if strings.HasPrefix(name, "CAIRN") {
		return []string{fmt.Sprintf("%s is not a cairn-controlplane variable (it reads %s)", name, fs.envNames())}
	}
	return []string{fmt.Sprintf("%s is neither a cairn-controlplane variable nor a Go runtime one", name)}
}

// checkArgs reports every -flag or --flag in args that cairn-controlplane
// does not define.
func (fs flagSet) checkArgs(args []string) []string {
	var problems []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if _, ok := fs.byName[name]; !ok {
			problems = append(problems, fmt.Sprintf("%s: cairn-controlplane has no flag --%s", a, name))
		}
	}
	return problems
}

// variableMention finds CAIRN_ names in any text: manifests, units,
// environment files, docs.
var variableMention = regexp.MustCompile(`\bCAIRN_[A-Z0-9_]+\b`)

// checkMentions reports CAIRN_ names in text that no flag reads.
func (fs flagSet) checkMentions(text string) []string {
	var problems []string
	for i, line := range strings.Split(text, "\n") {
		for _, name := range variableMention.FindAllString(line, -1) {
			if _, ok := fs.byEnv[name]; !ok {
				problems = append(problems, fmt.Sprintf("line %d: %s is not a cairn-controlplane variable (it reads %s)", i+1, name, fs.envNames()))
			}
		}
	}
	return problems
}

// checkEnvFile checks a systemd EnvironmentFile: KEY=VALUE lines, each KEY
// one cairn-controlplane reads.
func (fs flagSet) checkEnvFile(text string) []string {
	var problems []string
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		key, _, ok := strings.Cut(line, "=")
		if !ok {
			problems = append(problems, fmt.Sprintf("line %d: %q is not KEY=VALUE", i+1, line))
			continue
		}
		for _, p := range fs.checkVar(strings.TrimSpace(key)) {
			problems = append(problems, fmt.Sprintf("line %d: %s", i+1, p))
		}
	}
	return problems
}

// unitLine is one Key=Value line of a systemd unit.
type unitLine struct {
	section, key, value string
	line                int
}

func parseUnit(text string) []unitLine {
	var out []unitLine
	section := ""
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		n := i + 1
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(lines[i])
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
		default:
			k, v, _ := strings.Cut(line, "=")
			out = append(out, unitLine{section: section, key: strings.TrimSpace(k), value: strings.TrimSpace(v), line: n})
		}
	}
	return out
}

// splitUnitWords splits a unit value into words, honouring double quotes.
func splitUnitWords(s string) []string {
	var words []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inWord = true
		case (r == ' ' || r == '\t') && !inQuote:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// checkUnit checks the flags on a unit's ExecStart and the variables in its
// Environment lines. envFiles are the names of the environment files that
// ship beside it, one of which EnvironmentFile must name.
func (fs flagSet) checkUnit(text string, envFiles []string) []string {
	var problems []string
	sawExec := false
	for _, l := range parseUnit(text) {
		if l.section != "Service" {
			continue
		}
		at := func(format string, args ...any) {
			problems = append(problems, fmt.Sprintf("line %d: %s", l.line, fmt.Sprintf(format, args...)))
		}
		switch l.key {
		case "ExecStart":
			sawExec = true
			words := splitUnitWords(strings.TrimLeft(l.value, "-@:+!"))
			if len(words) == 0 || filepath.Base(words[0]) != "cairn-controlplane" {
				at("ExecStart does not run cairn-controlplane: %q", l.value)
				continue
			}
			for _, p := range fs.checkArgs(words[1:]) {
				at("%s", p)
			}
		case "Environment":
			for _, w := range splitUnitWords(l.value) {
				name, _, ok := strings.Cut(w, "=")
				if !ok {
					at("Environment %q is not KEY=VALUE", w)
					continue
				}
				for _, p := range fs.checkVar(name) {
					at("%s", p)
				}
			}
		case "EnvironmentFile":
			if base := filepath.Base(strings.TrimPrefix(l.value, "-")); !slices.Contains(envFiles, base) {
				at("EnvironmentFile %s: no example %s ships beside the unit (have %v)", l.value, base, envFiles)
			}
		}
	}
	if !sawExec {
		problems = append(problems, "no ExecStart in [Service]")
	}
	return problems
}

// controlPlaneBuild is cairn-controlplane built from this module, and the
// flags its --help lists.
type controlPlaneBuild struct {
	bin   string
	flags flagSet
}

var buildControlPlane = sync.OnceValues(func() (controlPlaneBuild, error) {
	bin := filepath.Join(buildDir, "cairn-controlplane")
	build := exec.Command("go", "build", "-o", bin, "github.com/cairnhq/cairn/cmd/cairn-controlplane")
	if out, err := build.CombinedOutput(); err != nil {
		return controlPlaneBuild{}, fmt.Errorf("go build cairn-controlplane: %v\n%s", err, out)
	}
	help := exec.Command(bin, "--help")
	help.Env = []string{} // nothing from the test's environment
	out, err := help.CombinedOutput()
	if err != nil {
		return controlPlaneBuild{}, fmt.Errorf("cairn-controlplane --help: %v\n%s", err, out)
	}
	flags, err := parseHelp(string(out))
	if err != nil {
		return controlPlaneBuild{}, fmt.Errorf("cairn-controlplane --help: %v", err)
	}
	return controlPlaneBuild{bin: bin, flags: flags}, nil
})

// controlPlane builds cairn-controlplane once per test run.
func controlPlane(tb testing.TB) controlPlaneBuild {
	tb.Helper()
	cp, err := buildControlPlane()
	if err != nil {
		tb.Fatal(err)
	}
	return cp
}

// ---- manifests ----

type metadata struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type object struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   metadata `yaml:"metadata"`
}

// document is one YAML document of a manifest file.
type document struct {
	file  string // relative to deploy/
	index int    // from 1
	node  *yaml.Node
	obj   object
}

func (d document) String() string {
	return fmt.Sprintf("%s: document %d (%s %s)", d.file, d.index, d.obj.Kind, d.obj.Metadata.Name)
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type probe struct {
	HTTPGet *struct {
		Path   string `yaml:"path"`
		Port   string `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []envVar `yaml:"env"`
	EnvFrom []struct {
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	VolumeMounts    []volumeMount `yaml:"volumeMounts"`
	StartupProbe    *probe        `yaml:"startupProbe"`
	LivenessProbe   *probe        `yaml:"livenessProbe"`
	ReadinessProbe  *probe        `yaml:"readinessProbe"`
	SecurityContext *struct {
		ReadOnlyRootFilesystem *bool `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
}

// isControlPlane reports whether c runs cairn-controlplane.
func (c container) isControlPlane() bool { return strings.Contains(c.Image, "cairn-controlplane") }

func (c container) env(name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

type volume struct {
	Name   string `yaml:"name"`
	Secret *struct {
		SecretName string `yaml:"secretName"`
	} `yaml:"secret"`
	Projected *struct {
		Sources []struct {
			Secret *struct {
				Name string `yaml:"name"`
			} `yaml:"secret"`
		} `yaml:"sources"`
	} `yaml:"projected"`
}

type podSpec struct {
	ServiceAccountName string      `yaml:"serviceAccountName"`
	EnableServiceLinks *bool       `yaml:"enableServiceLinks"`
	InitContainers     []container `yaml:"initContainers"`
	Containers         []container `yaml:"containers"`
	Volumes            []volume    `yaml:"volumes"`
}

func (p podSpec) allContainers() []container {
	return append(slices.Clone(p.InitContainers), p.Containers...)
}

type podTemplate struct {
	Metadata metadata `yaml:"metadata"`
	Spec     podSpec  `yaml:"spec"`
}

// workload is a kind with a pod template.
type workload struct {
	doc      document
	selector *labelSelector
	template podTemplate
	claims   []string // StatefulSet volumeClaimTemplates
}

var workloadKinds = map[string]bool{"Deployment": true, "StatefulSet": true, "DaemonSet": true, "ReplicaSet": true, "Job": true, "CronJob": true}

func (d document) workload() (workload, bool, error) {
	if !workloadKinds[d.obj.Kind] {
		return workload{}, false, nil
	}
	var w struct {
		Spec struct {
			Selector    *labelSelector `yaml:"selector"`
			Template    *podTemplate   `yaml:"template"`
			JobTemplate *struct {
				Spec struct {
					Template *podTemplate `yaml:"template"`
				} `yaml:"spec"`
			} `yaml:"jobTemplate"`
			VolumeClaimTemplates []struct {
				Metadata metadata `yaml:"metadata"`
			} `yaml:"volumeClaimTemplates"`
		} `yaml:"spec"`
	}
	if err := d.node.Decode(&w); err != nil {
		return workload{}, true, err
	}
	tmpl := w.Spec.Template
	if w.Spec.JobTemplate != nil {
		tmpl = w.Spec.JobTemplate.Spec.Template
	}
	if tmpl == nil {
		return workload{}, true, errors.New("no pod template")
	}
	out := workload{doc: d, selector: w.Spec.Selector, template: *tmpl}
	for _, c := range w.Spec.VolumeClaimTemplates {
		out.claims = append(out.claims, c.Metadata.Name)
	}
	return out, true, nil
}

// manifestSet is one kustomize directory.
type manifestSet struct {
	dir       string
	docs      []document
	workloads []workload
	kust      kustomization
}

type kustomization struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Namespace  string   `yaml:"namespace"`
	Resources  []string `yaml:"resources"`
	Components []string `yaml:"components"`
	Patches    []struct {
		Path string `yaml:"path"`
	} `yaml:"patches"`
}

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

func isKustomization(name string) bool {
	return name == "kustomization.yaml" || name == "kustomization.yml" || name == "Kustomization"
}

// loadManifests parses every YAML file of dir, all documents of each.
func loadManifests(tb testing.TB, dir string) manifestSet {
	tb.Helper()
	set := manifestSet{dir: dir}
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || !isYAML(e.Name()) {
			continue
		}
		file := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		if isKustomization(e.Name()) {
			if err := yaml.Unmarshal(data, &set.kust); err != nil {
				tb.Errorf("%s: %v", file, err)
			}
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 1; ; i++ {
			var n yaml.Node
			err := dec.Decode(&n)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Errorf("%s: document %d: %v", file, i, err)
				break
			}
			if len(n.Content) == 0 || n.Content[0].Tag == "!!null" {
				continue // empty document, e.g. after a trailing ---
			}
			d := document{file: file, index: i, node: &n}
			if err := n.Decode(&d.obj); err != nil {
				tb.Errorf("%s: document %d: %v", file, i, err)
				continue
			}
			set.docs = append(set.docs, d)
			w, ok, err := d.workload()
			if err != nil {
				tb.Errorf("%v: %v", d, err)
			}
			if ok && err == nil {
				set.workloads = append(set.workloads, w)
			}
		}
	}
	if len(set.docs) == 0 {
		tb.Fatalf("%s: no manifests", dir)
	}
	return set
}

func loadAllManifests(tb testing.TB) []manifestSet {
	tb.Helper()
	var sets []manifestSet
	for _, dir := range manifestDirs {
		sets = append(sets, loadManifests(tb, dir))
	}
	return sets
}

// podContainer is a container and the workload it belongs to.
type podContainer struct {
	w workload
	c container
}

// controlPlaneContainers lists the containers running cairn-controlplane,
// failing the test if there are none: a check over nothing passes
// vacuously.
func controlPlaneContainers(tb testing.TB, sets []manifestSet) []podContainer {
	tb.Helper()
	var out []podContainer
	for _, set := range sets {
		for _, w := range set.workloads {
			for _, c := range w.template.Spec.allContainers() {
				if c.isControlPlane() {
					out = append(out, podContainer{w, c})
				}
			}
		}
	}
	if len(out) == 0 {
		tb.Fatal("no container runs a cairn-controlplane image")
	}
	return out
}

var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "CustomResourceDefinition": true,
	"PersistentVolume": true, "StorageClass": true, "PriorityClass": true,
	"ValidatingWebhookConfiguration": true, "MutatingWebhookConfiguration": true,
}

func TestManifestsHaveIdentity(t *testing.T) {
	for _, set := range loadAllManifests(t) {
		seen := map[string]document{}
		for _, d := range set.docs {
			if d.obj.APIVersion == "" || d.obj.Kind == "" || d.obj.Metadata.Name == "" {
				t.Errorf("%v: got apiVersion %q, kind %q, metadata.name %q; want all three", d, d.obj.APIVersion, d.obj.Kind, d.obj.Metadata.Name)
			}
			if ns := set.kust.Namespace; ns != "" && !clusterScoped[d.obj.Kind] && d.obj.Metadata.Namespace != "" && d.obj.Metadata.Namespace != ns {
				t.Errorf("%v: got namespace %q; want %q, the kustomization's", d, d.obj.Metadata.Namespace, ns)
			}
			key := d.obj.APIVersion + "/" + d.obj.Kind + "/" + d.obj.Metadata.Name
			if prev, ok := seen[key]; ok {
				t.Errorf("%v: same object as %v", d, prev)
			}
			seen[key] = d
		}
	}
}

func TestKustomizations(t *testing.T) {
	for _, dir := range manifestDirs {
		t.Run(dir, func(t *testing.T) {
			set := loadManifests(t, dir)
			k := set.kust
			if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
				t.Fatalf("%s/kustomization.yaml: got apiVersion %q kind %q; want kustomize.config.k8s.io/v1beta1 Kustomization", dir, k.APIVersion, k.Kind)
			}
			listed := map[string]bool{}
			var paths []string
			paths = append(paths, k.Resources...)
			paths = append(paths, k.Components...)
			for _, p := range k.Patches {
				if p.Path != "" {
					paths = append(paths, p.Path)
				}
			}
			for _, p := range paths {
				if strings.Contains(p, "://") || strings.HasPrefix(p, "github.com/") {
					t.Errorf("%s/kustomization.yaml lists remote %s; keep deploy/ self-contained", dir, p)
					continue
				}
				listed[filepath.Clean(p)] = true
				fi, err := os.Stat(filepath.Join(dir, p))
				switch {
				case err != nil:
					t.Errorf("%s/kustomization.yaml lists %s: %v", dir, p, err)
				case fi.IsDir():
					if _, err := os.Stat(filepath.Join(dir, p, "kustomization.yaml")); err != nil {
						t.Errorf("%s/kustomization.yaml lists directory %s, which has no kustomization.yaml", dir, p)
					}
				}
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if !e.IsDir() && isYAML(e.Name()) && !isKustomization(e.Name()) && !listed[e.Name()] {
					t.Errorf("%s/%s is not in %s/kustomization.yaml, so `kubectl apply -k` skips it", dir, e.Name(), dir)
				}
			}

			t.Run("render", func(t *testing.T) {
				kubectl, err := exec.LookPath("kubectl")
				if err != nil {
					t.Skip("kubectl not on PATH")
				}
				if out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput(); err != nil {
					t.Errorf("kubectl kustomize %s: %v\n%s", dir, err, out)
				}
			})
		})
	}
}

// deployFiles lists every file under deploy/ except Go sources.
func deployFiles(tb testing.TB) []string {
	tb.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

func TestFlagsAndVariablesExist(t *testing.T) {
	flags := controlPlane(t).flags

	t.Run("containers", func(t *testing.T) {
		for _, wc := range controlPlaneContainers(t, loadAllManifests(t)) {
			where := fmt.Sprintf("%v container %s", wc.w.doc, wc.c.Name)
			args := wc.c.Args
			if len(wc.c.Command) > 1 {
				args = append(slices.Clone(wc.c.Command[1:]), args...)
			}
			for _, p := range flags.checkArgs(args) {
				t.Errorf("%s: %s", where, p)
			}
			for _, e := range wc.c.Env {
				for _, p := range flags.checkVar(e.Name) {
					t.Errorf("%s: env: %s", where, p)
				}
			}
		}
	})

	t.Run("mentions", func(t *testing.T) {
		for _, file := range deployFiles(t) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range flags.checkMentions(string(data)) {
				t.Errorf("%s: %s", file, p)
			}
		}
	})

	t.Run("systemd", func(t *testing.T) {
		units, _ := filepath.Glob("systemd/*.service")
		envFiles, _ := filepath.Glob("systemd/*.env")
		if len(units) == 0 || len(envFiles) == 0 {
			t.Fatalf("got units %v and environment files %v in systemd/; want at least one of each", units, envFiles)
		}
		var envNames []string
		for _, f := range envFiles {
			envNames = append(envNames, filepath.Base(f))
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range flags.checkEnvFile(string(data)) {
				t.Errorf("%s: %s", f, p)
			}
		}
		for _, u := range units {
			data, err := os.ReadFile(u)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range flags.checkUnit(string(data), envNames) {
				t.Errorf("%s: %s", u, p)
			}
		}
	})
}

// adminPort is the port a control-plane container serves its admin API on.
func adminPort(c container, flags flagSet) (string, error) {
	addr := flags.byName["admin-addr"].def
	if v, ok := c.env("CAIRN_ADMIN_ADDR"); ok {
		addr = v
	}
	args := append(slices.Clone(c.Command), c.Args...)
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "admin-addr" {
			if !hasVal && i+1 < len(args) {
				val = args[i+1]
			}
			addr = val
		}
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("admin address %q: %v", addr, err)
	}
	return port, nil
}

// resolvePort turns a probe's port, a number or a container port's name,
// into a number.
func resolvePort(c container, port string) string {
	for _, p := range c.Ports {
		if p.Name != "" && p.Name == port {
			return strconv.Itoa(p.ContainerPort)
		}
	}
	return port
}

func TestControlPlaneProbes(t *testing.T) {
	flags := controlPlane(t).flags
	for _, wc := range controlPlaneContainers(t, loadAllManifests(t)) {
		c := wc.c
		where := fmt.Sprintf("%v container %s", wc.w.doc, c.Name)
		port, err := adminPort(c, flags)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		scheme := "HTTPS"
		if v, _ := c.env("CAIRN_INSECURE"); v == "true" || v == "1" {
			scheme = "HTTP"
		}
		for _, pc := range []struct {
			kind     string
			p        *probe
			path     string
			required bool
		}{
			{"startupProbe", c.StartupProbe, "/healthz", false},
			{"livenessProbe", c.LivenessProbe, "/healthz", true},
			{"readinessProbe", c.ReadinessProbe, "/readyz", true},
		} {
			if pc.p == nil {
				if pc.required {
					t.Errorf("%s: no %s; want an HTTP GET of %s", where, pc.kind, pc.path)
				}
				continue
			}
			g := pc.p.HTTPGet
			if g == nil {
				t.Errorf("%s: %s is not httpGet; want GET %s", where, pc.kind, pc.path)
				continue
			}
			if g.Path != pc.path {
				t.Errorf("%s: %s path: got %q; want %q", where, pc.kind, g.Path, pc.path)
			}
			if got := cmpScheme(g.Scheme); got != scheme {
				t.Errorf("%s: %s scheme: got %s; want %s", where, pc.kind, got, scheme)
			}
			if got := resolvePort(c, g.Port); got != port {
				t.Errorf("%s: %s port: got %s (%q); want the admin port %s", where, pc.kind, got, g.Port, port)
			}
		}
		ann := wc.w.template.Metadata.Annotations
		if ann["prometheus.io/scrape"] == "true" {
			if got := ann["prometheus.io/port"]; got != port {
				t.Errorf("%s: prometheus.io/port: got %q; want the admin port %s", where, got, port)
			}
			if got := ann["prometheus.io/path"]; got != "/metrics" {
				t.Errorf("%s: prometheus.io/path: got %q; want /metrics", where, got)
			}
			if got := strings.ToUpper(ann["prometheus.io/scheme"]); cmpScheme(got) != scheme {
				t.Errorf("%s: prometheus.io/scheme: got %q; want %s", where, ann["prometheus.io/scheme"], strings.ToLower(scheme))
			}
		}
	}
}

// cmpScheme is a probe scheme as Kubernetes reads it: HTTP when unset.
func cmpScheme(s string) string {
	if s == "" {
		return "HTTP"
	}
	return strings.ToUpper(s)
}

// under reports whether path is mountPath or inside it.
func under(path, mountPath string) bool {
	rel, err := filepath.Rel(mountPath, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func TestPodWiring(t *testing.T) {
	sets := loadAllManifests(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range sets {
		accounts := map[string]bool{"default": true}
		for _, d := range set.docs {
			if d.obj.Kind == "ServiceAccount" {
				accounts[d.obj.Metadata.Name] = true
			}
		}
		for _, w := range set.workloads {
			spec := w.template.Spec
			volumes := map[string]bool{}
			for _, v := range spec.Volumes {
				volumes[v.Name] = true
			}
			for _, c := range w.claims {
				volumes[c] = true
			}
			if sa := spec.ServiceAccountName; sa != "" && !accounts[sa] {
				t.Errorf("%v: serviceAccountName %s is not defined in %s/", w.doc, sa, set.dir)
			}
			if w.selector != nil {
				if len(w.selector.MatchLabels) == 0 || !selects(w.selector.MatchLabels, w.template.Metadata.Labels) {
					t.Errorf("%v: selector %v does not select its own pod labels %v", w.doc, w.selector.MatchLabels, w.template.Metadata.Labels)
				}
			}

			// Secrets a pod needs must be documented for whoever creates them.
			var secrets []string
			for _, v := range spec.Volumes {
				if v.Secret != nil {
					secrets = append(secrets, v.Secret.SecretName)
				}
				if v.Projected != nil {
					for _, s := range v.Projected.Sources {
						if s.Secret != nil {
							secrets = append(secrets, s.Secret.Name)
						}
					}
				}
			}

			for _, c := range spec.allContainers() {
				where := fmt.Sprintf("%v container %s", w.doc, c.Name)
				for _, m := range c.VolumeMounts {
					if !volumes[m.Name] {
						t.Errorf("%s: mounts volume %s, which the pod does not define", where, m.Name)
					}
				}
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						secrets = append(secrets, e.ValueFrom.SecretKeyRef.Name)
					}
				}
				for _, e := range c.EnvFrom {
					if e.SecretRef != nil {
						secrets = append(secrets, e.SecretRef.Name)
					}
				}
				if !c.isControlPlane() {
					continue
				}
				// Files the control plane reads or writes must be on a mount,
				// and its data directory on a writable one: the root
				// filesystem may be read-only, and the binary always creates
				// the data directory.
				for _, e := range c.Env {
					if !strings.HasPrefix(e.Name, "CAIRN_") || !strings.HasPrefix(e.Value, "/") {
						continue
					}
					mounted := slices.ContainsFunc(c.VolumeMounts, func(m volumeMount) bool {
						return under(e.Value, m.MountPath) && (e.Name != "CAIRN_DATA_DIR" || !m.ReadOnly)
					})
					if !mounted {
						t.Errorf("%s: %s=%s is on no (writable, for the data directory) volume mount", where, e.Name, e.Value)
					}
				}
				if sc := c.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
					if _, ok := c.env("CAIRN_DATA_DIR"); !ok {
						t.Errorf("%s: read-only root filesystem but no CAIRN_DATA_DIR on a volume; the default .cairn cannot be created", where)
					}
				}
				// Service links put <SERVICE>_PORT and the like into the
				// environment; for a Service named cairn-* that is CAIRN_*,
				// the namespace the binary reads its flags from.
				if l := spec.EnableServiceLinks; l == nil || *l {
					t.Errorf("%v: enableServiceLinks is not false; Service links would add CAIRN_* variables for cairn-* Services", w.doc)
				}
			}
			for _, s := range secrets {
				if !bytes.Contains(readme, []byte("`"+s+"`")) {
					t.Errorf("%v: uses Secret %s, which README.md does not describe", w.doc, s)
				}
			}
		}

		// Services and disruption budgets must select some pod.
		for _, d := range set.docs {
			var sel map[string]string
			switch d.obj.Kind {
			case "Service":
				var s struct {
					Spec struct {
						Selector map[string]string `yaml:"selector"`
					} `yaml:"spec"`
				}
				if err := d.node.Decode(&s); err != nil {
					t.Errorf("%v: %v", d, err)
					continue
				}
				sel = s.Spec.Selector
			case "PodDisruptionBudget":
				var p struct {
					Spec struct {
						Selector labelSelector `yaml:"selector"`
					} `yaml:"spec"`
				}
				if err := d.node.Decode(&p); err != nil {
					t.Errorf("%v: %v", d, err)
					continue
				}
				sel = p.Spec.Selector.MatchLabels
			default:
				continue
			}
			if len(sel) == 0 {
				t.Errorf("%v: no selector", d)
				continue
			}
			if !slices.ContainsFunc(set.workloads, func(w workload) bool { return selects(sel, w.template.Metadata.Labels) }) {
				t.Errorf("%v: selector %v matches no pod template in %s/", d, sel, set.dir)
			}
		}
	}
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestSystemdVerify runs systemd-analyze verify on each unit, with
// ExecStart pointed at a freshly built binary (verify insists the command
// exists). It is skipped where systemd-analyze is missing.
func TestSystemdVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not on PATH")
	}
	bin := controlPlane(t).bin
	units, _ := filepath.Glob("systemd/*.service")
	if len(units) == 0 {
		t.Fatal("no units in systemd/")
	}
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := sc.Text()
			if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "ExecStart" {
				if words := splitUnitWords(v); len(words) > 0 {
					line = "ExecStart=" + strings.Replace(v, words[0], bin, 1)
				}
			}
			sb.WriteString(line + "\n")
		}
		copyPath := filepath.Join(t.TempDir(), filepath.Base(u))
		if err := os.WriteFile(copyPath, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
		// verify only warns, exiting 0, about many mistakes (a bad value, an
		// unknown key): anything it says about the unit is a failure.
		if err != nil || bytes.Contains(out, []byte(filepath.Base(u))) {
			status := "exit 0, but"
			if err != nil {
				status = err.Error() + ";"
			}
			t.Errorf("systemd-analyze verify %s: %s it says:\n%s", u, status, out)
		}
	}
}

// TestChecksCatchMistakes runs the checks above on deliberate mistakes, so
// a change that makes them pass everything fails here.
func TestChecksCatchMistakes(t *testing.T) {
	const help = `usage: cairn-controlplane [flags]

Flags (each can also be set by the environment variable shown):
  --admin-addr  [$CAIRN_ADMIN_ADDR] (default ":7443")
      address of the admin API
  --database-url  [$CAIRN_DATABASE_URL]
      database
  --tls-cert  [$CAIRN_TLS_CERT]
      PEM certificate chain
  --log-level  [$CAIRN_LOG_LEVEL] (default "info")
      log level
`
	flags, err := parseHelp(help)
	if err != nil {
		t.Fatal(err)
	}
	if got := flags.byName["admin-addr"].def; got != ":7443" {
		t.Fatalf("admin-addr default: got %q; want %q", got, ":7443")
	}
	for _, tc := range []struct {
		name  string
		check func() []string
		bad   bool
	}{
		{"known variable", func() []string { return flags.checkVar("CAIRN_DATABASE_URL") }, false},
		{"runtime variable", func() []string { return flags.checkVar("GOMEMLIMIT") }, false},
		{"misspelt variable", func() []string { return flags.checkVar("CAIRN_DATABSE_URL") }, true},
		{"misspelt prefix", func() []string { return flags.checkVar("CARIN_DATABASE_URL") }, true},
		{"known flags", func() []string {
			return flags.checkArgs([]string{"--admin-addr=:1", "-log-level", "debug", "--tls-cert", "/x"})
		}, false},
		{"misspelt flag", func() []string { return flags.checkArgs([]string{"--databse-url=x"}) }, true},
		{"mention", func() []string { return flags.checkMentions("set CAIRN_LOG_LEVEL, or CAIRN_<FLAG> generally") }, false},
		{"misspelt mention", func() []string { return flags.checkMentions("see $CAIRN_DATABSE_URL") }, true},
		{"env file", func() []string { return flags.checkEnvFile("# c\n\nCAIRN_LOG_LEVEL=debug\nGOMAXPROCS=2\n") }, false},
		{"env file typo", func() []string { return flags.checkEnvFile("CAIRN_LOG_LEVL=debug\n") }, true},
		{"env file junk", func() []string { return flags.checkEnvFile("export\n") }, true},
		{"unit", func() []string {
			return flags.checkUnit("[Service]\nEnvironmentFile=-/etc/cairn/cp.env\nEnvironment=\"CAIRN_LOG_LEVEL=debug\" GOGC=50\nExecStart=/usr/bin/cairn-controlplane --log-level=debug\n", []string{"cp.env"})
		}, false},
		{"unit flag typo", func() []string {
			return flags.checkUnit("[Service]\nEnvironmentFile=/etc/cairn/cp.env\nExecStart=/usr/bin/cairn-controlplane --tls-certt=/x\n", []string{"cp.env"})
		}, true},
		{"unit variable typo", func() []string {
			return flags.checkUnit("[Service]\nEnvironmentFile=/etc/cairn/cp.env\nEnvironment=CAIRN_LOG_LEVL=debug\nExecStart=/usr/bin/cairn-controlplane\n", []string{"cp.env"})
		}, true},
		{"unit env file missing", func() []string {
			return flags.checkUnit("[Service]\nEnvironmentFile=/etc/cairn/other.env\nExecStart=/usr/bin/cairn-controlplane\n", []string{"cp.env"})
		}, true},
		{"unit runs something else", func() []string {
			return flags.checkUnit("[Service]\nEnvironmentFile=/etc/cairn/cp.env\nExecStart=/usr/bin/sleep 1\n", []string{"cp.env"})
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems := tc.check()
			if got := len(problems) > 0; got != tc.bad {
				t.Errorf("got problems %q; want problems: %v", problems, tc.bad)
			}
		})
	}

	if _, err := parseHelp("usage: cairn-controlplane [flags]\n"); err == nil {
		t.Error("parseHelp of a help text without flags: got no error; want one")
	}
	if _, err := parseHelp("  --admin-addr  [$CAIRN_ADMIN_ADR]\n"); err == nil {
		t.Error("parseHelp of a flag whose variable is not CAIRN_<NAME>: got no error; want one")
	}
}
