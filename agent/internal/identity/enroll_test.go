package identity

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

const testToken = "cairn_jt_test-join-token-secret"

// fakeCP is the agent API reduced to what Enroll and Renew need, served
// over real TLS with a serving SVID from a real CA. By default it signs
// whatever it is asked to for agent "agent-1"; tests replace the answers.
type fakeCP struct {
	agentv1.UnimplementedEnrollmentServiceServer
	agentv1.UnimplementedIdentityServiceServer
	ca   *ca.Authority
	addr string

	mu       sync.Mutex
	enrolls  []*agentv1.EnrollRequest
	renewals int
	// enroll and renew, if set, answer instead of the defaults.
	enroll func(*agentv1.EnrollRequest) (*agentv1.EnrollResponse, error)
	renew  func(id spiffeid.ID, req *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error)
}

func startFakeCP(tb testing.TB, a *ca.Authority) *fakeCP {
	tb.Helper()
	f := &fakeCP{ca: a}
	cert := servingCert(tb, a, certs.ControlPlaneID(td), a.Active())
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// The fake trusts whatever client certificate it gets; the real
		// server's checks are not what these tests are about.
		ClientAuth: tls.RequestClientCert,
	})))
	agentv1.RegisterEnrollmentServiceServer(srv, f)
	agentv1.RegisterIdentityServiceServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	f.addr = lis.Addr().String()
	go func() { _ = srv.Serve(lis) }()
	tb.Cleanup(srv.Stop)
	return f
}

func (f *fakeCP) Enroll(_ context.Context, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
	f.mu.Lock()
	f.enrolls = append(f.enrolls, req)
	answer := f.enroll
	f.mu.Unlock()
	if answer != nil {
		return answer(req)
	}
	return f.signEnroll(req.Csr, "agent-1")
}

// signEnroll answers an enrollment as the given agent, signing csr.
func (f *fakeCP) signEnroll(csr []byte, agent string) (*agentv1.EnrollResponse, error) {
	id, err := certs.AgentID(td, "tenant-1", "dp-1", agent)
	if err != nil {
		return nil, err
	}
	chain, err := f.ca.SignSVID(csr, id, time.Hour)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &agentv1.EnrollResponse{
		AgentId: agent, TenantId: "tenant-1", DataPlaneId: "dp-1", SpiffeId: id.String(),
		SvidChain: ders(chain), Bundle: ders(f.ca.BundleCerts()),
	}, nil
}

func (f *fakeCP) RenewSVID(ctx context.Context, req *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
	p, _ := peer.FromContext(ctx)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, status.Error(codes.Unauthenticated, "no client certificate")
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	f.mu.Lock()
	f.renewals++
	answer := f.renew
	f.mu.Unlock()
	if answer != nil {
		return answer(id, req)
	}
	chain, err := f.ca.SignSVID(req.Csr, id, time.Hour)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &agentv1.RenewSVIDResponse{SvidChain: ders(chain), Bundle: ders(f.ca.BundleCerts())}, nil
}

func (f *fakeCP) setEnroll(answer func(*agentv1.EnrollRequest) (*agentv1.EnrollResponse, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enroll = answer
}

func (f *fakeCP) setRenew(answer func(spiffeid.ID, *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renew = answer
}

func (f *fakeCP) lastEnroll() *agentv1.EnrollRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enrolls[len(f.enrolls)-1]
}

func (f *fakeCP) renewCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.renewals
}

func (f *fakeCP) enrollCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.enrolls)
}

func ders(cs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = c.Raw
	}
	return out
}

func enrollCfg(addr, dir string, trust Trust) EnrollConfig {
	return EnrollConfig{Addr: addr, Dir: dir, JoinToken: testToken, Trust: trust, Version: "1.2.3"}
}

func TestEnroll(t *testing.T) {
	cp := newCA(t)
	for _, tc := range []struct {
		name  string
		trust func(t *testing.T) Trust
	}{
		{"pin", func(t *testing.T) Trust { return Trust{Pin: cp.Pin()} }},
		{"bundle file", func(t *testing.T) Trust { return Trust{BundleFile: writeBundle(t, cp.Active())} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeCP(t, cp)
			dir := filepath.Join(t.TempDir(), "data", "identity")
			src, err := Enroll(context.Background(), enrollCfg(f.addr, dir, tc.trust(t)))
			if err != nil {
				t.Fatalf("Enroll: %v", err)
			}
			want := Info{AgentID: "agent-1", TenantID: "tenant-1", DataPlaneID: "dp-1", SPIFFEID: agentID(t, "agent-1").String()}
			if src.Info() != want {
				t.Fatalf("Info %+v; want %+v", src.Info(), want)
			}

			// What the control plane got: the token, our version and a
			// CSR for the key the SVID is for.
			if n := f.enrollCount(); n != 1 {
				t.Fatalf("control plane saw %d enrollments; want 1", n)
			}
			req := f.lastEnroll()
			if req.JoinToken != testToken || req.AgentVersion != "1.2.3" {
				t.Errorf("request token %q, version %q; want %q, %q", req.JoinToken, req.AgentVersion, testToken, "1.2.3")
			}
			csr, err := x509.ParseCertificateRequest(req.Csr)
			if err != nil {
				t.Fatal(err)
			}
			if pub, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(src.SVID().Certificates[0].PublicKey) {
				t.Error("the SVID is not for the CSR's key")
			}

			// On disk: private files, no join token, and Load agrees.
			for name, mode := range map[string]os.FileMode{svidFile: 0o600, infoFile: 0o600, bundleFile: 0o644} {
				p := filepath.Join(dir, name)
				if got := fileMode(t, p); got != mode {
					t.Errorf("%s mode %v; want %v", name, got, mode)
				}
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(b), testToken) {
					t.Errorf("%s holds the join token", name)
				}
			}
			for _, d := range []string{dir, filepath.Dir(dir)} {
				if got := fileMode(t, d); got != 0o700 {
					t.Errorf("%s mode %v; want 0700", d, got)
				}
			}
			loaded, err := Load(dir)
			if err != nil {
				t.Fatalf("Load after Enroll: %v", err)
			}
			if loaded.Info() != want || !loaded.SVID().Certificates[0].Equal(src.SVID().Certificates[0]) {
				t.Fatal("Load does not give back the enrolled identity")
			}
		})
	}
}

func TestEnrollRequiredFields(t *testing.T) {
	trust := Trust{Pin: newCA(t).Pin()}
	for _, cfg := range []EnrollConfig{
		{Dir: t.TempDir(), JoinToken: testToken, Trust: trust},
		{Addr: "127.0.0.1:1", JoinToken: testToken, Trust: trust},
		{Addr: "127.0.0.1:1", Dir: t.TempDir(), Trust: trust},
	} {
		if _, err := Enroll(context.Background(), cfg); err == nil {
			t.Errorf("Enroll(%+v) succeeded; want an error", cfg)
		}
	}
}

// TestEnrollUntrustedSendsNoToken: when the control plane is not the one
// the pin or bundle names, the join token must never reach it.
func TestEnrollUntrustedSendsNoToken(t *testing.T) {
	cp, other := newCA(t), newCA(t)
	f := startFakeCP(t, cp)
	for name, trust := range map[string]Trust{
		"pin of another CA":         {Pin: other.Pin()},
		"bundle file of another CA": {BundleFile: writeBundle(t, other.Active())},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "identity")
			_, err := Enroll(context.Background(), enrollCfg(f.addr, dir, trust))
			if err == nil {
				t.Fatal("Enroll succeeded against an untrusted control plane")
			}
			t.Logf("Enroll: %v (code %v)", err, status.Code(err))
			if n := f.enrollCount(); n != 0 {
				t.Fatalf("untrusted control plane received %d enrollment requests; want 0", n)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("identity directory after a refused enrollment: %v; want none", err)
			}
		})
	}
}

// TestEnrollRefusesBadAnswers: whatever the control plane answers, the
// agent persists nothing it could not use.
func TestEnrollRefusesBadAnswers(t *testing.T) {
	cp, other := newCA(t), newCA(t)
	for _, tc := range []struct {
		name   string
		answer func(f *fakeCP, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error)
		code   codes.Code // if not OK, the status code Enroll must keep
	}{
		{"refusal", func(*fakeCP, *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
			return nil, status.Error(codes.Unauthenticated, "join token is invalid, used or expired")
		}, codes.Unauthenticated},
		{"SVID for another key", func(f *fakeCP, _ *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
			_, csr := newKeyCSR(t)
			return f.signEnroll(csr, "agent-1")
		}, codes.OK},
		{"SVID for another agent than spiffe_id", func(f *fakeCP, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
			resp, err := f.signEnroll(req.Csr, "agent-2")
			resp.SpiffeId = agentID(t, "agent-1").String()
			return resp, err
		}, codes.OK},
		{"bundle that does not verify the SVID", func(f *fakeCP, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
			resp, err := f.signEnroll(req.Csr, "agent-1")
			resp.Bundle = ders(other.BundleCerts())
			return resp, err
		}, codes.OK},
		{"no bundle", func(f *fakeCP, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
			resp, err := f.signEnroll(req.Csr, "agent-1")
			resp.Bundle = nil
			return resp, err
		}, codes.OK},
		{"no SVID", func(f *fakeCP, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
			resp, err := f.signEnroll(req.Csr, "agent-1")
			resp.SvidChain = nil
			return resp, err
		}, codes.OK},
		{"garbage SVID", func(f *fakeCP, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
			resp, err := f.signEnroll(req.Csr, "agent-1")
			resp.SvidChain = [][]byte{[]byte("garbage")}
			return resp, err
		}, codes.OK},
		{"bad spiffe_id", func(f *fakeCP, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
			resp, err := f.signEnroll(req.Csr, "agent-1")
			resp.SpiffeId = "not a SPIFFE ID"
			return resp, err
		}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeCP(t, cp)
			f.setEnroll(func(req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) { return tc.answer(f, req) })
			dir := filepath.Join(t.TempDir(), "identity")
			_, err := Enroll(context.Background(), enrollCfg(f.addr, dir, Trust{Pin: cp.Pin()}))
			if err == nil {
				t.Fatal("Enroll succeeded; want an error")
			}
			if tc.code != codes.OK && status.Code(err) != tc.code {
				t.Errorf("status code %v; want %v (the daemon decides on it)", status.Code(err), tc.code)
			}
			if _, err := Load(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Load after a refused enrollment: %v; want not enrolled", err)
			}
		})
	}
}

// enrolled returns an enrolled Source and its fake control plane, and a
// client of the identity service over the Source's mTLS.
func enrolled(t *testing.T, cp *ca.Authority) (*Source, *fakeCP, agentv1.IdentityServiceClient) {
	t.Helper()
	f := startFakeCP(t, cp)
	dir := filepath.Join(t.TempDir(), "identity")
	src, err := Enroll(context.Background(), enrollCfg(f.addr, dir, Trust{Pin: cp.Pin()}))
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	conn, err := src.Dial(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return src, f, agentv1.NewIdentityServiceClient(conn)
}

func TestRenew(t *testing.T) {
	cp := newCA(t)
	src, f, client := enrolled(t, cp)
	old := src.SVID()
	if err := src.Renew(context.Background(), client); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if n := f.renewCount(); n != 1 {
		t.Fatalf("control plane saw %d renewals; want 1", n)
	}
	got := src.SVID()
	if got.Certificates[0].SerialNumber.Cmp(old.Certificates[0].SerialNumber) == 0 {
		t.Fatal("SVID serial unchanged after Renew")
	}
	if sameKey(got.PrivateKey, old.PrivateKey) {
		t.Fatal("Renew kept the old key; want a new one")
	}
	if got.ID != old.ID {
		t.Fatalf("renewed SVID names %v; want %v", got.ID, old.ID)
	}
	loaded, err := Load(src.dir)
	if err != nil {
		t.Fatalf("Load after Renew: %v", err)
	}
	if !loaded.SVID().Certificates[0].Equal(got.Certificates[0]) || !sameKey(loaded.SVID().PrivateKey, got.PrivateKey) {
		t.Fatal("svid.pem does not hold the renewed SVID and key")
	}
	if m := fileMode(t, filepath.Join(src.dir, svidFile)); m != 0o600 {
		t.Fatalf("svid.pem mode %v after Renew; want 0600", m)
	}
	// The renewed SVID works for the next call.
	if err := src.Renew(context.Background(), client); err != nil {
		t.Fatalf("second Renew: %v", err)
	}
}

func TestRenewRefusesBadAnswers(t *testing.T) {
	cp, other := newCA(t), newCA(t)
	for _, tc := range []struct {
		name   string
		answer func(f *fakeCP, id spiffeid.ID, req *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error)
		code   codes.Code
	}{
		{"revoked", func(*fakeCP, spiffeid.ID, *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
			return nil, status.Error(codes.PermissionDenied, "agent revoked")
		}, codes.PermissionDenied},
		{"unavailable", func(*fakeCP, spiffeid.ID, *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
			return nil, status.Error(codes.Unavailable, "try later")
		}, codes.Unavailable},
		{"SVID for another agent", func(f *fakeCP, _ spiffeid.ID, req *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
			chain, err := f.ca.SignSVID(req.Csr, agentID(t, "agent-2"), time.Hour)
			return &agentv1.RenewSVIDResponse{SvidChain: ders(chain), Bundle: ders(f.ca.BundleCerts())}, err
		}, codes.OK},
		{"SVID of another CA", func(_ *fakeCP, id spiffeid.ID, req *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
			chain, err := other.SignSVID(req.Csr, id, time.Hour)
			return &agentv1.RenewSVIDResponse{SvidChain: ders(chain), Bundle: ders(cp.BundleCerts())}, err
		}, codes.OK},
		{"empty answer", func(*fakeCP, spiffeid.ID, *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
			return &agentv1.RenewSVIDResponse{}, nil
		}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, f, client := enrolled(t, cp)
			f.setRenew(func(id spiffeid.ID, req *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
				return tc.answer(f, id, req)
			})
			before := src.SVID()
			onDisk, err := os.ReadFile(filepath.Join(src.dir, svidFile))
			if err != nil {
				t.Fatal(err)
			}
			err = src.Renew(context.Background(), client)
			if err == nil {
				t.Fatal("Renew succeeded; want an error")
			}
			if tc.code != codes.OK && status.Code(err) != tc.code {
				t.Errorf("status code %v; want %v (the daemon decides on it)", status.Code(err), tc.code)
			}
			if src.SVID() != before {
				t.Error("SVID changed after a failed renewal")
			}
			if after, _ := os.ReadFile(filepath.Join(src.dir, svidFile)); string(after) != string(onDisk) {
				t.Error("svid.pem changed after a failed renewal")
			}
		})
	}
}

// TestRenewRefusesSVIDForAnotherKey: a renewal answer certifying some
// other key must not replace the working SVID: persisted, it would make
// every later handshake fail, and a restart would not help.
func TestRenewRefusesSVIDForAnotherKey(t *testing.T) {
	cp := newCA(t)
	src, f, client := enrolled(t, cp)
	f.setRenew(func(id spiffeid.ID, _ *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
		_, csr := newKeyCSR(t)
		chain, err := f.ca.SignSVID(csr, id, time.Hour)
		return &agentv1.RenewSVIDResponse{SvidChain: ders(chain), Bundle: ders(f.ca.BundleCerts())}, err
	})
	before := src.SVID()
	if err := src.Renew(context.Background(), client); err == nil {
		t.Error("Renew accepted an SVID for a key it did not make")
	}
	if src.SVID() != before {
		t.Fatal("the SVID was replaced by one for another key")
	}
}
