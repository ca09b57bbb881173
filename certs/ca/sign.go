package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Errors SignSVID returns, wrapped with detail, for a CSR that is the
// client's fault. API handlers map ErrCSRInvalid to InvalidArgument and
// ErrCSRForbidden to PermissionDenied. Any other SignSVID error means the
// caller (the control plane) passed a bad id or ttl, or the authority
// failed; neither is the client's fault.
var (
	// ErrCSRInvalid: the CSR does not parse, its signature does not verify,
	// or its key is not ECDSA P-256.
	ErrCSRInvalid = errors.New("invalid certificate signing request")
	// ErrCSRForbidden: the CSR asks to be a CA or names a SAN other than
	// the SPIFFE ID being issued.
	ErrCSRForbidden = errors.New("forbidden certificate signing request")
)

// expiryGranularity is how far SignSVID rounds up the last_svid_expiry it
// records, so that steady signing writes the state file about once a
// minute rather than once per SVID. Rounding up only keeps a retiring CA a
// little longer.
const expiryGranularity = time.Minute

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// SignSVID issues an X.509-SVID for id to the key in csrDER, valid for ttl
// (at most Config.MaxSVIDTTL) but never past the signing CA's NotAfter. It
// returns the chain to present, [leaf]; the CA itself comes with Bundle.
//
// Only the CSR's public key is used. The CSR may carry no SAN except id
// itself and must not ask to be a CA; its subject and other requested
// extensions are ignored, never copied.
func (a *Authority) SignSVID(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return a.sign(csrDER, id, ttl, nil, nil)
}

// SignServingSVID is SignSVID for the control plane's own serving
// certificate: beside the one URI SAN it carries DNS names and IP
// addresses, which the X.509-SVID format allows, so that tools that check
// host names (grpcurl, curl) can reach the agent API too. Agents never get
// these SANs: their CSRs go through SignSVID.
func (a *Authority) SignServingSVID(csrDER []byte, id spiffeid.ID, ttl time.Duration, dnsNames []string, ips []net.IP) ([]*x509.Certificate, error) {
	return a.sign(csrDER, id, ttl, dnsNames, ips)
}

func (a *Authority) sign(csrDER []byte, id spiffeid.ID, ttl time.Duration, dnsNames []string, ips []net.IP) ([]*x509.Certificate, error) {
	if id.IsZero() || !id.MemberOf(a.td) {
		return nil, fmt.Errorf("sign svid: id %q is not in trust domain %q", id, a.td.Name())
	}
	if id.Path() == "" {
		return nil, fmt.Errorf("sign svid: id %q names the trust domain, not a workload", id)
	}
	if ttl <= 0 || ttl > a.maxSVIDTTL {
		return nil, fmt.Errorf("sign svid: ttl %v out of range (0, %v]", ttl, a.maxSVIDTTL)
	}
	csr, err := checkCSR(csrDER, id)
	if err != nil {
		return nil, fmt.Errorf("sign svid: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("sign svid: %w", err)
	}

	req := svidRequest{pub: csr.PublicKey, serial: serial, id: id, ttl: ttl, dnsNames: dnsNames, ips: ips}

	// Most SVIDs expire no later than one already recorded for the active
	// CA (see expiryGranularity): those are signed from memory. The record
	// keeps that CA in every replica's bundle until they expire, even if
	// another replica has since activated a new CA.
	a.mu.RLock()
	signer := a.activeLocked()
	now := a.now()
	if _, notAfter := validity(signer, now, ttl); notAfter.After(now) && !notAfter.After(signer.lastSVIDExpiry) {
		leaf, err := a.issue(signer, now, req)
		a.mu.RUnlock()
		if err != nil {
			return nil, fmt.Errorf("sign svid: %w", err)
		}
		return []*x509.Certificate{leaf}, nil
	}
	a.mu.RUnlock()

	// The rest change the state file, so they take the directory lock and
	// sign with the CA that is active on disk.
	unlock, err := a.lockDir()
	if err != nil {
		return nil, fmt.Errorf("sign svid: %w", err)
	}
	defer unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refreshLocked(); err != nil {
		return nil, fmt.Errorf("sign svid: %w", err)
	}
	signer = a.activeLocked()
	leaf, err := a.issue(signer, a.now(), req)
	if err != nil {
		return nil, fmt.Errorf("sign svid: %w", err)
	}
	// Record the expiry before handing out the SVID: Prune must never drop
	// a CA that an SVID in the wild still needs.
	if leaf.NotAfter.After(signer.lastSVIDExpiry) {
		rec := leaf.NotAfter.Truncate(expiryGranularity)
		if rec.Before(leaf.NotAfter) {
			rec = rec.Add(expiryGranularity)
		}
		next := make([]*authorityCA, len(a.cas))
		for i, c := range a.cas {
			if c == signer {
				c = c.clone()
				c.lastSVIDExpiry = rec
			}
			next[i] = c
		}
		if err := a.writeState(next); err != nil {
			return nil, fmt.Errorf("sign svid: %w", err)
		}
		a.cas = next
	}
	return []*x509.Certificate{leaf}, nil
}

// svidRequest is what an SVID is made of besides its signer and time.
type svidRequest struct {
	pub      any
	serial   *big.Int
	id       spiffeid.ID
	ttl      time.Duration
	dnsNames []string
	ips      []net.IP
}

// validity is the lifetime of an SVID signer issues at now for ttl: from a
// little before now, but not before the CA's, to now + ttl, but not after
// the CA's.
func validity(signer *authorityCA, now time.Time, ttl time.Duration) (notBefore, notAfter time.Time) {
	notBefore = now.Add(-30 * time.Second) // slack for agents whose clocks are behind
	if notBefore.Before(signer.cert.NotBefore) {
		notBefore = signer.cert.NotBefore
	}
	notAfter = now.Add(ttl)
	if notAfter.After(signer.cert.NotAfter) {
		notAfter = signer.cert.NotAfter
	}
	return notBefore, notAfter
}

// issue signs the SVID req asks for with signer at now. The caller holds
// mu, for reading at least.
func (a *Authority) issue(signer *authorityCA, now time.Time, req svidRequest) (*x509.Certificate, error) {
	notBefore, notAfter := validity(signer, now, req.ttl)
	if !notAfter.After(now) {
		return nil, fmt.Errorf("active CA %s expired at %v", signer.id, signer.cert.NotAfter)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          req.serial,
		Subject:               pkix.Name{Organization: []string{"Cairn"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:                  []*url.URL{req.id.URL()},
		DNSNames:              req.dnsNames,
		IPAddresses:           req.ips,
		AuthorityKeyId:        signer.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.cert, req.pub, signer.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	a.log.Debug("SVID issued", "id", req.id.String(), "serial", leaf.SerialNumber.Text(16), "ca", signer.id, "not_after", leaf.NotAfter)
	return leaf, nil
}

// checkCSR parses and vets a CSR for id.
func checkCSR(der []byte, id spiffeid.ID) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCSRInvalid, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCSRInvalid, err)
	}
	if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: public key is not ECDSA P-256", ErrCSRInvalid)
	}
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if rest, err := asn1.Unmarshal(ext.Value, &bc); err != nil || len(rest) != 0 {
				return nil, fmt.Errorf("%w: malformed basic constraints", ErrCSRInvalid)
			}
			if bc.IsCA {
				return nil, fmt.Errorf("%w: asks to be a CA", ErrCSRForbidden)
			}
		case ext.Id.Equal(oidSubjectAltName):
			if err := checkSANTypes(ext.Value); err != nil {
				return nil, err
			}
		}
	}
	// checkSANTypes allowed only URIs; the parsed fields say the same for
	// the types crypto/x509 knows, which guards against the two disagreeing.
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("%w: DNS, IP or email SAN", ErrCSRForbidden)
	}
	for _, u := range csr.URIs {
		if u.String() != id.String() {
			return nil, fmt.Errorf("%w: URI SAN %q is not %q", ErrCSRForbidden, u, id)
		}
	}
	return csr, nil
}

// checkSANTypes refuses any GeneralName in a subjectAltName extension but
// uniformResourceIdentifier ([6]), including the types crypto/x509 parses
// past without a field to show them in (otherName, directoryName, ...).
func checkSANTypes(value []byte) error {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(value, &seq)
	if err != nil || len(rest) != 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return fmt.Errorf("%w: malformed subject alternative names", ErrCSRInvalid)
	}
	for b := seq.Bytes; len(b) > 0; {
		var gn asn1.RawValue
		if b, err = asn1.Unmarshal(b, &gn); err != nil {
			return fmt.Errorf("%w: malformed subject alternative names", ErrCSRInvalid)
		}
		if gn.Class != asn1.ClassContextSpecific || gn.Tag != 6 {
			return fmt.Errorf("%w: subject alternative name of type [%d]", ErrCSRForbidden, gn.Tag)
		}
	}
	return nil
}
