package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxKeyFile bounds what ReadKeyFile reads; a PKCS#8 key is well under 1 KiB.
const maxKeyFile = 64 << 10

// NewKey generates an ECDSA P-256 key, the only key type Cairn issues to.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR makes a DER certificate signing request for key with no subject and
// no SANs: the control plane assigns the identity, so the agent asks for
// none.
func NewCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("create csr: %w", err)
	}
	return der, nil
}

// WriteKeyFile writes key as a PEM "PRIVATE KEY" (PKCS#8) file with mode
// 0600, atomically (see WriteFileAtomic), creating the directory with mode
// 0700 if it does not exist. An existing directory's mode is left alone.
func WriteKeyFile(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	defer clear(data)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err := WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

// ReadKeyFile reads a key written by WriteKeyFile. It refuses a file that
// group or others may access in any way, since such a key may already have
// leaked; the fix is to replace the key, not to chmod it.
//
// The permission check relies on Unix file modes.
func ReadKeyFile(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the checked file is the read one.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("read key file %s: mode %#o lets group or others access the key; want 0600", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer clear(data)
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("read key file %s: larger than %d bytes", path, maxKeyFile)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("read key file %s: no PEM block", path)
	}
	defer clear(block.Bytes)
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("read key file %s: PEM block %q; want \"PRIVATE KEY\"", path, block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("read key file %s: data after the key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("read key file %s: %T is not a signing key", path, k)
	}
	return signer, nil
}

// WriteFileAtomic writes data to path with mode perm so that a reader, or
// the file system after a crash, sees either the old file or the whole new
// one: it writes a temporary file in the same directory, syncs it, renames
// it over path and syncs the directory. The directory must exist.
//
// perm is applied with chmod, so the umask does not widen or narrow it, and
// it is set before any data is written.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	if base == "" {
		return fmt.Errorf("write %q: no file name", path)
	}
	if dir == "" {
		dir = "."
	}
	// Hidden, and named after the target, so a leftover from a crash is
	// easy to tell apart from real files.
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := writeSyncClose(f, data, perm); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}

// writeSyncClose sets f's mode, writes data and makes it durable. It closes
// f in any case.
func writeSyncClose(f *os.File, data []byte, perm os.FileMode) error {
	err := f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir makes a rename or removal in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// RemoveTempFiles deletes what an interrupted WriteFileAtomic left in dir:
// hidden files named ".<name>.tmp-<random>", which may hold a copy of a
// key. It returns the names it removed.
func RemoveTempFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-") {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return removed, err
			}
			removed = append(removed, n)
		}
	}
	return removed, nil
}
