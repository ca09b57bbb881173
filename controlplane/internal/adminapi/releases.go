package adminapi

import (
	"context"
	"fmt"
	"regexp"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/versions"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// Release catalog limits.
const (
	maxReleaseNotes     = 4096
	maxConstraints      = 16
	maxRangeLen         = 200
	maxDefaultVersions  = 32
	maxPlanLen          = 63
	hostComponent       = "host"
	releaseProductField = "release.product"
)

// plan is what a plan name may be: "" (the fallback) or a label-like word.
var plan = regexp.MustCompile(`^([a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?)?$`)

type releases struct{ *Services }

func releasePB(r store.Release) *adminv1.Release {
	out := &adminv1.Release{Id: r.ID, Product: r.Product, Version: r.Version, State: adminv1.ReleaseState(r.State),
		Notes: r.Notes, Etag: r.Etag, CreateTime: timestamppb.New(r.CreateTime), UpdateTime: timestamppb.New(r.UpdateTime)}
	for _, c := range r.Constraints {
		out.Constraints = append(out.Constraints, &adminv1.Constraint{Component: c.Component, Range: c.Range})
	}
	return out
}

func channelPB(c store.Channel) *adminv1.Channel {
	return &adminv1.Channel{Id: c.ID, Product: c.Product, Name: c.Name, DefaultVersions: c.Defaults, Etag: c.Etag,
		CreateTime: timestamppb.New(c.CreateTime), UpdateTime: timestamppb.New(c.UpdateTime)}
}

// operatorWide refuses tenant-scoped callers: the catalog is shared by all
// tenants.
func operatorWide(ctx context.Context) (store.Actor, error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return store.Actor{}, err
	}
	if !p.OperatorWide() {
		return store.Actor{}, connect.NewError(connect.CodePermissionDenied, errOperatorOnly)
	}
	return actor, nil
}

func (v *violations) releaseVersion(field, s string) {
	if s == "" {
		v.add(field, "required")
		return
	}
	v.version(field, s)
	if _, err := versions.Parse(s); err != nil {
		v.add(field, "must be a semantic version MAJOR.MINOR.PATCH[-PRERELEASE] without a leading v")
	}
}

func (v *violations) releaseState(field string, s adminv1.ReleaseState) {
	if _, ok := adminv1.ReleaseState_name[int32(s)]; !ok || s == adminv1.ReleaseState_RELEASE_STATE_UNSPECIFIED {
		v.add(field, "must be CANDIDATE, STABLE, DEPRECATED or BLOCKED")
	}
}

func (v *violations) constraints(field string, cs []*adminv1.Constraint) []store.Constraint {
	if len(cs) > maxConstraints {
		v.add(field, "at most %d", maxConstraints)
	}
	out := make([]store.Constraint, 0, len(cs))
	for i, c := range cs {
		f := fmt.Sprintf("%s[%d]", field, i)
		if c.Component != hostComponent && !dnsLabel.MatchString(c.Component) {
			v.add(f+".component", "must be %q or a DNS label", hostComponent)
		}
		if len(c.Range) > maxRangeLen {
			v.add(f+".range", "at most %d characters", maxRangeLen)
		} else if _, err := versions.ParseRange(c.Range); err != nil {
			v.add(f+".range", "%v", err)
		}
		out = append(out, store.Constraint{Component: c.Component, Range: c.Range})
	}
	return out
}

func (v *violations) defaultVersions(field string, m map[string]string) {
	if len(m) > maxDefaultVersions {
		v.add(field, "at most %d", maxDefaultVersions)
	}
	for p, ver := range m {
		if len(p) > maxPlanLen || !plan.MatchString(p) {
			v.add(field, "plan %q: must be empty (the fallback) or lowercase letters, digits, '.', '_' or '-'", p)
		}
		v.releaseVersion(fmt.Sprintf("%s[%q]", field, p), ver)
	}
}

// validChannel checks a channel of a create or update request.
func validChannel(c *adminv1.Channel) error {
	var v violations
	if c == nil {
		v.add("channel", "required")
		return v.err()
	}
	v.name("channel.product", c.Product)
	v.name("channel.name", c.Name)
	v.defaultVersions("channel.default_versions", c.DefaultVersions)
	return v.err()
}

func (s *releases) CreateRelease(ctx context.Context, req *connect.Request[adminv1.CreateReleaseRequest]) (*connect.Response[adminv1.CreateReleaseResponse], error) {
	r := req.Msg.GetRelease()
	var v violations
	var cons []store.Constraint
	if r == nil {
		v.add("release", "required")
	} else {
		v.name(releaseProductField, r.Product)
		v.releaseVersion("release.version", r.Version)
		if r.State != adminv1.ReleaseState_RELEASE_STATE_UNSPECIFIED {
			v.releaseState("release.state", r.State)
		}
		v.maxLen("release.notes", r.Notes, maxReleaseNotes)
		cons = v.constraints("release.constraints", r.Constraints)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	state := int32(r.State)
	if state == 0 {
		state = store.ReleaseCandidate
	}
	out, err := s.st.CreateRelease(ctx, actor, store.Release{Product: r.Product, Version: r.Version, State: state, Notes: r.Notes, Constraints: cons})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.CreateReleaseResponse{Release: releasePB(out)}), nil
}

func (s *releases) GetRelease(ctx context.Context, req *connect.Request[adminv1.GetReleaseRequest]) (*connect.Response[adminv1.GetReleaseResponse], error) {
	if _, _, err := caller(ctx); err != nil {
		return nil, err
	}
	var v violations
	v.name("product", req.Msg.Product)
	v.releaseVersion("version", req.Msg.Version)
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.GetRelease(ctx, req.Msg.Product, req.Msg.Version)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.GetReleaseResponse{Release: releasePB(out)}), nil
}

func (s *releases) ListReleases(ctx context.Context, req *connect.Request[adminv1.ListReleasesRequest]) (*connect.Response[adminv1.ListReleasesResponse], error) {
	if _, _, err := caller(ctx); err != nil {
		return nil, err
	}
	var v violations
	v.name("product", req.Msg.Product)
	f := store.ReleaseFilter{Product: req.Msg.Product}
	for i, st := range req.Msg.States {
		v.releaseState(fmt.Sprintf("states[%d]", i), st)
		f.States = append(f.States, int32(st))
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	list, err := s.st.ListReleases(ctx, f)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListReleasesResponse{}
	for _, r := range list {
		resp.Releases = append(resp.Releases, releasePB(r))
	}
	return connect.NewResponse(resp), nil
}

func (s *releases) UpdateRelease(ctx context.Context, req *connect.Request[adminv1.UpdateReleaseRequest]) (*connect.Response[adminv1.UpdateReleaseResponse], error) {
	r := req.Msg.GetRelease()
	var v violations
	var fields map[string]bool
	var cons []store.Constraint
	if r == nil {
		v.add("release", "required")
	} else {
		v.name(releaseProductField, r.Product)
		v.releaseVersion("release.version", r.Version)
		fields = v.mask(req.Msg.UpdateMask, "state", "notes", "constraints")
		if fields["state"] {
			v.releaseState("release.state", r.State)
		}
		if fields["notes"] {
			v.maxLen("release.notes", r.Notes, maxReleaseNotes)
		}
		if fields["constraints"] {
			cons = v.constraints("release.constraints", r.Constraints)
		}
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.st.UpdateRelease(ctx, actor, r.Product, r.Version, r.Etag, func(cur *store.Release) error {
		if fields["state"] {
			cur.State = int32(r.State)
		}
		if fields["notes"] {
			cur.Notes = r.Notes
		}
		if fields["constraints"] {
			cur.Constraints = cons
		}
		return nil
	})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.UpdateReleaseResponse{Release: releasePB(out)}), nil
}

func (s *releases) CreateChannel(ctx context.Context, req *connect.Request[adminv1.CreateChannelRequest]) (*connect.Response[adminv1.CreateChannelResponse], error) {
	c := req.Msg.GetChannel()
	if err := validChannel(c); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.st.CreateChannel(ctx, actor, store.Channel{Product: c.Product, Name: c.Name, Defaults: c.DefaultVersions})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.CreateChannelResponse{Channel: channelPB(out)}), nil
}

func (s *releases) GetChannel(ctx context.Context, req *connect.Request[adminv1.GetChannelRequest]) (*connect.Response[adminv1.GetChannelResponse], error) {
	if _, _, err := caller(ctx); err != nil {
		return nil, err
	}
	var v violations
	v.name("product", req.Msg.Product)
	v.name("name", req.Msg.Name)
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.GetChannel(ctx, req.Msg.Product, req.Msg.Name)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.GetChannelResponse{Channel: channelPB(out)}), nil
}

func (s *releases) ListChannels(ctx context.Context, req *connect.Request[adminv1.ListChannelsRequest]) (*connect.Response[adminv1.ListChannelsResponse], error) {
	if _, _, err := caller(ctx); err != nil {
		return nil, err
	}
	var v violations
	v.name("product", req.Msg.Product)
	if err := v.err(); err != nil {
		return nil, err
	}
	list, err := s.st.ListChannels(ctx, req.Msg.Product)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListChannelsResponse{}
	for _, c := range list {
		resp.Channels = append(resp.Channels, channelPB(c))
	}
	return connect.NewResponse(resp), nil
}

func (s *releases) UpdateChannel(ctx context.Context, req *connect.Request[adminv1.UpdateChannelRequest]) (*connect.Response[adminv1.UpdateChannelResponse], error) {
	c := req.Msg.GetChannel()
	if err := validChannel(c); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.st.SetChannelDefaults(ctx, actor, c.Product, c.Name, c.Etag, c.DefaultVersions)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.UpdateChannelResponse{Channel: channelPB(out)}), nil
}
