// Package agentwork gives the peers' watchers the two steps of a Cairn
// agent's apply that cost it the most per delta besides its connection's
// I/O (in the agents' CPU profile, BENCHMARKS.md): verifying the delta's
// Ed25519 signature and writing it durably to the agent's own storage.
// The writer signs every value, and each watcher verifies the signature
// and writes the value to a temporary file in its own directory, fsyncs
// it and renames it over its file before the value counts as received.
// So figure 1 can also compare delivery with comparable work at the edge.
//
// It is meant to be no more work than the agent's apply, not a copy of
// it: a Cairn agent also checks the delta's chain and state hash, commits
// the envelope and documents in a bbolt transaction, and acknowledges on
// its stream; these watchers do not. The directory is not fsynced after
// the rename (bbolt does not fsync its directory per commit either). A
// file rather than a bbolt database per watcher because bbolt holds its
// file open: N connections and N databases do not fit in the 20,000
// descriptors a process may have here, and opening a database per value
// would add work the agent does not do. On tmpfs (/dev/shm, where make
// bench puts both the agents' and these files) fsync reaches no disk, for
// either side.
package agentwork

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
)

// maxOpen bounds the temporary files open at once, so that the watchers'
// process stays within its descriptors (one connection per watcher, plus
// a margin): commits beyond it wait, which on two cores is never for long.
const maxOpen = 256

// sigSep separates a signed value's payload from its signature.
const sigSep = "|sig="

// Overhead is how many bytes Sign adds to a value.
var Overhead = len(sigSep) + base64.RawStdEncoding.EncodedLen(ed25519.SignatureSize)

// Fleet is the signing key and the watchers' files of one run.
type Fleet struct {
	dir  string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
	open chan struct{} // maxOpen slots

	applied  atomic.Int64
	failed   atomic.Int64
	firstErr atomic.Value // string
}

// New makes a signing key and a new directory in parent, which holds a
// directory per watcher; Close removes it, and only it.
func New(parent string) (*Fleet, error) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("agentwork: %w", err)
	}
	dir, err := os.MkdirTemp(parent, "peerbench-watchers-")
	if err != nil {
		return nil, fmt.Errorf("agentwork: %w", err)
	}
	return &Fleet{dir: dir, pub: pub, priv: priv, open: make(chan struct{}, maxOpen)}, nil
}

// Sign returns value followed by its signature, as the writer puts it.
func (f *Fleet) Sign(value string) string {
	sig := ed25519.Sign(f.priv, []byte(value))
	return value + sigSep + base64.RawStdEncoding.EncodeToString(sig)
}

// Dir is where the watchers' directories are.
func (f *Fleet) Dir() string { return f.dir }

// OnTmpfs reports whether the watchers' files are on tmpfs, where fsync
// reaches no disk.
func (f *Fleet) OnTmpfs() bool {
	var st syscall.Statfs_t
	return syscall.Statfs(f.dir, &st) == nil && st.Type == tmpfsMagic
}

// tmpfsMagic is TMPFS_MAGIC, tmpfs's statfs f_type on Linux.
const tmpfsMagic = 0x01021994

// Prepare makes watcher id's directory, before the clock starts: an agent
// has its data directory before any delta arrives.
func (f *Fleet) Prepare(id int) error {
	if err := os.Mkdir(f.watcherDir(id), 0o700); err != nil {
		return fmt.Errorf("agentwork: %w", err)
	}
	return nil
}

func (f *Fleet) watcherDir(id int) string {
	return filepath.Join(f.dir, "w"+strconv.Itoa(id))
}

// path is watcher id's file.
func (f *Fleet) path(id int) string {
	return filepath.Join(f.watcherDir(id), "value")
}

// Wrap returns a deliver function that verifies a signed value and
// commits it to the watcher's own file before passing it on, unsigned, to
// next. A value that fails either step is counted (Failures) and not
// passed on, so the run reports that watcher as never having received it.
// Unsigned values are passed on as they are when isChange says they are
// not one of the run's changes (the writer's seed), and refused when it
// says they are.
func (f *Fleet) Wrap(isChange func([]byte) bool, next func(id int, value []byte)) func(id int, value []byte) {
	return func(id int, value []byte) {
		i := bytes.LastIndex(value, []byte(sigSep))
		if i < 0 {
			if isChange(value) {
				f.fail(fmt.Errorf("watcher %d: an unsigned change", id))
				return
			}
			next(id, value)
			return
		}
		payload := value[:i]
		if err := f.apply(id, payload, value[i+len(sigSep):]); err != nil {
			f.fail(err)
			return
		}
		f.applied.Add(1)
		next(id, payload)
	}
}

func (f *Fleet) apply(id int, payload, sig64 []byte) error {
	sig := make([]byte, ed25519.SignatureSize)
	if n, err := base64.RawStdEncoding.Decode(sig, sig64); err != nil || n != len(sig) {
		return fmt.Errorf("watcher %d: bad signature encoding", id)
	}
	if !ed25519.Verify(f.pub, payload, sig) {
		return fmt.Errorf("watcher %d: signature does not verify", id)
	}
	if err := f.commit(f.path(id), payload); err != nil {
		return fmt.Errorf("watcher %d: commit: %w", id, err)
	}
	return nil
}

// commit replaces the file at path with data so that a crash leaves the
// old or the new contents: a temporary file, written and fsynced, renamed
// over it.
func (f *Fleet) commit(path string, data []byte) error {
	f.open <- struct{}{}
	defer func() { <-f.open }()
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	err = errors.Join(err, tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func (f *Fleet) fail(err error) {
	f.failed.Add(1)
	f.firstErr.CompareAndSwap(nil, err.Error())
}

// Applied is how many values the watchers verified and committed.
func (f *Fleet) Applied() int64 { return f.applied.Load() }

// Failures is how many values failed verification or their commit, and
// the first such error.
func (f *Fleet) Failures() (int64, string) {
	s, _ := f.firstErr.Load().(string)
	return f.failed.Load(), s
}

// Close removes the watchers' files.
func (f *Fleet) Close() error {
	return os.RemoveAll(f.dir)
}
