package adminapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// TestOversizedRequest: with MaxMessageBytes at 64 KiB, a request message
// larger than that is refused with ResourceExhausted whatever the protocol,
// even when it arrives gzipped small, and nothing is written. A document
// under the limit is accepted, so it is the size that is refused.
func TestOversizedRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const limit = 64 << 10
	s := admintest.Start(t, admintest.Config{MaxMessageBytes: limit})
	acme := s.SeedTenant(t, "acme")

	create := func(c admintest.Clients, name string, size int) error {
		_, err := c.Configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
			Scope: dpScope(acme.DataPlane.Id), Kind: "cairn.dev/big", Name: name,
			Content: &adminv1.ConfigDocument_Raw{Raw: rawContent(strings.Repeat("x", size), "text/plain")}}}))
		return err
	}
	update := func(c admintest.Clients, _ string, size int) error {
		_, err := c.Configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
			Id: acme.ClusterDoc.Id, Content: &adminv1.UpdateConfigDocumentRequest_Raw{Raw: rawContent(strings.Repeat("x", size), "text/plain")}}))
		return err
	}
	for _, tc := range []struct {
		name  string
		proto admintest.Protocol
		opts  []connect.ClientOption
		call  func(c admintest.Clients, name string, size int) error
		size  int
		want  connect.Code
	}{
		{"connect just over", admintest.Connect, nil, create, limit + 100, connect.CodeResourceExhausted},
		{"grpc just over", admintest.GRPC, nil, create, limit + 100, connect.CodeResourceExhausted},
		{"connect gzip 1 MiB", admintest.Connect, []connect.ClientOption{connect.WithSendGzip()}, create, 1 << 20, connect.CodeResourceExhausted},
		{"grpc gzip 1 MiB", admintest.GRPC, []connect.ClientOption{connect.WithSendGzip()}, create, 1 << 20, connect.CodeResourceExhausted},
		{"grpc 4x over", admintest.GRPC, nil, create, 4 * limit, connect.CodeResourceExhausted},
		{"connect 16x over", admintest.Connect, nil, create, 16 * limit, connect.CodeResourceExhausted},
		{"connect update just over", admintest.Connect, nil, update, limit + 100, connect.CodeResourceExhausted},
		{"grpc gzip update 1 MiB", admintest.GRPC, []connect.ClientOption{connect.WithSendGzip()}, update, 1 << 20, connect.CodeResourceExhausted},
		{"connect under", admintest.Connect, nil, create, limit / 2, ok},
		{"grpc gzip under", admintest.GRPC, []connect.ClientOption{connect.WithSendGzip()}, create, limit - 1024, ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.Clients(tc.proto, s.OperatorToken, tc.opts...)
			before := auditIDs(t, s)
			name := fmt.Sprintf("doc-%d", len(before))
			err := tc.call(c, name, tc.size)
			wantCode(t, err, tc.want)
			if tc.want == ok {
				return
			}
			wantNoNewAudit(t, s, before)
			_, err = s.Operator().Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{
				Key: &adminv1.ConfigKey{Scope: dpScope(acme.DataPlane.Id), Kind: "cairn.dev/big", Name: name}}))
			wantCode(t, err, connect.CodeNotFound)
			got, err := s.Operator().Configs.GetConfigDocument(ctx, connect.NewRequest(&adminv1.GetConfigDocumentRequest{Id: acme.ClusterDoc.Id}))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(acme.ClusterDoc, got.Msg.Document, protocmp.Transform()); d != "" {
				t.Fatalf("refused update changed the document (-want +got):\n%s", d)
			}
		})
	}
}
