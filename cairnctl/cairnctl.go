// Package cairnctl is the operators' command line over the admin API
// (Connect protocol): fleet questions as tables or JSON. It holds no state
// of its own and must not reach the store: everything goes through the
// API, with the caller's token and its role and tenant.
package cairnctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
	"github.com/cairnhq/cairn/internal/flagenv"
)

const envPrefix = "CAIRN"

const usage = `usage: cairnctl [global flags] <command> [flags]

Commands:
  clusters list [--query Q] [--tenant ID]     clusters an inventory query selects (--selector is --query)
  versions [--query Q] [--tenant ID]           what runs where: counts by version
  releases list --product P [--state S]        a product's releases, newest first
  channels list --product P                    a product's release channels

  rollout preview --product P --version V --shape S [shape and policy flags]
                                               the waves a rollout would have, and who is left out
  rollout start   (the same flags)             start it; prints the rollout's ID
  rollout status ID [--watch] [--interval 2s]  state, waves with progress bars, counts
  rollout list [--state running,paused]        rollouts, newest first
  rollout clusters ID [--state S,...] [--wave N]
                                               a rollout's clusters and where each stands
  rollout pause ID --reason R                  no new dispatches (in-flight ones finish)
  rollout resume ID
  rollout cancel ID [--reason R]               clusters not yet dispatched are skipped
  rollout rollback ID [--reason R]             cancel, and start a rollout back to the previous versions
  rollout pause-all --reason R                 pause every running rollout (incident button)
  rollout expedite ID CLUSTER_ID               move a pending cluster to the wave that runs now
  rollout edit ID [--concurrency N] [--failure-budget B] [--global-failure-budget B]

  exclusions list                              exclusions that have not expired
  exclusions create --scope cluster|data_plane|tenant --id ID --reason R --until T
                                               T: RFC 3339 time or a duration from now (72h, 3d)
  exclusions delete ID

Run a command with -h for its flags. Every command takes --json (here or after the
command): the API's response as JSON, lists one object per line.

Queries: labels as in label selectors (env=prod,tier in (gold,silver),!legacy) and
product, channel, tenant, data_plane, region, name, version, desired_version and
host_version (versions compared in semver order: version>=1.2.0,version<1.3.0).

Waves are numbered from 1 in tables and flags (the API's index is one less).

Exit codes: 0 success; 1 the API refused or failed, or a watched rollout was
cancelled; 2 bad usage (nothing was sent); 130 interrupted.

The API token comes from --token-file or CAIRN_TOKEN.`

// Run runs cairnctl and returns its exit code: 0 on success, 2 for bad
// usage (before any call), 1 when the API refused or failed or a watched
// rollout was cancelled, 130 when ctx ends (an interrupt).
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cairnctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "http://127.0.0.1:7443", "admin API base URL")
	tokenFile := fs.String("token-file", "", "file holding the API token (or set CAIRN_TOKEN)")
	caFile := fs.String("ca-file", "", "PEM CA certificates for an https server (default: the system's)")
	asJSON := fs.Bool("json", false, "print JSON (one object per line) instead of a table")
	fs.Usage = flagenv.Usage(fs, envPrefix, usage, stderr)
	if err := flagenv.Parse(fs, envPrefix, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	token := getenv("CAIRN_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintln(stderr, "cairnctl:", err)
			return 2
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		fmt.Fprintln(stderr, "cairnctl: an API token is needed: --token-file or CAIRN_TOKEN")
		return 2
	}
	hc, err := httpClient(*caFile)
	if err != nil {
		fmt.Fprintln(stderr, "cairnctl:", err)
		return 2
	}
	c := &client{
		clusters: adminv1connect.NewClusterServiceClient(hc, *server, bearer(token)),
		releases: adminv1connect.NewReleaseServiceClient(hc, *server, bearer(token)),
		rollouts: adminv1connect.NewRolloutServiceClient(hc, *server, bearer(token)),
		out:      stdout, json: *asJSON, tty: isTerminal(stdout, getenv), now: time.Now,
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	return c.run(ctx, rest, stderr, fs.Usage)
}

// run runs the command args names, after the global flags.
func (c *client) run(ctx context.Context, args []string, stderr io.Writer, usage func()) int {
	commands := map[string]func(context.Context, []string, io.Writer) error{
		"clusters list":     c.listClusters,
		"versions":          c.versions,
		"releases list":     c.listReleases,
		"channels list":     c.listChannels,
		"rollout preview":   c.previewRollout,
		"rollout start":     c.startRollout,
		"rollout status":    c.rolloutStatus,
		"rollout list":      c.listRollouts,
		"rollout clusters":  c.rolloutClusters,
		"rollout pause":     c.pauseRollout,
		"rollout resume":    c.resumeRollout,
		"rollout cancel":    c.cancelRollout,
		"rollout rollback":  c.rollbackRollout,
		"rollout pause-all": c.pauseAll,
		"rollout expedite":  c.expedite,
		"rollout edit":      c.editRollout,
		"exclusions list":   c.listExclusions,
		"exclusions create": c.createExclusion,
		"exclusions delete": c.deleteExclusion,
	}
	cmd, ok := commands[args[0]]
	rest := args[1:]
	if !ok && len(args) > 1 {
		cmd, ok = commands[args[0]+" "+args[1]]
		rest = args[2:]
	}
	if !ok {
		fmt.Fprintf(stderr, "cairnctl: unknown command %q\n", strings.Join(args, " "))
		usage()
		return 2
	}
	err := cmd(ctx, rest, stderr)
	var usageErr usageError
	var exit exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usageErr):
		fmt.Fprintln(stderr, "cairnctl:", err)
		return 2
	case errors.As(err, &exit):
		if exit.msg != "" {
			fmt.Fprintln(stderr, "cairnctl:", exit.msg)
		}
		return exit.code
	case ctx.Err() != nil:
		return 130
	}
	fmt.Fprintln(stderr, "cairnctl:", err)
	return 1
}

// usageError is a bad command line: exit 2, and nothing was sent.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// exitError ends cairnctl with code, after printing msg if there is one.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }

// isTerminal reports whether w is a terminal that takes ANSI redraws.
func isTerminal(w io.Writer, getenv func(string) string) bool {
	f, ok := w.(*os.File)
	if !ok || getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func httpClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return http.DefaultClient, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificates", caFile)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

func bearer(token string) connect.Option {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}))
}

type client struct {
	clusters adminv1connect.ClusterServiceClient
	releases adminv1connect.ReleaseServiceClient
	rollouts adminv1connect.RolloutServiceClient
	out      io.Writer
	json     bool
	// tty: out is a terminal, so a watch redraws in place.
	tty bool
	now func() time.Time
}

// parsed is a command line after its flags.
type parsed struct {
	args []string        // the positional arguments
	set  map[string]bool // the flags given
}

// flags parses a command's flags and its positional arguments (names, in
// order), which may come before, between or after the flags. Every command
// takes --json, as the global flag does.
func (c *client) flags(name string, args []string, stderr io.Writer, names []string, define func(*flag.FlagSet)) (parsed, error) {
	fs := flag.NewFlagSet("cairnctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.json, "json", c.json, "print JSON (the API's response; lists one object per line)")
	if define != nil {
		define(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: cairnctl %s [flags]\n\nFlags:\n", strings.Join(append([]string{name}, names...), " "))
		fs.PrintDefaults()
	}
	p := parsed{set: map[string]bool{}}
	for {
		if err := fs.Parse(args); err != nil {
			return p, usageError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			p.args = append(p.args, rest...)
			break
		}
		p.args = append(p.args, rest[0])
		args = rest[1:]
	}
	fs.Visit(func(f *flag.Flag) { p.set[f.Name] = true })
	switch {
	case len(p.args) > len(names):
		return p, usageError{fmt.Errorf("%s: unexpected arguments: %s", name, strings.Join(p.args[len(names):], " "))}
	case len(p.args) < len(names):
		return p, usageError{fmt.Errorf("%s: missing %s", name, strings.Join(names[len(p.args):], " "))}
	}
	for i, a := range p.args {
		if strings.TrimSpace(a) == "" {
			return p, usageError{fmt.Errorf("%s: %s is empty", name, names[i])}
		}
	}
	return p, nil
}

func (c *client) printJSON(m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.out, string(b))
	return err
}

// listAll reads every page of a List call (page takes a page token and
// returns the page's items and the next token). With --json it prints each
// item as a line and returns none; otherwise it returns them all.
func listAll[T proto.Message](c *client, page func(token string) ([]T, string, error)) ([]T, error) {
	var all []T
	for token := ""; ; {
		items, next, err := page(token)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			if !c.json {
				all = append(all, it)
			} else if err := c.printJSON(it); err != nil {
				return nil, err
			}
		}
		if token = next; token == "" {
			return all, nil
		}
	}
}

func (c *client) listClusters(ctx context.Context, args []string, stderr io.Writer) error {
	var query, selector, tenant string
	if _, err := c.flags("clusters list", args, stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&query, "query", "", "inventory query")
		fs.StringVar(&selector, "selector", "", "inventory query (the same as --query)")
		fs.StringVar(&tenant, "tenant", "", "only this tenant's clusters")
	}); err != nil {
		return err
	}
	if selector != "" {
		if query != "" && query != selector {
			return usageError{errors.New("clusters list: --selector is --query; give one")}
		}
		query = selector
	}
	all, err := listAll(c, func(token string) ([]*adminv1.Cluster, string, error) {
		resp, err := c.clusters.ListClusters(ctx, connect.NewRequest(&adminv1.ListClustersRequest{
			Query: query, TenantId: tenant, PageSize: 1000, PageToken: token}))
		if err != nil {
			return nil, "", err
		}
		return resp.Msg.Clusters, resp.Msg.NextPageToken, nil
	})
	if err != nil || c.json {
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPRODUCT\tCHANNEL\tDESIRED\tREPORTED\tHOST\tDATA PLANE\tID")
	for _, cl := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cl.Name, dash(cl.Product), dash(cl.Channel), dash(cl.DesiredVersion),
			dash(cl.ReportedVersion), dash(cl.HostVersion), cl.DataPlaneId, cl.Id)
	}
	return tw.Flush()
}

func (c *client) versions(ctx context.Context, args []string, stderr io.Writer) error {
	var query, tenant string
	if _, err := c.flags("versions", args, stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&query, "query", "", "inventory query")
		fs.StringVar(&tenant, "tenant", "", "only this tenant's clusters")
	}); err != nil {
		return err
	}
	resp, err := c.clusters.SummarizeVersions(ctx, connect.NewRequest(&adminv1.SummarizeVersionsRequest{Query: query, TenantId: tenant}))
	if err != nil {
		return err
	}
	s := resp.Msg
	if c.json {
		return c.printJSON(s)
	}
	fmt.Fprintf(c.out, "%d clusters, %d off their desired version, %d on a blocked release\n\n", s.Clusters, s.OffDesired, s.OnBlocked)
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tREPORTED\tDESIRED")
	rows := map[string][2]int64{}
	var order []string
	for i, list := range [][]*adminv1.VersionCount{s.Reported, s.Desired} {
		for _, vc := range list {
			r, seen := rows[vc.Version]
			if !seen {
				order = append(order, vc.Version)
			}
			r[i] = vc.Clusters
			rows[vc.Version] = r
		}
	}
	for _, v := range order {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", dashNone(v), rows[v][0], rows[v][1])
	}
	return tw.Flush()
}

func (c *client) listReleases(ctx context.Context, args []string, stderr io.Writer) error {
	var product, state string
	if _, err := c.flags("releases list", args, stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&product, "product", "", "product (required)")
		fs.StringVar(&state, "state", "", "only releases in this state: candidate, stable, deprecated or blocked")
	}); err != nil {
		return err
	}
	req := &adminv1.ListReleasesRequest{Product: product}
	if state != "" {
		v, ok := adminv1.ReleaseState_value["RELEASE_STATE_"+strings.ToUpper(state)]
		if !ok {
			return usageError{fmt.Errorf("--state %q: want candidate, stable, deprecated or blocked", state)}
		}
		req.States = []adminv1.ReleaseState{adminv1.ReleaseState(v)}
	}
	resp, err := c.releases.ListReleases(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	if !c.json {
		fmt.Fprintln(tw, "VERSION\tSTATE\tCONSTRAINTS\tNOTES")
	}
	for _, r := range resp.Msg.Releases {
		if c.json {
			if err := c.printJSON(r); err != nil {
				return err
			}
			continue
		}
		var cons []string
		for _, con := range r.Constraints {
			cons = append(cons, con.Component+" "+con.Range)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Version, strings.ToLower(strings.TrimPrefix(r.State.String(), "RELEASE_STATE_")),
			dash(strings.Join(cons, "; ")), firstLine(r.Notes))
	}
	return tw.Flush()
}

func (c *client) listChannels(ctx context.Context, args []string, stderr io.Writer) error {
	var product string
	if _, err := c.flags("channels list", args, stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&product, "product", "", "product (required)")
	}); err != nil {
		return err
	}
	resp, err := c.releases.ListChannels(ctx, connect.NewRequest(&adminv1.ListChannelsRequest{Product: product}))
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	if !c.json {
		fmt.Fprintln(tw, "CHANNEL\tPLAN\tDEFAULT VERSION")
	}
	for _, ch := range resp.Msg.Channels {
		if c.json {
			if err := c.printJSON(ch); err != nil {
				return err
			}
			continue
		}
		for plan, v := range ch.DefaultVersions {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", ch.Name, dashNone(plan), v)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dashNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
