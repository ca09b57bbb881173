package identity

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cairnhq/cairn/certs"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/h2frames"
)

// TestDialNoFlowControlPings: a connection from Dial has static HTTP/2
// windows, so what the control plane sends (deltas, heartbeats, answers)
// is not answered with grpc-go's bandwidth-delay PINGs, which the control
// plane would have to answer for every agent. The fake control plane
// records what the agent sends.
func TestDialNoFlowControlPings(t *testing.T) {
	cp := newCA(t)
	f := startFakeCP(t, cp)
	src, err := Enroll(context.Background(), enrollCfg(f.addr, filepath.Join(t.TempDir(), "identity"), Trust{Pin: cp.Pin()}))
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}

	var rec h2frames.Recorder
	srv := grpc.NewServer(grpc.Creds(rec.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{servingCert(t, cp, certs.ControlPlaneID(td), cp.Active())},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequestClientCert,
	}))), grpc.StaticStreamWindowSize(64<<10), grpc.StaticConnWindowSize(64<<10))
	agentv1.RegisterIdentityServiceServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := src.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := agentv1.NewIdentityServiceClient(conn)
	for range 5 {
		if err := src.Renew(context.Background(), client); err != nil {
			t.Fatalf("Renew: %v", err)
		}
	}
	pings, err := rec.Pings()
	if err != nil {
		t.Fatal(err)
	}
	if pings != 0 {
		t.Fatalf("the agent sent %d PING frames over 5 calls; want 0 (static flow-control windows)", pings)
	}
}
