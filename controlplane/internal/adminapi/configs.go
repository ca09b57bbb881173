package adminapi

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

type configs struct{ *Services }

// structuredMediaType is the media type of Struct content, kept as JSON.
const structuredMediaType = "application/json"

func configPB(d store.ConfigDocument) *adminv1.ConfigDocument {
	out := &adminv1.ConfigDocument{
		Id: d.ID, TenantId: d.TenantID, Kind: d.Kind, Name: d.Name, Labels: d.Labels,
		Version: d.Version, Etag: d.Etag,
		CreateTime: timestamppb.New(d.CreateTime), UpdateTime: timestamppb.New(d.UpdateTime),
	}
	if d.ScopeType == store.ScopeCluster {
		out.Scope = &adminv1.ConfigScope{Target: &adminv1.ConfigScope_ClusterId{ClusterId: d.ScopeID}}
	} else {
		out.Scope = &adminv1.ConfigScope{Target: &adminv1.ConfigScope_DataPlaneId{DataPlaneId: d.ScopeID}}
	}
	st := &structpb.Struct{}
	if d.Structured && protojson.Unmarshal(d.Content, st) == nil {
		out.Content = &adminv1.ConfigDocument_Structured{Structured: st}
	} else {
		out.Content = &adminv1.ConfigDocument_Raw{Raw: &adminv1.RawContent{Data: d.Content, MediaType: d.MediaType}}
	}
	return out
}

// scope validates a scope and returns its store form.
func (v *violations) scope(field string, sc *adminv1.ConfigScope, required bool) (scopeType, scopeID string) {
	switch t := sc.GetTarget().(type) {
	case *adminv1.ConfigScope_DataPlaneId:
		v.id(field+".data_plane_id", t.DataPlaneId)
		return store.ScopeDataPlane, t.DataPlaneId
	case *adminv1.ConfigScope_ClusterId:
		v.id(field+".cluster_id", t.ClusterId)
		return store.ScopeCluster, t.ClusterId
	}
	if required {
		v.add(field, "required: set data_plane_id or cluster_id")
	}
	return "", ""
}

// content validates document content in either form and returns it as the
// store keeps it.
func (v *violations) content(field string, structured *structpb.Struct, raw *adminv1.RawContent) store.ConfigContent {
	switch {
	case structured != nil:
		b, err := protojson.Marshal(structured)
		if err != nil {
			v.add(field+".structured", "not valid JSON content: %v", err)
		} else if len(b) > maxContentBytes {
			v.add(field+".structured", "must be at most %d bytes as JSON", maxContentBytes)
		}
		return store.ConfigContent{Content: b, MediaType: structuredMediaType, Structured: true}
	case raw != nil:
		v.mediaType(field+".raw.media_type", raw.MediaType)
		if len(raw.Data) > maxContentBytes {
			v.add(field+".raw.data", "must be at most %d bytes", maxContentBytes)
		}
		data := raw.Data
		if data == nil {
			data = []byte{}
		}
		return store.ConfigContent{Content: data, MediaType: raw.MediaType}
	default:
		v.add(field, "required: set structured or raw")
		return store.ConfigContent{}
	}
}

func (s *configs) CreateConfigDocument(ctx context.Context, req *connect.Request[adminv1.CreateConfigDocumentRequest]) (*connect.Response[adminv1.CreateConfigDocumentResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	d := req.Msg.GetDocument()
	var v violations
	if d == nil {
		v.add("document", "required")
		return nil, v.err()
	}
	scopeType, scopeID := v.scope("document.scope", d.Scope, true)
	v.kind("document.kind", d.Kind)
	v.name("document.name", d.Name)
	v.labels("document.labels", d.Labels)
	c := v.content("document.content", d.GetStructured(), d.GetRaw())
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.CreateConfigDocument(ctx, actor, p.Visible(), store.ConfigDocument{
		ScopeType: scopeType, ScopeID: scopeID, Kind: d.Kind, Name: d.Name,
		Content: c.Content, MediaType: c.MediaType, Structured: c.Structured, Labels: d.Labels,
	})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.CreateConfigDocumentResponse{Document: configPB(out)}), nil
}

func (s *configs) GetConfigDocument(ctx context.Context, req *connect.Request[adminv1.GetConfigDocumentRequest]) (*connect.Response[adminv1.GetConfigDocumentResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	m := req.Msg
	var scopeType, scopeID string
	switch {
	case m.Id != "" && m.Key != nil:
		v.add("id", "set id or key, not both")
	case m.Id != "":
		v.id("id", m.Id)
	case m.Key != nil:
		scopeType, scopeID = v.scope("key.scope", m.Key.Scope, true)
		v.kind("key.kind", m.Key.Kind)
		v.name("key.name", m.Key.Name)
	default:
		v.add("id", "required: set id or key")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	var out store.ConfigDocument
	if m.Id != "" {
		out, err = s.st.GetConfigDocument(ctx, p.Visible(), m.Id)
	} else {
		out, err = s.st.GetConfigDocumentByKey(ctx, p.Visible(), scopeType, scopeID, m.Key.Kind, m.Key.Name)
	}
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.GetConfigDocumentResponse{Document: configPB(out)}), nil
}

func (s *configs) ListConfigDocuments(ctx context.Context, req *connect.Request[adminv1.ListConfigDocumentsRequest]) (*connect.Response[adminv1.ListConfigDocumentsResponse], error) {
	p, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	m := req.Msg
	page, sel := v.listArgs(m.PageSize, m.PageToken, m.LabelSelector)
	v.optionalID("tenant_id", m.TenantId)
	scopeType, scopeID := v.scope("scope", m.Scope, false)
	if m.Kind != "" {
		v.kind("kind", m.Kind)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	list, next, err := s.st.ListConfigDocuments(ctx, store.Filter{Visible: p.Visible(), TenantID: m.TenantId, Selector: sel},
		store.ConfigFilter{ScopeType: scopeType, ScopeID: scopeID, Kind: m.Kind}, page)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListConfigDocumentsResponse{NextPageToken: pageToken(next)}
	for _, d := range list {
		resp.Documents = append(resp.Documents, configPB(d))
	}
	return connect.NewResponse(resp), nil
}

func (s *configs) UpdateConfigDocument(ctx context.Context, req *connect.Request[adminv1.UpdateConfigDocumentRequest]) (*connect.Response[adminv1.UpdateConfigDocumentResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	var v violations
	v.id("id", m.Id)
	v.labels("labels", m.Labels)
	c := v.content("content", m.GetStructured(), m.GetRaw())
	c.Labels = m.Labels
	if err := v.err(); err != nil {
		return nil, err
	}
	out, err := s.st.UpdateConfigDocument(ctx, actor, p.Visible(), m.Id, m.Etag, c)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.UpdateConfigDocumentResponse{Document: configPB(out)}), nil
}

func (s *configs) DeleteConfigDocument(ctx context.Context, req *connect.Request[adminv1.DeleteConfigDocumentRequest]) (*connect.Response[adminv1.DeleteConfigDocumentResponse], error) {
	p, actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.st.DeleteConfigDocument(ctx, actor, p.Visible(), req.Msg.Id, req.Msg.Etag); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.DeleteConfigDocumentResponse{}), nil
}
