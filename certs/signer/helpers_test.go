package signer_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/certs/signer"
)

const (
	day       = 24 * time.Hour
	deltaType = "application/vnd.cairn.delta+json"
	// The defaults, spelled out for the tests' arithmetic.
	keyTTL = 30 * day
	grace  = 7 * day
)

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// tbWriter routes log output to the test log.
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a Config over dir with the clock and test logging.
func testConfig(tb testing.TB, dir string, clock *fakeClock) signer.Config {
	return signer.Config{Dir: dir, Now: clock.Now, Logger: testLogger(tb)}
}

func mustOpen(tb testing.TB, cfg signer.Config) *signer.Signer {
	tb.Helper()
	s, err := signer.Open(cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return s
}

// agent is what an agent holds: a verifier for the signer's root, updated
// with the signer's key set.
func agent(tb testing.TB, s *signer.Signer, now time.Time) *sign.Verifier {
	tb.Helper()
	v := sign.NewVerifier(s.RootPublicKey())
	if err := v.UpdateKeySet(s.KeySetEnvelope(), now); err != nil {
		tb.Fatalf("UpdateKeySet: %v", err)
	}
	return v
}

// activeID is the id of the key Sign uses now.
func activeID(tb testing.TB, s *signer.Signer) string {
	tb.Helper()
	return s.Sign(deltaType, []byte("probe")).Signatures[0].KeyID
}

// keySet decodes the signer's key set without checking it.
func keySet(tb testing.TB, s *signer.Signer) sign.KeySet {
	tb.Helper()
	var ks sign.KeySet
	if err := json.Unmarshal(s.KeySetEnvelope().Payload, &ks); err != nil {
		tb.Fatal(err)
	}
	return ks
}

func keyIDs(ks sign.KeySet) []string {
	var ids []string
	for _, k := range ks.Keys {
		ids = append(ids, k.KeyID)
	}
	return ids
}

// diskState is signer.json as the tests read and edit it.
type diskState = map[string]any

func readState(tb testing.TB, dir string) diskState {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "signer.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var st diskState
	if err := json.Unmarshal(data, &st); err != nil {
		tb.Fatal(err)
	}
	return st
}

func writeState(tb testing.TB, dir string, st diskState) {
	tb.Helper()
	data, err := json.Marshal(st)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "signer.json"), data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// stateKeys returns the "keys" entries of st.
func stateKeys(tb testing.TB, st diskState) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, k := range st["keys"].([]any) {
		out = append(out, k.(map[string]any))
	}
	return out
}

func checkMode(tb testing.TB, path string, want os.FileMode) {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	if got := fi.Mode() & (os.ModeDir | os.ModePerm); got != want {
		tb.Errorf("%s: got mode %v; want %v", filepath.Base(path), got, want)
	}
}

func listDir(tb testing.TB, dir string) []string {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

// readKeys reads every key file in dir into keys, by file name.
func readKeys(tb testing.TB, dir string, keys map[string]ed25519.PrivateKey) {
	tb.Helper()
	for _, n := range listDir(tb, dir) {
		if !strings.HasSuffix(n, ".key") {
			continue
		}
		k, err := certs.ReadKeyFile(filepath.Join(dir, n))
		if err != nil {
			tb.Fatal(err)
		}
		keys[n] = k.(ed25519.PrivateKey)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
