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
  clusters list [--query Q] [--tenant ID]     clusters an inventory query selects
  versions [--query Q] [--tenant ID]           what runs where: counts by version
  releases list --product P [--state S]        a product's releases, newest first
  channels list --product P                    a product's release channels

Queries: labels as in label selectors (env=prod,tier in (gold,silver),!legacy) and
product, channel, tenant, data_plane, region, name, version, desired_version and
host_version (versions compared in semver order: version>=1.2.0,version<1.3.0).

The API token comes from --token-file or CAIRN_TOKEN.`

// Run runs cairnctl and returns its exit code: 0 on success, 2 for bad
// usage, 1 when the API refused or failed.
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
	c := client{
		clusters: adminv1connect.NewClusterServiceClient(hc, *server, bearer(token)),
		releases: adminv1connect.NewReleaseServiceClient(hc, *server, bearer(token)),
		out:      stdout, json: *asJSON,
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	var run func(context.Context, []string, io.Writer) error
	switch {
	case rest[0] == "clusters" && len(rest) > 1 && rest[1] == "list":
		run, rest = c.listClusters, rest[2:]
	case rest[0] == "versions":
		run, rest = c.versions, rest[1:]
	case rest[0] == "releases" && len(rest) > 1 && rest[1] == "list":
		run, rest = c.listReleases, rest[2:]
	case rest[0] == "channels" && len(rest) > 1 && rest[1] == "list":
		run, rest = c.listChannels, rest[2:]
	default:
		fmt.Fprintf(stderr, "cairnctl: unknown command %q\n", strings.Join(rest, " "))
		fs.Usage()
		return 2
	}
	if err := run(ctx, rest, stderr); err != nil {
		var usageErr usageError
		if errors.As(err, &usageErr) {
			fmt.Fprintln(stderr, "cairnctl:", err)
			return 2
		}
		fmt.Fprintln(stderr, "cairnctl:", err)
		return 1
	}
	return 0
}

type usageError struct{ error }

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
	out      io.Writer
	json     bool
}

// subFlags parses a command's flags.
func subFlags(name string, args []string, stderr io.Writer, define func(*flag.FlagSet)) error {
	fs := flag.NewFlagSet("cairnctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	define(fs)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	return nil
}

func (c client) printJSON(m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.out, string(b))
	return err
}

func (c client) listClusters(ctx context.Context, args []string, stderr io.Writer) error {
	var query, tenant string
	if err := subFlags("clusters list", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&query, "query", "", "inventory query")
		fs.StringVar(&tenant, "tenant", "", "only this tenant's clusters")
	}); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	if !c.json {
		fmt.Fprintln(tw, "NAME\tPRODUCT\tCHANNEL\tDESIRED\tREPORTED\tHOST\tDATA PLANE\tID")
	}
	token := ""
	for {
		resp, err := c.clusters.ListClusters(ctx, connect.NewRequest(&adminv1.ListClustersRequest{
			Query: query, TenantId: tenant, PageSize: 1000, PageToken: token}))
		if err != nil {
			return err
		}
		for _, cl := range resp.Msg.Clusters {
			if c.json {
				if err := c.printJSON(cl); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cl.Name, dash(cl.Product), dash(cl.Channel), dash(cl.DesiredVersion),
				dash(cl.ReportedVersion), dash(cl.HostVersion), cl.DataPlaneId, cl.Id)
		}
		if token = resp.Msg.NextPageToken; token == "" {
			break
		}
	}
	return tw.Flush()
}

func (c client) versions(ctx context.Context, args []string, stderr io.Writer) error {
	var query, tenant string
	if err := subFlags("versions", args, stderr, func(fs *flag.FlagSet) {
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

func (c client) listReleases(ctx context.Context, args []string, stderr io.Writer) error {
	var product, state string
	if err := subFlags("releases list", args, stderr, func(fs *flag.FlagSet) {
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

func (c client) listChannels(ctx context.Context, args []string, stderr io.Writer) error {
	var product string
	if err := subFlags("channels list", args, stderr, func(fs *flag.FlagSet) {
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
