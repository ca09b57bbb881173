package agentwork

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWrap(t *testing.T) {
	f, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := f.Dir()
	for _, id := range []int{7, 8} {
		if err := f.Prepare(id); err != nil {
			t.Fatal(err)
		}
	}
	type got struct {
		id    int
		value string
	}
	var passed []got
	isChange := func(v []byte) bool { return strings.HasPrefix(string(v), "chg-") }
	deliver := f.Wrap(isChange, func(id int, value []byte) {
		// The value is on disk before it is passed on.
		if b, err := os.ReadFile(f.path(id)); string(value) != "seed" && (err != nil || string(b) != string(value)) {
			t.Errorf("watcher %d's file when %q was passed on: %q, %v; want the value", id, value, b, err)
		}
		passed = append(passed, got{id, string(value)})
	})

	signed := f.Sign("chg-1|xxxx")
	if len(signed) != len("chg-1|xxxx")+Overhead {
		t.Errorf("signed value is %d bytes; want %d + Overhead %d", len(signed), len("chg-1|xxxx"), Overhead)
	}
	deliver(7, []byte(signed))
	if len(passed) != 1 || passed[0] != (got{7, "chg-1|xxxx"}) {
		t.Fatalf("passed on %v; want the payload for watcher 7", passed)
	}

	tampered := []byte(signed)
	tampered[4] = '2' // "chg-2|…" under change 1's signature
	for _, bad := range []struct {
		id    int
		value []byte
	}{
		{7, tampered},
		{7, []byte("chg-3|xxxx" + sigSep + "not base64!")},
		{8, []byte(f.Sign("chg-4|xxxx")[1:])}, // a byte short
		{8, []byte("chg-5|xxxx")},             // unsigned
		{9, []byte(f.Sign("chg-6|xxxx"))},     // no directory for watcher 9
	} {
		deliver(bad.id, bad.value)
	}
	if n, first := f.Failures(); n != 5 || first == "" {
		t.Errorf("failures %d (%q); want 5 with the first error", n, first)
	}
	if len(passed) != 1 || f.Applied() != 1 {
		t.Errorf("passed on %d, applied %d after failures; want 1, 1", len(passed), f.Applied())
	}
	if b, _ := os.ReadFile(f.path(7)); string(b) != "chg-1|xxxx" {
		t.Errorf("watcher 7's file after refused values: %q; want the last good payload", b)
	}
	if ents, _ := os.ReadDir(f.watcherDir(7)); len(ents) != 1 {
		t.Errorf("%d files in watcher 7's directory; want its file alone (no temporary files left)", len(ents))
	}

	deliver(7, []byte("seed"))
	if len(passed) != 2 || passed[1] != (got{7, "seed"}) {
		t.Errorf("unsigned non-change passed on as %v; want it as it is", passed[1:])
	}

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory after Close: %v; want it removed", err)
	}
}

// TestCloseRemovesOnlyItsOwn: New makes its own directory in the parent,
// so Close cannot remove anything it did not make.
func TestCloseRemovesOnlyItsOwn(t *testing.T) {
	parent := t.TempDir()
	keep := filepath.Join(parent, "keep")
	if err := os.WriteFile(keep, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := New(parent)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(f.Dir()) != parent {
		t.Errorf("New(%s) made %s; want a directory in the parent", parent, f.Dir())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the parent's other file after Close: %v; want it kept", err)
	}
	if _, err := os.Stat(f.Dir()); !os.IsNotExist(err) {
		t.Errorf("the fleet's directory after Close: %v; want it removed", err)
	}
}
