// Package fakeworkloadapi serves the SPIFFE Workload API's X.509 part on a
// Unix socket, standing in for a SPIRE agent in tests: SPIRE cannot run on
// our build machines. It speaks the real protocol (go-spiffe's generated
// workload API), so the agent's go-spiffe client is exercised unchanged.
package fakeworkloadapi

import (
	"crypto"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Server is a fake Workload API.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	addr string

	mu      sync.Mutex
	resp    *workload.X509SVIDResponse
	changed chan struct{}
}

// Start serves on a new Unix socket until the test ends. The socket lives
// in a short temporary directory: Unix socket paths are limited to about
// 100 bytes, which t.TempDir can exceed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	dir, err := os.MkdirTemp("", "wlapi")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{addr: "unix://" + path, changed: make(chan struct{})}
	gs := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(gs, s)
	go func() { _ = gs.Serve(l) }()
	tb.Cleanup(gs.Stop)
	return s
}

// Addr is the socket address for go-spiffe, unix:///path.
func (s *Server) Addr() string { return s.addr }

// SetX509SVID makes the server hand out this SVID (and tell open streams).
func (s *Server) SetX509SVID(id spiffeid.ID, chain []*x509.Certificate, key crypto.Signer, bundle []*x509.Certificate) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	var chainDER, bundleDER []byte
	for _, c := range chain {
		chainDER = append(chainDER, c.Raw...)
	}
	for _, c := range bundle {
		bundleDER = append(bundleDER, c.Raw...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resp = &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId: id.String(), X509Svid: chainDER, X509SvidKey: keyDER, Bundle: bundleDER,
	}}}
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// FetchX509SVID implements the Workload API stream: the current SVID now
// and again on every change.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	// The real Workload API refuses calls without this header.
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	for {
		s.mu.Lock()
		resp, changed := s.resp, s.changed
		s.mu.Unlock()
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}
