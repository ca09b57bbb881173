package render

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/certs"
)

// fileState is what the state file holds.
type fileState struct {
	// Files maps each path the renderer wrote, and that still holds what
	// it wrote as far as it knows, to the hex SHA-256 of those bytes. Only
	// these files are ever removed.
	Files map[string]string `json:"files"`
	// ReloadPending: files changed since the reload command last
	// succeeded.
	ReloadPending bool `json:"reload_pending"`

	// dirty: Files changed since the last save.
	dirty bool
}

func sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// own records that path holds data, written or found there by the
// renderer.
func (s *fileState) own(path string, data []byte) {
	if h := sum(data); s.Files[path] != h {
		s.Files[path] = h
		s.dirty = true
	}
}

// forget drops path: it is no longer the renderer's to remove.
func (s *fileState) forget(path string) {
	if _, ok := s.Files[path]; ok {
		delete(s.Files, path)
		s.dirty = true
	}
}

// loadState reads the state file. A missing file is a first start; an
// unreadable one is logged and replaced: the renderer then removes no file
// it wrote before, and owes a reload, since one may have been owed.
func (r *Renderer) loadState() fileState {
	s := fileState{Files: map[string]string{}}
	data, err := os.ReadFile(r.cfg.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return s
	}
	if err == nil {
		err = json.Unmarshal(data, &s)
	}
	if err != nil {
		r.log.Warn("render state unreadable; starting afresh (files rendered before will not be removed)", "path", r.cfg.StateFile, "error", err)
		s = fileState{Files: map[string]string{}, ReloadPending: true, dirty: true}
	}
	if s.Files == nil {
		s.Files = map[string]string{}
	}
	if s.ReloadPending && r.cfg.ReloadCommand == nil {
		s.ReloadPending, s.dirty = false, true
	}
	return s
}

// saveState writes the state file atomically.
func (r *Renderer) saveState() error {
	data, err := json.Marshal(r.state)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(r.cfg.StateFile), 0o700)
	}
	if err == nil {
		err = certs.WriteFileAtomic(r.cfg.StateFile, data, 0o600)
	}
	if err != nil {
		return fmt.Errorf("save render state: %w", err)
	}
	r.state.dirty = false
	return nil
}

// forgetUnruled drops files that no rule writes any more: they stay on
// disk, and the renderer no longer removes them.
func (r *Renderer) forgetUnruled() {
	for path := range r.state.Files {
		if !r.hasRule(path) {
			r.log.Info("no rule renders this file any more; leaving it", "path", path)
			r.state.forget(path)
		}
	}
}

func (r *Renderer) hasRule(path string) bool {
	for _, rule := range r.rules {
		if rule.Path == path {
			return true
		}
	}
	return false
}

// removeTempFiles deletes what an interrupted write left beside the rule
// paths: the hidden ".<name>.tmp-*" files of certs.WriteFileAtomic, for
// the rules' names only, since other programs share those directories.
func (r *Renderer) removeTempFiles() {
	for _, rule := range r.rules {
		dir, base := filepath.Split(rule.Path)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // a missing directory holds no leftovers
		}
		for _, e := range entries {
			if e.Type().IsRegular() && strings.HasPrefix(e.Name(), "."+base+".tmp-") {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					r.log.Warn("cannot remove a leftover temporary file", "path", filepath.Join(dir, e.Name()), "error", err)
				}
			}
		}
	}
}

// action is one file to write or remove.
type action struct {
	rule    Rule
	remove  bool
	content []byte // to write
	version int64  // of the document written
}

// plan compares every rule's file with the cache at st and returns what
// to change and the rules whose document is missing. Rules whose file
// cannot be inspected are left out and reported in the error.
//
// The documents are read one by one, so a change landing in the middle can
// mix two states; the cache announces that change and the next pass
// settles it.
func (r *Renderer) plan(st cache.State) ([]action, []string, error) {
	var actions []action
	var missing []string
	var errs []error
	for _, rule := range r.rules {
		doc, ok := r.cfg.Cache.Get(rule.key(st.DataPlaneID))
		if ok {
			delete(r.missing, rule.Path)
			same, err := matches(rule.Path, doc.GetContent(), rule.Mode)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("render %s to %s: %w", rule, rule.Path, err))
				r.counts.WriteFailures++
			case same:
				r.state.own(rule.Path, doc.GetContent())
			default:
				actions = append(actions, action{rule: rule, content: doc.GetContent(), version: doc.GetVersion()})
			}
			continue
		}
		missing = append(missing, rule.String())
		if !r.missing[rule.Path] {
			r.missing[rule.Path] = true
			r.log.Warn("document to render is not in the config", "document", rule.String(), "path", rule.Path, "revision", st.Revision)
		}
		if a, ok, err := r.planRemove(rule); err != nil {
			errs = append(errs, err)
		} else if ok {
			actions = append(actions, a)
		}
	}
	return actions, missing, errors.Join(errs...)
}

// planRemove decides whether the file of rule, whose document is gone, is
// to be removed: only if the renderer wrote it and it still holds exactly
// what was written. A file changed by someone else, or never written by
// the renderer, is left alone.
func (r *Renderer) planRemove(rule Rule) (action, bool, error) {
	want, ours := r.state.Files[rule.Path]
	if !ours {
		return action{}, false, nil
	}
	fi, err := os.Lstat(rule.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.state.forget(rule.Path)
		return action{}, false, nil
	case err != nil:
		return action{}, false, fmt.Errorf("render %s: inspect %s: %w", rule, rule.Path, err)
	case !fi.Mode().IsRegular():
		r.log.Warn("rendered file was replaced by something else; leaving it", "path", rule.Path, "document", rule.String())
		r.state.forget(rule.Path)
		return action{}, false, nil
	}
	data, err := os.ReadFile(rule.Path)
	if err != nil {
		return action{}, false, fmt.Errorf("render %s: read %s: %w", rule, rule.Path, err)
	}
	if sum(data) != want {
		r.log.Warn("rendered file was changed since the agent wrote it; leaving it", "path", rule.Path, "document", rule.String())
		r.state.forget(rule.Path)
		return action{}, false, nil
	}
	return action{rule: rule, remove: true}, true, nil
}

// matches reports whether path is a regular file holding content with
// mode. Anything but a regular file (a directory, a symlink) is an error:
// the renderer does not replace it.
func matches(path string, content []byte, mode os.FileMode) (bool, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case !fi.Mode().IsRegular():
		return false, fmt.Errorf("%s is not a regular file (%v); not replacing it", path, fi.Mode().Type())
	case fi.Mode().Perm() != mode || fi.Size() != int64(len(content)):
		return false, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	return bytes.Equal(data, content), nil
}

// apply writes or removes one file and records it.
func (r *Renderer) apply(a action, revision int64) error {
	path := a.rule.Path
	if a.remove {
		err := os.Remove(path)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			err = certs.SyncDir(filepath.Dir(path))
		}
		if err != nil {
			r.counts.WriteFailures++
			return fmt.Errorf("render %s: remove %s: %w", a.rule, path, err)
		}
		r.state.forget(path)
		r.counts.Removals++
		r.log.Info("removed rendered file: its document is gone", "path", path, "document", a.rule.String(), "revision", revision)
		return nil
	}
	err := os.MkdirAll(filepath.Dir(path), 0o755)
	if err == nil {
		err = certs.WriteFileAtomic(path, a.content, a.rule.Mode)
	}
	if err != nil {
		r.counts.WriteFailures++
		return fmt.Errorf("render %s: write %s: %w", a.rule, path, err)
	}
	r.state.own(path, a.content)
	r.counts.Writes++
	r.log.Info("rendered file", "path", path, "document", a.rule.String(), "version", a.version, "revision", revision, "bytes", len(a.content))
	return nil
}
