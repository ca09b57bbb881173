// Package pki makes a throwaway CA, a server certificate and per-watcher
// client certificates for the TLS variants of the peer benchmark, so that
// etcd and NATS are measured with mutual TLS the way Cairn agents connect.
//
// Keys are ECDSA P-256, like Cairn's SVIDs. Nothing here is for production:
// certificates live for a day and keys are never persisted beyond the
// benchmark's work directory.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// File names under a TLS directory written by WriteServerFiles.
const (
	CAFile   = "ca.pem"
	CertFile = "server.pem"
	KeyFile  = "server-key.pem"
)

const (
	validFor    = 24 * time.Hour
	clockSkew   = time.Hour // backdating, for clocks a little behind
	serialBytes = 16
)

// CA is a self-signed certificate authority held in memory. Its methods
// are safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
	pool *x509.CertPool

	mu    sync.Mutex
	spare []tls.Certificate // made by Preissue, handed out by ClientConfig
}

// NewCA makes a CA valid for a day.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "peerbench CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, der: der, key: key, pool: pool}, nil
}

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Server issues a serving certificate for 127.0.0.1 and localhost. It is
// also valid for client authentication because etcd dials itself with it.
func (ca *CA) Server() (tls.Certificate, error) {
	return ca.issue("peerbench server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true)
}

// Client issues a client certificate named for one watcher.
func (ca *CA) Client(name string) (tls.Certificate, error) {
	return ca.issue(name, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false)
}

// Preissue makes n client certificates ahead of time, on all cores, so
// that the ClientConfig calls that follow (a timed connect phase) do not
// pay for key generation and signing; agents arrive with their
// certificates too.
func (ca *CA) Preissue(n int) error {
	certs := make([]tls.Certificate, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				certs[i], errs[i] = ca.Client(fmt.Sprintf("peerbench client %d", i))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	ca.mu.Lock()
	ca.spare = append(ca.spare, certs...)
	ca.mu.Unlock()
	return nil
}

// ClientConfig returns a TLS client configuration that trusts ca and
// presents a certificate of its own: a pre-issued one while any is left
// (whatever name it carries), else a fresh one named name.
func (ca *CA) ClientConfig(name string) (*tls.Config, error) {
	var cert tls.Certificate
	ca.mu.Lock()
	if n := len(ca.spare); n > 0 {
		cert = ca.spare[n-1]
		ca.spare = ca.spare[:n-1]
	}
	ca.mu.Unlock()
	if cert.Certificate == nil {
		var err error
		if cert, err = ca.Client(name); err != nil {
			return nil, err
		}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca.pool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// WriteServerFiles writes the CA certificate and a server certificate and
// key as PEM into dir, under CAFile, CertFile and KeyFile.
func (ca *CA) WriteServerFiles(dir string) error {
	cert, err := ca.Server()
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return fmt.Errorf("marshal server key: %w", err)
	}
	files := []struct {
		name, typ string
		der       []byte
		mode      os.FileMode
	}{
		{CAFile, "CERTIFICATE", ca.der, 0o644},
		{CertFile, "CERTIFICATE", cert.Certificate[0], 0o644},
		{KeyFile, "PRIVATE KEY", keyDER, 0o600},
	}
	for _, f := range files {
		data := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(filepath.Join(dir, f.name), data, f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

// ServerConfig loads what WriteServerFiles wrote into a TLS server
// configuration that requires and verifies client certificates.
func ServerConfig(dir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("load server key pair: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", CAFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

func (ca *CA) issue(cn string, usage []x509.ExtKeyUsage, server bool) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	if server {
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign %s: %w", cn, err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.der}, PrivateKey: key}, nil
}

func newSerial() (*big.Int, error) {
	b := make([]byte, serialBytes)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	return new(big.Int).SetBytes(b), nil
}
