package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cairnhq/cairn/certs"
)

// On disk, Dir holds <id>.crt (PEM certificate, 0644), <id>.key (PEM PKCS#8,
// 0600) for every CA and stateFileName, which lists the CAs and is the
// source of truth for their states.
const (
	stateFileName = "authority.json"
	stateVersion  = 1
)

type stateFile struct {
	Version     int       `json:"version"`
	TrustDomain string    `json:"trust_domain"`
	CAs         []stateCA `json:"cas"`
	// Discard lists ids whose files are to be deleted (see
	// Authority.discard).
	Discard []string `json:"discard,omitempty"`
}

type stateCA struct {
	ID             string    `json:"id"`
	State          state     `json:"state"`
	CreatedAt      time.Time `json:"created_at"`
	ActivatedAt    time.Time `json:"activated_at,omitzero"`
	LastSVIDExpiry time.Time `json:"last_svid_expiry,omitzero"`
}

// lockTimeout bounds the wait for the directory lock. Holders keep it for a
// few file writes; a longer wait means a stuck file system or process, and
// failing says so where blocking would not.
const lockTimeout = 30 * time.Second

// lockDir takes dirMu and the directory lock, in that order, and returns a
// function that releases both. The caller takes mu after it.
func (a *Authority) lockDir() (unlock func(), err error) {
	a.dirMu.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), lockTimeout)
	defer cancel()
	release, err := certs.LockDir(ctx, a.dir)
	if err != nil {
		a.dirMu.Unlock()
		return nil, err
	}
	return func() {
		if err := release(); err != nil {
			a.log.Warn("could not release the directory lock", "error", err)
		}
		a.dirMu.Unlock()
	}, nil
}

// load reads Dir into a, finishing an interrupted add or prune, or creates
// the first CA, holding the directory lock: of several Authorities opening
// an empty directory at once, one creates the CA and the others load it.
func (a *Authority) load() error {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return err
	}
	unlock, err := a.lockDir()
	if err != nil {
		return err
	}
	defer unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.removeTempFiles(); err != nil {
		return err
	}
	data, err := os.ReadFile(a.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		// No state: a new authority, but only if no CA files are here. A
		// lost state file must not silently turn into a new CA.
		if files, err := a.caFiles(); err != nil {
			return err
		} else if len(files) > 0 {
			return fmt.Errorf("%s is missing but the directory holds CA files (%s); restore it or move the files away", stateFileName, strings.Join(files, ", "))
		}
		return a.initialize()
	}
	if err != nil {
		return err
	}
	st, cas, err := a.readState(data)
	if err != nil {
		return err
	}
	if len(cas) == 0 {
		// Only an interrupted first start leaves no CAs behind.
		return a.initialize()
	}
	a.stateData = data
	if len(st.Discard) > 0 {
		if err := a.writeState(cas); err != nil {
			return err
		}
	}
	a.cas = cas
	active := a.activeLocked()
	a.log.Info("CA loaded", "trust_domain", a.td.Name(), "cas", len(cas), "active_ca", active.id, "pin", certs.SPKIPin(active.cert), "not_after", active.cert.NotAfter)
	return nil
}

// refreshLocked makes a.cas what the state file says, if the file is not
// what this Authority last read or wrote: another Authority sharing Dir
// changed it. The caller holds the directory lock and mu. An error leaves
// a.cas as it was.
func (a *Authority) refreshLocked() error {
	data, err := os.ReadFile(a.statePath())
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if a.stateData != nil && bytes.Equal(data, a.stateData) {
		return nil
	}
	st, cas, err := a.readState(data)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if len(cas) == 0 {
		return fmt.Errorf("reload: %s lists no CAs", stateFileName)
	}
	old := a.cas
	a.cas, a.stateData, a.discard = cas, data, nil
	if len(st.Discard) > 0 {
		if err := a.writeState(cas); err != nil {
			// The files are gone; the next change writes the state anew.
			a.log.Warn("could not rewrite the state file after deleting discarded CAs", "error", err)
		}
	}
	if !sameCAs(old, cas) {
		active := a.activeLocked()
		a.log.Info("CA reloaded a change made by another process", "cas", len(cas), "active_ca", active.id, "pin", certs.SPKIPin(active.cert))
	}
	return nil
}

// readState parses and checks the state file's bytes, deletes the files it
// discards, checks that Dir holds no CA file it does not list, and loads
// the CAs it lists, newest first. The caller holds the directory lock.
func (a *Authority) readState(data []byte) (*stateFile, []*authorityCA, error) {
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", stateFileName, err)
	}
	if err := a.checkState(&st); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", stateFileName, err)
	}

	for _, id := range st.Discard {
		if err := a.removeCAFiles(id); err != nil {
			return nil, nil, err
		}
	}
	listed := map[string]bool{}
	for _, sc := range st.CAs {
		listed[sc.ID] = true
	}
	files, err := a.caFiles()
	if err != nil {
		return nil, nil, err
	}
	var stray []string
	for _, f := range files {
		if !listed[strings.TrimSuffix(strings.TrimSuffix(f, ".crt"), ".key")] {
			stray = append(stray, f)
		}
	}
	if len(stray) > 0 {
		return nil, nil, fmt.Errorf("CA files not listed in %s: %s; the state file may be an old copy, so check before moving them away", stateFileName, strings.Join(stray, ", "))
	}

	cas := make([]*authorityCA, 0, len(st.CAs))
	for _, sc := range st.CAs {
		c, err := a.loadCA(sc)
		if err != nil {
			return nil, nil, fmt.Errorf("CA %s: %w", sc.ID, err)
		}
		cas = append(cas, c)
	}
	sortCAs(cas)
	return &st, cas, nil
}

// checkState checks what can be checked without the certificates.
func (a *Authority) checkState(st *stateFile) error {
	if st.Version != stateVersion {
		return fmt.Errorf("version %d; want %d", st.Version, stateVersion)
	}
	if st.TrustDomain != a.td.Name() {
		return fmt.Errorf("trust domain %q; configured %q", st.TrustDomain, a.td.Name())
	}
	seen := map[string]bool{}
	count := map[state]int{}
	for _, sc := range st.CAs {
		if !validID(sc.ID) {
			return fmt.Errorf("bad CA id %q", sc.ID)
		}
		if seen[sc.ID] {
			return fmt.Errorf("CA %s listed twice", sc.ID)
		}
		seen[sc.ID] = true
		switch sc.State {
		case statePrepared, stateActive, stateRetiring:
		default:
			return fmt.Errorf("CA %s: unknown state %q", sc.ID, sc.State)
		}
		count[sc.State]++
	}
	for _, id := range st.Discard {
		if !validID(id) {
			return fmt.Errorf("bad discarded CA id %q", id)
		}
		if seen[id] {
			return fmt.Errorf("CA %s is both listed and discarded", id)
		}
	}
	if len(st.CAs) > 0 && count[stateActive] != 1 {
		return fmt.Errorf("%d active CAs; want 1", count[stateActive])
	}
	if count[statePrepared] > 1 {
		return fmt.Errorf("%d prepared CAs; want at most 1", count[statePrepared])
	}
	return nil
}

// validID reports whether id is the form caID makes, so it is safe in a
// file name.
func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func caID(serial *big.Int) string {
	return fmt.Sprintf("%032x", serial)
}

func (a *Authority) loadCA(sc stateCA) (*authorityCA, error) {
	data, err := os.ReadFile(a.certPath(sc.ID))
	if err != nil {
		return nil, err
	}
	chain, err := certs.ParseCertsPEM(data)
	if err != nil {
		return nil, err
	}
	if len(chain) != 1 {
		return nil, fmt.Errorf("%d certificates in %s.crt; want 1", len(chain), sc.ID)
	}
	cert := chain[0]
	if got := caID(cert.SerialNumber); got != sc.ID {
		return nil, fmt.Errorf("certificate serial %s does not match its file name", got)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("certificate is not a CA")
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return nil, fmt.Errorf("certificate is not self-signed: %w", err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != a.td.IDString() {
		return nil, fmt.Errorf("certificate does not name trust domain %q", a.td.Name())
	}
	key, err := certs.ReadKeyFile(a.keyPath(sc.ID))
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("key does not match certificate")
	}
	createdAt := sc.CreatedAt
	if createdAt.IsZero() {
		createdAt = cert.NotBefore
	}
	return &authorityCA{
		id:             sc.ID,
		cert:           cert,
		key:            key,
		state:          sc.State,
		createdAt:      createdAt,
		activatedAt:    sc.ActivatedAt,
		lastSVIDExpiry: sc.LastSVIDExpiry,
	}, nil
}

// initialize creates the first, active CA.
func (a *Authority) initialize() error {
	now := a.now()
	c, err := a.newCA(now)
	if err != nil {
		return err
	}
	c.state = stateActive
	c.activatedAt = now
	cas, err := a.addCA(nil, c)
	if err != nil {
		return err
	}
	a.cas = cas
	a.log.Info("CA created", "trust_domain", a.td.Name(), "ca", c.id, "state", c.state, "pin", certs.SPKIPin(c.cert), "not_after", c.cert.NotAfter)
	return nil
}

// newCA makes a CA certificate as the X.509-SVID specification describes
// signing certificates: a CA that signs only leaves (path length 0), with
// the trust domain's ID as its URI SAN.
func (a *Authority) newCA(now time.Time) (*authorityCA, error) {
	key, err := certs.NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	id := caID(serial)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   "Cairn CA " + id[:16],
			Organization: []string{"Cairn"},
		},
		// A minute's slack for clocks slightly behind ours.
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(a.caTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          subjectKeyID(&key.PublicKey),
		URIs:                  []*url.URL{a.td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return &authorityCA{id: id, cert: cert, key: key, createdAt: now}, nil
}

// subjectKeyID is RFC 7093 section 2 method 1: the leftmost 160 bits of the
// SHA-256 of the subjectPublicKey bits.
func subjectKeyID(pub *ecdsa.PublicKey) []byte {
	k, err := pub.ECDH()
	if err != nil {
		// P-256 keys from certs.NewKey always convert.
		panic(err)
	}
	sum := sha256.Sum256(k.Bytes())
	return sum[:20]
}

// newSerial returns a random, positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, err
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// addCA persists c and returns cur with c added. c's id goes into the
// discard list first, so a crash part way leaves files Open knows to delete.
func (a *Authority) addCA(cur []*authorityCA, c *authorityCA) ([]*authorityCA, error) {
	a.discard = append(a.discard, c.id)
	if err := a.writeState(cur); err != nil {
		return nil, err
	}
	if err := certs.WriteKeyFile(a.keyPath(c.id), c.key); err != nil {
		return nil, err
	}
	if err := certs.WriteFileAtomic(a.certPath(c.id), certs.EncodeCertsPEM([]*x509.Certificate{c.cert}), 0o644); err != nil {
		return nil, err
	}
	next := append(slices.Clone(cur), c)
	sortCAs(next)
	a.discard = slices.DeleteFunc(a.discard, func(id string) bool { return id == c.id })
	if err := a.writeState(next); err != nil {
		return nil, err
	}
	return next, nil
}

// writeState atomically replaces the state file with cas and a.discard,
// and keeps the bytes in a.stateData. The caller holds the directory lock
// and mu.
func (a *Authority) writeState(cas []*authorityCA) error {
	st := stateFile{Version: stateVersion, TrustDomain: a.td.Name(), Discard: a.discard}
	for _, c := range cas {
		st.CAs = append(st.CAs, stateCA{
			ID:             c.id,
			State:          c.state,
			CreatedAt:      c.createdAt.UTC(),
			ActivatedAt:    c.activatedAt.UTC(),
			LastSVIDExpiry: c.lastSVIDExpiry.UTC(),
		})
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := certs.WriteFileAtomic(a.statePath(), data, 0o600); err != nil {
		// The file may hold the old bytes or the new: let the next change
		// read it whatever it holds.
		a.stateData = nil
		return fmt.Errorf("write %s: %w", stateFileName, err)
	}
	a.stateData = data
	return nil
}

// removeCAFiles deletes a CA's files; missing files are fine.
func (a *Authority) removeCAFiles(id string) error {
	for _, p := range []string{a.keyPath(id), a.certPath(id)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return certs.SyncDir(a.dir)
}

// caFiles lists the names of *.crt and *.key files in Dir.
func (a *Authority) caFiles() ([]string, error) {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			continue
		}
		if strings.HasSuffix(n, ".crt") || strings.HasSuffix(n, ".key") {
			out = append(out, n)
		}
	}
	return out, nil
}

func (a *Authority) statePath() string         { return filepath.Join(a.dir, stateFileName) }
func (a *Authority) certPath(id string) string { return filepath.Join(a.dir, id+".crt") }
func (a *Authority) keyPath(id string) string  { return filepath.Join(a.dir, id+".key") }

// removeTempFiles deletes what an interrupted write left behind.
func (a *Authority) removeTempFiles() error {
	removed, err := certs.RemoveTempFiles(a.dir)
	for _, n := range removed {
		a.log.Warn("removed leftover temporary file", slog.String("file", n))
	}
	return err
}
