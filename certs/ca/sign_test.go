package ca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestSignSVID(t *testing.T) {
	clock := newClock()
	a := mustOpen(t, testConfig(t, t.TempDir(), clock))
	now := clock.Now()
	id := agentID(t, "a1")
	key, csr := newCSR(t)

	chain, err := a.SignSVID(csr, id, time.Hour)
	if err != nil {
		t.Fatalf("SignSVID: %v", err)
	}
	if len(chain) != 1 {
		t.Fatalf("got chain of %d; want [leaf]", len(chain))
	}
	if err := verify(t, chain, a.Bundle(), now, id); err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	leaf, caCert := chain[0], a.Active()
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"IsCA", leaf.IsCA, false},
		{"BasicConstraintsValid", leaf.BasicConstraintsValid, true},
		{"URI SANs", len(leaf.URIs), 1},
		{"URI SAN", leaf.URIs[0].String(), id.String()},
		{"other SANs", len(leaf.DNSNames) + len(leaf.IPAddresses) + len(leaf.EmailAddresses), 0},
		{"KeyUsage", leaf.KeyUsage, x509.KeyUsageDigitalSignature},
		{"ExtKeyUsage", slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}), true},
		{"NotBefore", leaf.NotBefore, now.Add(-30 * time.Second)},
		{"NotAfter", leaf.NotAfter, now.Add(time.Hour)},
		{"AuthorityKeyId", string(leaf.AuthorityKeyId), string(caCert.SubjectKeyId)},
		{"O", slices.Equal(leaf.Subject.Organization, []string{"Cairn"}), true},
		{"serial", leaf.SerialNumber.Sign() > 0 && leaf.SerialNumber.BitLen() <= 128, true},
		{"public key", key.PublicKey.Equal(leaf.PublicKey), true},
		{"signed by active", signedBy(leaf, caCert), true},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v; want %v", tc.name, tc.got, tc.want)
		}
	}

	// Two SVIDs never share a serial.
	other := mustSign(t, a, id, time.Hour)[0]
	if other.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Errorf("two SVIDs with serial %v", leaf.SerialNumber)
	}
	// Expired SVIDs stop verifying.
	if err := verify(t, chain, a.Bundle(), now.Add(time.Hour+time.Second), id); err == nil {
		t.Errorf("Verify after NotAfter: got nil error; want error")
	}
}

func TestSignSVIDAccepts(t *testing.T) {
	clock := newClock()
	a := mustOpen(t, testConfig(t, t.TempDir(), clock))
	id := agentID(t, "a1")
	for _, tc := range []struct {
		name string
		tmpl *x509.CertificateRequest
	}{
		{"URI SAN equal to the id", &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}},
		{"subject is ignored", &x509.CertificateRequest{Subject: pkix.Name{CommonName: "root", Organization: []string{"Evil"}}}},
		{"CA=false basic constraints", &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraints(t, false)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			chain, err := a.SignSVID(csrFor(t, tc.tmpl, key), id, time.Hour)
			if err != nil {
				t.Fatalf("SignSVID: %v", err)
			}
			if err := verify(t, chain, a.Bundle(), clock.Now(), id); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if got := chain[0].Subject.CommonName; got != "" {
				t.Errorf("CN: got %q; want empty", got)
			}
		})
	}
}

func TestSignSVIDCappedByCA(t *testing.T) {
	clock := newClock()
	cfg := testConfig(t, t.TempDir(), clock)
	cfg.CATTL = 6 * day
	a := mustOpen(t, cfg)
	caCert := a.Active()
	clock.Set(caCert.NotAfter.Add(-time.Hour))
	id := agentID(t, "a1")

	chain := mustSign(t, a, id, day)
	if got, want := chain[0].NotAfter, caCert.NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter: got %v; want the CA's %v", got, want)
	}
	if err := verify(t, chain, a.Bundle(), clock.Now(), id); err != nil {
		t.Errorf("Verify: %v", err)
	}

	clock.Set(caCert.NotAfter)
	_, csr := newCSR(t)
	if _, err := a.SignSVID(csr, id, time.Hour); err == nil {
		t.Errorf("SignSVID with an expired active CA: got nil error; want error")
	}
}

func TestSignSVIDRefuses(t *testing.T) {
	clock := newClock()
	a := mustOpen(t, testConfig(t, t.TempDir(), clock))
	id := agentID(t, "a1")
	p256 := func() crypto.Signer {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, good := newCSR(t)
	tampered := slices.Clone(good)
	tampered[len(tampered)-1] ^= 0x01
	otherTD := spiffeid.RequireFromSegments(spiffeid.RequireTrustDomainFromString("other.test"), "tenant", "t", "dataplane", "d", "agent", "a1")

	for _, tc := range []struct {
		name string
		csr  []byte
		id   spiffeid.ID
		ttl  time.Duration
		want error // nil: an error that is neither CSR sentinel
	}{
		{"CA=true basic constraints", csrFor(t, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraints(t, true)}}, p256()), id, time.Hour, ca.ErrCSRForbidden},
		{"other URI SAN", csrFor(t, &x509.CertificateRequest{URIs: []*url.URL{agentID(t, "a2").URL()}}, p256()), id, time.Hour, ca.ErrCSRForbidden},
		{"id plus another URI SAN", csrFor(t, &x509.CertificateRequest{URIs: []*url.URL{id.URL(), agentID(t, "a2").URL()}}, p256()), id, time.Hour, ca.ErrCSRForbidden},
		{"DNS SAN", csrFor(t, &x509.CertificateRequest{DNSNames: []string{"controlplane.cairn.test"}}, p256()), id, time.Hour, ca.ErrCSRForbidden},
		{"IP SAN", csrFor(t, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}, p256()), id, time.Hour, ca.ErrCSRForbidden},
		{"email SAN", csrFor(t, &x509.CertificateRequest{EmailAddresses: []string{"a@cairn.test"}}, p256()), id, time.Hour, ca.ErrCSRForbidden},
		{"registeredID SAN", csrFor(t, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{registeredIDSAN(t)}}, p256()), id, time.Hour, ca.ErrCSRForbidden},
		{"tampered signature", tampered, id, time.Hour, ca.ErrCSRInvalid},
		{"not a CSR", []byte("hello"), id, time.Hour, ca.ErrCSRInvalid},
		{"empty", nil, id, time.Hour, ca.ErrCSRInvalid},
		{"Ed25519 key", csrFor(t, &x509.CertificateRequest{}, ed25519Key(t)), id, time.Hour, ca.ErrCSRInvalid},
		{"P-384 key", csrFor(t, &x509.CertificateRequest{}, p384Key(t)), id, time.Hour, ca.ErrCSRInvalid},
		{"id in another trust domain", good, otherTD, time.Hour, nil},
		{"trust domain id", good, td.ID(), time.Hour, nil},
		{"zero id", good, spiffeid.ID{}, time.Hour, nil},
		{"ttl 0", good, id, 0, nil},
		{"negative ttl", good, id, -time.Hour, nil},
		{"ttl over max", good, id, day + time.Second, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := a.SignSVID(tc.csr, tc.id, tc.ttl)
			if err == nil {
				t.Fatalf("got %d certificates, nil error; want error", len(chain))
			}
			isInvalid, isForbidden := errors.Is(err, ca.ErrCSRInvalid), errors.Is(err, ca.ErrCSRForbidden)
			switch tc.want {
			case nil:
				if isInvalid || isForbidden {
					t.Errorf("got %v; want an error that is not a CSR error", err)
				}
			case ca.ErrCSRInvalid:
				if !isInvalid || isForbidden {
					t.Errorf("got %v; want ErrCSRInvalid", err)
				}
			case ca.ErrCSRForbidden:
				if !isForbidden || isInvalid {
					t.Errorf("got %v; want ErrCSRForbidden", err)
				}
			}
		})
	}
	// The max itself is fine.
	if _, err := a.SignSVID(good, id, day); err != nil {
		t.Errorf("ttl = MaxSVIDTTL: %v", err)
	}
}

func csrFor(tb testing.TB, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// basicConstraints builds the extension by hand: crypto/x509 offers no
// template field for it in a CSR.
func basicConstraints(tb testing.TB, isCA bool) pkix.Extension {
	tb.Helper()
	v, err := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{isCA})
	if err != nil {
		tb.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: v}
}

// registeredIDSAN is a subjectAltName holding a registeredID ([8]), a type
// crypto/x509 parses past without reporting it.
func registeredIDSAN(tb testing.TB) pkix.Extension {
	tb.Helper()
	oid, err := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 3, 4})
	if err != nil {
		tb.Fatal(err)
	}
	v, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: oid[2:]}})
	if err != nil {
		tb.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: v}
}

func ed25519Key(tb testing.TB) crypto.Signer {
	tb.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func p384Key(tb testing.TB) crypto.Signer {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}
