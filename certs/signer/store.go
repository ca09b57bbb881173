package signer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/sign"
)

// On disk, Dir holds <key id>.key (PEM PKCS#8, 0600) for the root and every
// signing key, and stateFileName (0600), which says which key is the root,
// lists the signing keys with their states and the key set version, and is
// the source of truth for them.
const (
	stateFileName = "signer.json"
	stateVersion  = 1
)

type stateFile struct {
	Version int `json:"version"`
	// RootKeyID is empty only while the first Open is creating the keys.
	RootKeyID     string     `json:"root_key_id"`
	KeySetVersion int64      `json:"key_set_version"`
	IssuedAt      time.Time  `json:"issued_at"`
	Keys          []stateKey `json:"keys"`
	// Discard lists ids whose files are to be deleted (see Signer.discard).
	Discard []string `json:"discard,omitempty"`
}

type stateKey struct {
	ID          string    `json:"id"`
	State       keyState  `json:"state"`
	NotBefore   time.Time `json:"not_before"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	NotAfter    time.Time `json:"not_after,omitzero"`
}

// lockTimeout bounds the wait for the directory lock. Holders keep it for a
// few file writes; a longer wait means a stuck file system or process, and
// failing says so where blocking would not.
const lockTimeout = 30 * time.Second

// lockDir takes dirMu and the directory lock, in that order, and returns a
// function that releases both. The caller takes mu after it.
func (s *Signer) lockDir() (unlock func(), err error) {
	s.dirMu.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), lockTimeout)
	defer cancel()
	release, err := certs.LockDir(ctx, s.dir)
	if err != nil {
		s.dirMu.Unlock()
		return nil, err
	}
	return func() {
		if err := release(); err != nil {
			s.log.Warn("could not release the directory lock", "error", err)
		}
		s.dirMu.Unlock()
	}, nil
}

// load reads Dir into s, finishing an interrupted change, or creates the
// keys, holding the directory lock: of several Signers opening an empty
// directory at once, one creates the keys and the others load them.
func (s *Signer) load() error {
	if err := s.checkDir(); err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	unlock, err := s.lockDir()
	if err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	defer unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.removeTempFiles(); err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	data, err := os.ReadFile(s.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		// No state: a new signer, but only if no key files are here. A
		// lost state file must not silently turn into a new root key,
		// which no enrolled agent trusts.
		if files, err := s.keyFiles(); err != nil {
			return fmt.Errorf("signer: %w", err)
		} else if len(files) > 0 {
			return fmt.Errorf("signer: %s is missing but %s holds key files (%s); restore it or move the files away", stateFileName, s.dir, strings.Join(files, ", "))
		}
		return s.initialize()
	}
	if err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	st, err := decodeState(data)
	if err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	root, r, err := s.readState(st)
	if err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	if root == nil {
		// Only an interrupted first start leaves no root behind; any
		// files it wrote were in Discard and are gone.
		return s.initialize()
	}
	s.root, s.rootID, s.cur, s.stateData = root, st.RootKeyID, r, data
	if len(st.Discard) > 0 {
		if err := s.writeState(s.rootID, r); err != nil {
			return fmt.Errorf("signer: %w", err)
		}
	}
	active := r.active()
	s.log.Info("signer loaded", "root_key_id", s.rootID, "active_key_id", active.id, "keys", len(r.keys), "key_set_version", r.version)
	return nil
}

// refresh makes s.cur what the state file says, if the file is not what
// this Signer last read or wrote: another Signer sharing Dir changed it.
// The caller holds the directory lock and mu. An error leaves s as it was.
func (s *Signer) refresh() error {
	data, err := os.ReadFile(s.statePath())
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if s.stateData != nil && bytes.Equal(data, s.stateData) {
		return nil
	}
	st, err := decodeState(data)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if st.RootKeyID != s.rootID {
		// Agents hold the root's public key; a signer that switched roots
		// would sign key sets none of them accepts.
		return fmt.Errorf("reload: %s names root key %q, not %s; the directory was replaced, so restart to load it", stateFileName, st.RootKeyID, s.rootID)
	}
	_, r, err := s.readState(st)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	old := s.cur
	s.cur, s.stateData, s.discard = r, data, nil
	if len(st.Discard) > 0 {
		if err := s.writeState(s.rootID, r); err != nil {
			// The files are gone; the next change writes the state anew.
			s.log.Warn("could not rewrite the state file after deleting discarded keys", "error", err)
		}
	}
	if !r.same(old) {
		s.log.Info("signer reloaded a change made by another process", "active_key_id", r.active().id, "keys", len(r.keys), "key_set_version", r.version)
	}
	return nil
}

// decodeState parses and checks the state file's bytes.
func decodeState(data []byte) (*stateFile, error) {
	var st stateFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFileName, err)
	}
	if err := checkState(&st); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFileName, err)
	}
	return &st, nil
}

// readState deletes the files st discards, checks that Dir holds no key
// file st does not list, and reads the keys st lists. It returns a nil root
// if st has none yet. The caller holds the directory lock.
func (s *Signer) readState(st *stateFile) (ed25519.PrivateKey, *ring, error) {
	for _, id := range st.Discard {
		if err := s.removeKeyFile(id); err != nil {
			return nil, nil, err
		}
	}
	listed := map[string]bool{st.RootKeyID: st.RootKeyID != ""}
	for _, k := range st.Keys {
		listed[k.ID] = true
	}
	files, err := s.keyFiles()
	if err != nil {
		return nil, nil, err
	}
	var stray []string
	for _, f := range files {
		if !listed[strings.TrimSuffix(f, ".key")] {
			stray = append(stray, f)
		}
	}
	if len(stray) > 0 {
		return nil, nil, fmt.Errorf("key files not listed in %s: %s; the state file may be an old copy, so check before moving them away", stateFileName, strings.Join(stray, ", "))
	}
	if st.RootKeyID == "" {
		return nil, nil, nil
	}
	root, err := s.readKey(st.RootKeyID)
	if err != nil {
		return nil, nil, fmt.Errorf("root key %s: %w", st.RootKeyID, err)
	}
	r := &ring{version: st.KeySetVersion, issuedAt: st.IssuedAt}
	for _, sk := range st.Keys {
		key, err := s.readKey(sk.ID)
		if err != nil {
			return nil, nil, fmt.Errorf("signing key %s: %w", sk.ID, err)
		}
		r.keys = append(r.keys, &signingKey{
			id:          sk.ID,
			key:         key,
			state:       sk.State,
			notBefore:   sk.NotBefore,
			activatedAt: sk.ActivatedAt,
			notAfter:    sk.NotAfter,
		})
	}
	return root, r, nil
}

// checkState checks what can be checked without the keys.
func checkState(st *stateFile) error {
	if st.Version != stateVersion {
		return fmt.Errorf("version %d; want %d", st.Version, stateVersion)
	}
	seen := map[string]bool{}
	if st.RootKeyID != "" {
		if !validID(st.RootKeyID) {
			return fmt.Errorf("bad root key id %q", st.RootKeyID)
		}
		seen[st.RootKeyID] = true
	}
	if (st.RootKeyID == "") != (len(st.Keys) == 0) {
		return errors.New("a root key and signing keys must be listed together")
	}
	if st.RootKeyID != "" && st.KeySetVersion < 1 {
		return fmt.Errorf("key set version %d; want at least 1", st.KeySetVersion)
	}
	if len(st.Keys) > sign.MaxKeys {
		return fmt.Errorf("%d signing keys, more than %d", len(st.Keys), sign.MaxKeys)
	}
	count := map[keyState]int{}
	for _, k := range st.Keys {
		if !validID(k.ID) {
			return fmt.Errorf("bad key id %q", k.ID)
		}
		if seen[k.ID] {
			return fmt.Errorf("key %s listed twice", k.ID)
		}
		seen[k.ID] = true
		count[k.State]++
		if err := checkStateKey(k); err != nil {
			return fmt.Errorf("key %s: %w", k.ID, err)
		}
	}
	if len(st.Keys) > 0 && count[stateActive] != 1 {
		return fmt.Errorf("%d active signing keys; want 1", count[stateActive])
	}
	if count[stateNext] > 1 {
		return fmt.Errorf("%d next signing keys; want at most 1", count[stateNext])
	}
	for _, id := range st.Discard {
		if !validID(id) {
			return fmt.Errorf("bad discarded key id %q", id)
		}
		if seen[id] {
			return fmt.Errorf("key %s is both listed and discarded", id)
		}
	}
	return nil
}

// checkStateKey checks that k's times fit its state.
func checkStateKey(k stateKey) error {
	if k.NotBefore.IsZero() {
		return errors.New("no not_before")
	}
	switch k.State {
	case stateNext:
		if !k.ActivatedAt.IsZero() || !k.NotAfter.IsZero() {
			return errors.New("a next key has activated_at or not_after")
		}
	case stateActive:
		if k.ActivatedAt.IsZero() || !k.NotAfter.IsZero() {
			return errors.New("an active key lacks activated_at or has not_after")
		}
	case stateRetired:
		if k.ActivatedAt.IsZero() || k.NotAfter.IsZero() {
			return errors.New("a retired key lacks activated_at or not_after")
		}
		if !k.NotAfter.After(k.NotBefore) {
			return fmt.Errorf("not_after %v is not after not_before %v", k.NotAfter, k.NotBefore)
		}
	default:
		return fmt.Errorf("unknown state %q", k.State)
	}
	return nil
}

// validID reports whether id has the form sign.KeyID gives, so it is safe
// in a file name.
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

// readKey reads <id>.key and checks that it is the Ed25519 key with that
// id, so a file renamed or copied over another is caught.
func (s *Signer) readKey(id string) (ed25519.PrivateKey, error) {
	k, err := certs.ReadKeyFile(s.keyPath(id))
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s.key holds a %T; want an Ed25519 key", id, k)
	}
	if got := sign.KeyID(key.Public().(ed25519.PublicKey)); got != id {
		return nil, fmt.Errorf("%s.key holds key %s", id, got)
	}
	return key, nil
}

// initialize creates the root key and the first, active signing key.
func (s *Signer) initialize() error {
	now := s.now()
	_, root, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	rootID := sign.KeyID(root.Public().(ed25519.PublicKey))
	k, err := newSigningKey(now)
	if err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	k.state = stateActive
	k.activatedAt = now
	// Both ids go into discard before their files are written, so a crash
	// part way leaves files the next Open knows to delete.
	s.discard = append(s.discard, rootID, k.id)
	if err := s.writeState("", &ring{}); err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	if err := certs.WriteKeyFile(s.keyPath(rootID), root); err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	if err := certs.WriteKeyFile(s.keyPath(k.id), k.key); err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	r := &ring{keys: []*signingKey{k}, version: 1, issuedAt: now}
	s.discard = nil
	if err := s.writeState(rootID, r); err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	s.root, s.rootID, s.cur = root, rootID, r
	s.log.Info("signer created", "root_key_id", rootID, "active_key_id", k.id, "key_set_version", r.version)
	return nil
}

// commit persists next, with the new key added if not nil, and makes it
// current; then it deletes the files of keys next no longer holds. An error
// means next is not current; a failure to clean up afterwards is only
// logged, since the discard list in the state file has the next Open finish
// the job.
func (s *Signer) commit(next *ring, added *signingKey) error {
	if added != nil {
		// The id goes into discard before the file is written, so a crash
		// part way leaves a file Open knows to delete.
		s.discard = append(s.discard, added.id)
		if err := s.writeState(s.rootID, s.cur); err != nil {
			return err
		}
		if err := certs.WriteKeyFile(s.keyPath(added.id), added.key); err != nil {
			return err
		}
		s.discard = without(s.discard, added.id)
	}
	var gone []string
	for _, k := range s.cur.keys {
		if !slices.ContainsFunc(next.keys, func(n *signingKey) bool { return n.id == k.id }) {
			gone = append(gone, k.id)
		}
	}
	s.discard = append(s.discard, gone...)
	if err := s.writeState(s.rootID, next); err != nil {
		s.discard = without(s.discard, gone...)
		if added != nil {
			// Its file exists but no state lists it.
			s.discard = append(s.discard, added.id)
		}
		return err
	}
	s.cur = next
	for _, id := range gone {
		if err := s.removeKeyFile(id); err != nil {
			s.log.Warn("could not delete a pruned key's file; the next Open will", "key_id", id, "error", err)
			continue
		}
		s.discard = without(s.discard, id)
		s.log.Info("signing key removed", "key_id", id, "key_set_version", next.version)
	}
	if len(gone) > 0 {
		if err := s.writeState(s.rootID, next); err != nil {
			s.log.Warn("could not rewrite the state file after deleting pruned keys", "error", err)
		}
	}
	return nil
}

// without returns ids without drop, in place.
func without(ids []string, drop ...string) []string {
	return slices.DeleteFunc(ids, func(id string) bool { return slices.Contains(drop, id) })
}

// writeState atomically replaces the state file with rootID, r and
// s.discard, and keeps the bytes in s.stateData. The caller holds the
// directory lock and mu.
func (s *Signer) writeState(rootID string, r *ring) error {
	st := stateFile{
		Version:       stateVersion,
		RootKeyID:     rootID,
		KeySetVersion: r.version,
		IssuedAt:      r.issuedAt.UTC(),
		Keys:          []stateKey{},
		Discard:       s.discard,
	}
	for _, k := range r.keys {
		st.Keys = append(st.Keys, stateKey{
			ID:          k.id,
			State:       k.state,
			NotBefore:   k.notBefore.UTC(),
			ActivatedAt: k.activatedAt.UTC(),
			NotAfter:    k.notAfter.UTC(),
		})
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := certs.WriteFileAtomic(s.statePath(), data, 0o600); err != nil {
		// The file may hold the old bytes or the new: let the next change
		// read it whatever it holds.
		s.stateData = nil
		return fmt.Errorf("write %s: %w", stateFileName, err)
	}
	s.stateData = data
	return nil
}

// checkDir creates Dir with mode 0700, or checks that an existing one is a
// directory others cannot write to: whoever can replace a key file or the
// state file can make the control plane sign with a key of their choosing.
func (s *Signer) checkDir() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(s.dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", s.dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s has mode %#o, which lets group or others replace keys; want 0700", s.dir, perm)
	}
	return nil
}

// removeKeyFile deletes a key's file; a missing file is fine.
func (s *Signer) removeKeyFile(id string) error {
	if err := os.Remove(s.keyPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return certs.SyncDir(s.dir)
}

// keyFiles lists the names of *.key files in Dir.
func (s *Signer) keyFiles() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, ".") && strings.HasSuffix(n, ".key") {
			out = append(out, n)
		}
	}
	return out, nil
}

func (s *Signer) statePath() string        { return filepath.Join(s.dir, stateFileName) }
func (s *Signer) keyPath(id string) string { return filepath.Join(s.dir, id+".key") }

// removeTempFiles deletes what an interrupted write left behind.
func (s *Signer) removeTempFiles() error {
	removed, err := certs.RemoveTempFiles(s.dir)
	for _, n := range removed {
		s.log.Warn("removed leftover temporary file", slog.String("file", n))
	}
	return err
}
