package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cairnhq/cairn/certs"
)

// Trust is how an agent that has not enrolled yet authenticates the
// control plane: a CA bundle file, or a pin of the CA's public key, given
// out of band. Exactly one is set.
type Trust struct {
	// BundleFile is a PEM file of CA certificates.
	BundleFile string
	// Pin is "sha256:<hex>" of a CA's SubjectPublicKeyInfo.
	Pin string
}

func (t Trust) check() error {
	switch {
	case (t.BundleFile == "") == (t.Pin == ""):
		return errors.New("give exactly one of a CA bundle file and a CA pin")
	case t.Pin != "":
		return certs.CheckPin(t.Pin)
	}
	return nil
}

// ErrUntrusted: the control plane's certificate failed the CA bundle or
// pin check at enrollment. Retrying does not help.
var ErrUntrusted = errors.New("the control plane's certificate is not trusted by the given CA bundle or pin")

// trustResult remembers why the handshake's verification failed, since
// grpc reports only a generic transport error.
type trustResult struct {
	mu  sync.Mutex
	err error
}

func (r *trustResult) set(err error) error {
	if err != nil {
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
	}
	return err
}

func (r *trustResult) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// tlsConfig verifies the control plane's serving SVID before enrollment:
// its chain must lead to a trusted CA (from the bundle file, or the
// pinned CA found in the presented chain), and its SPIFFE ID must be the
// control plane's.
func (t Trust) tlsConfig() (*tls.Config, *trustResult, error) {
	if err := t.check(); err != nil {
		return nil, nil, err
	}
	result := &trustResult{}
	var fileCAs []*x509.Certificate
	if t.BundleFile != "" {
		b, err := os.ReadFile(t.BundleFile)
		if err != nil {
			return nil, nil, fmt.Errorf("CA bundle: %w", err)
		}
		if fileCAs, err = certs.ParseCertsPEM(b); err != nil {
			return nil, nil, fmt.Errorf("CA bundle %s: %w", t.BundleFile, err)
		}
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		var chain []*x509.Certificate
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("control plane certificate: %w", err)
			}
			chain = append(chain, c)
		}
		if len(chain) == 0 {
			return errors.New("control plane sent no certificate")
		}
		cas := fileCAs
		if t.Pin != "" {
			ca, ok := certs.MatchPin(chain[1:], t.Pin)
			if !ok {
				return errors.New("no certificate from the control plane matches the CA pin")
			}
			cas = []*x509.Certificate{ca}
		}
		id, err := x509svid.IDFromCert(chain[0])
		if err != nil {
			return fmt.Errorf("control plane certificate is not an X.509-SVID: %w", err)
		}
		// Verify only the leaf and intermediates: a CA the server appends
		// must be trusted through the bundle or pin, not by its presence.
		leafChain := chain[:1]
		if _, _, err := x509svid.Verify(leafChain, x509bundle.FromX509Authorities(id.TrustDomain(), cas)); err != nil {
			return fmt.Errorf("control plane certificate: %w", err)
		}
		if id != controlPlaneID(id.TrustDomain()) {
			return fmt.Errorf("control plane certificate names %s, not the control plane", id)
		}
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is done above, by SPIFFE rules rather than host
		// names: agents may reach the control plane by any address.
		InsecureSkipVerify: true, //nolint:gosec // replaced by verify
		VerifyPeerCertificate: func(raw [][]byte, chains [][]*x509.Certificate) error {
			return result.set(verify(raw, chains))
		},
	}, result, nil
}

func controlPlaneID(td spiffeid.TrustDomain) spiffeid.ID {
	return certs.ControlPlaneID(td)
}

// MTLSConfig is the TLS configuration for every call after enrollment:
// the current SVID as client certificate, and the control plane
// authorized by its SPIFFE ID against the current bundle.
func (s *Source) MTLSConfig() *tls.Config {
	return tlsconfig.MTLSClientConfig(s, s, tlsconfig.AuthorizeID(controlPlaneID(s.td)))
}

// Static HTTP/2 receive windows for the agent API connection. grpc-go's
// default bandwidth-delay estimation answers the first data frame after
// each of its measurements with a window update and a PING the control
// plane must answer: for every delta and heartbeat, two more writes and
// reads on each side, multiplied by every agent of the fleet. 4 MiB lets a
// snapshot stream at about 40 MB/s over a 100 ms round trip.
const (
	streamWindow = 4 << 20
	connWindow   = 4 << 20
)

// Dial opens a gRPC connection to the agent API with mTLS and static
// flow-control windows.
func (s *Source) Dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(s.MTLSConfig())),
		grpc.WithStaticStreamWindowSize(streamWindow),
		grpc.WithStaticConnWindowSize(connWindow),
	}, opts...)
	return grpc.NewClient(addr, opts...)
}

func hostname() string {
	h, _ := os.Hostname()
	return strings.TrimSpace(h)
}
