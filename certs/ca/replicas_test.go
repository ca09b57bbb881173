package ca_test

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs/ca"
)

// These tests stand in for control-plane replicas with several Authorities
// on one directory in one process: the directory lock is held by an open
// file, so Authorities exclude each other here as processes do.

// openAll opens n Authorities on dir at once.
func openAll(t *testing.T, cfg ca.Config, n int) []*ca.Authority {
	t.Helper()
	out := make([]*ca.Authority, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, err := ca.Open(cfg)
			if err != nil {
				t.Errorf("Open %d: %v", i, err)
				return
			}
			out[i] = a
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// checkSame checks that every Authority publishes the same bundle and signs
// with the same CA.
func checkSame(t *testing.T, as []*ca.Authority) {
	t.Helper()
	want := as[0]
	for i, a := range as[1:] {
		if got := a.PinAll(); !slices.Equal(got, want.PinAll()) {
			t.Errorf("authority %d: bundle pins %v; want %v", i+1, got, want.PinAll())
		}
		if !a.Active().Equal(want.Active()) {
			t.Errorf("authority %d: active CA %s; want %s", i+1, caFileID(a.Active()), caFileID(want.Active()))
		}
	}
}

// caFileCount counts the certificate files in dir.
func caFileCount(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, f := range listDir(t, dir) {
		if strings.HasSuffix(f, ".crt") {
			n++
		}
	}
	return n
}

func TestReplicasOpenEmptyDir(t *testing.T) {
	clock := newClock()
	dir := filepath.Join(t.TempDir(), "ca")
	as := openAll(t, testConfig(t, dir, clock), 8)
	checkSame(t, as)
	if got := len(as[0].BundleCerts()); got != 1 {
		t.Errorf("bundle: got %d CAs; want 1", got)
	}
	if got := caFileCount(t, dir); got != 1 {
		t.Errorf("CA files: got %d certificates; want 1", got)
	}
	// An SVID one issues verifies with another's bundle.
	id := agentID(t, "a1")
	for i, a := range as {
		chain := mustSign(t, a, id, time.Hour)
		if err := verify(t, chain, as[(i+1)%len(as)].Bundle(), clock.Now(), id); err != nil {
			t.Errorf("authority %d's SVID: %v", i, err)
		}
	}
}

func TestReplicaTakesUpRotation(t *testing.T) {
	const life = 60 * day
	clock := newClock()
	dir := t.TempDir()
	cfg := testConfig(t, dir, clock)
	cfg.CATTL = life
	a := mustOpen(t, cfg)
	b := mustOpen(t, cfg)
	first := a.Active()
	start := first.NotBefore
	l := first.NotAfter.Sub(start)
	id := agentID(t, "a1")

	// A prepares the next CA; B publishes it after its next MaybeRotate,
	// and reports the change so that its bundle reaches its agents.
	clock.Set(start.Add(l / 2))
	if changed, err := a.MaybeRotate(); err != nil || !changed {
		t.Fatalf("A: MaybeRotate: got %v, %v; want true, nil", changed, err)
	}
	if got := len(b.BundleCerts()); got != 1 {
		t.Fatalf("B before its MaybeRotate: got %d CAs; want 1", got)
	}
	if changed, err := b.MaybeRotate(); err != nil || !changed {
		t.Fatalf("B: MaybeRotate: got %v, %v; want true, nil (A's prepared CA)", changed, err)
	}
	checkSame(t, []*ca.Authority{a, b})
	if changed, err := b.MaybeRotate(); err != nil || changed {
		t.Errorf("B: MaybeRotate again: got %v, %v; want false, nil", changed, err)
	}
	second := a.BundleCerts()[0]

	// Shortly before activation A issues an SVID with the first CA,
	// recording its expiry.
	clock.Set(start.Add(l*2/3 - time.Hour))
	early := mustSign(t, a, id, day)

	// B activates the second CA. The first stays in every bundle while the
	// SVID A issued is valid, though B never issued one with it.
	clock.Set(start.Add(l * 2 / 3))
	if changed, err := b.MaybeRotate(); err != nil || !changed {
		t.Fatalf("B: MaybeRotate: got %v, %v; want true, nil", changed, err)
	}
	if !b.Active().Equal(second) || len(b.BundleCerts()) != 2 {
		t.Fatalf("B: got active %s and %d CAs; want the second CA active and the first retiring", caFileID(b.Active()), len(b.BundleCerts()))
	}
	// A lags: it still publishes the first CA as active and, for an SVID
	// whose expiry is already recorded, signs with it. Both verify with B's
	// bundle.
	if !a.Active().Equal(first) {
		t.Fatalf("A before its MaybeRotate: active CA changed")
	}
	lagging := mustSign(t, a, id, early[0].NotAfter.Sub(clock.Now()))
	if !signedBy(lagging[0], first) {
		t.Errorf("A's SVID within the recorded expiry: not signed by the first CA")
	}
	for name, chain := range map[string][]*x509.Certificate{"early": early, "lagging": lagging} {
		if err := verify(t, chain, b.Bundle(), clock.Now(), id); err != nil {
			t.Errorf("A's %s SVID against B's bundle: %v", name, err)
		}
	}
	// An SVID A must record an expiry for makes it read the directory, so
	// it is signed by the CA active there.
	later := mustSign(t, a, id, day)
	if !signedBy(later[0], second) {
		t.Errorf("A's SVID past the recorded expiry: not signed by the CA B activated")
	}
	if err := verify(t, later, b.Bundle(), clock.Now(), id); err != nil {
		t.Errorf("A's later SVID against B's bundle: %v", err)
	}
	if changed, err := a.MaybeRotate(); err != nil || !changed {
		t.Fatalf("A: MaybeRotate: got %v, %v; want true, nil (B's activation, read while signing)", changed, err)
	}
	checkSame(t, []*ca.Authority{a, b})

	// Once A's SVIDs of the first CA have expired, either replica prunes it.
	clock.Set(early[0].NotAfter.Add(2 * time.Minute))
	if changed, err := b.MaybeRotate(); err != nil || !changed {
		t.Fatalf("B: MaybeRotate: got %v, %v; want true, nil (pruned)", changed, err)
	}
	if changed, err := a.MaybeRotate(); err != nil || !changed {
		t.Fatalf("A: MaybeRotate: got %v, %v; want true, nil (B's prune)", changed, err)
	}
	checkSame(t, []*ca.Authority{a, b})
	if got := len(a.BundleCerts()); got != 1 {
		t.Errorf("bundle: got %d CAs; want 1", got)
	}
	if got := caFileCount(t, dir); got != 1 {
		t.Errorf("CA files: got %d certificates; want 1", got)
	}
	c := mustOpen(t, cfg)
	checkSame(t, []*ca.Authority{a, b, c})
}

// TestReplicaNeverSignsWithPrunedCA: a CA that never signed is pruned as
// soon as the next one is active. A replica that has not read the
// directory since must not sign with it.
func TestReplicaNeverSignsWithPrunedCA(t *testing.T) {
	const life = 60 * day
	clock := newClock()
	cfg := testConfig(t, t.TempDir(), clock)
	cfg.CATTL = life
	a := mustOpen(t, cfg)
	b := mustOpen(t, cfg)
	start := a.Active().NotBefore
	l := a.Active().NotAfter.Sub(start)
	for _, at := range []time.Duration{l / 2, l * 2 / 3} {
		clock.Set(start.Add(at))
		if _, err := b.MaybeRotate(); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(b.BundleCerts()); got != 1 {
		t.Fatalf("B: got %d CAs; want 1 (the first pruned)", got)
	}
	id := agentID(t, "a1")
	chain := mustSign(t, a, id, time.Hour)
	if !signedBy(chain[0], b.Active()) {
		t.Errorf("A signed with a CA other than the active one on disk")
	}
	if err := verify(t, chain, b.Bundle(), clock.Now(), id); err != nil {
		t.Errorf("A's SVID against B's bundle: %v", err)
	}
}

func TestReplicasRotateConcurrently(t *testing.T) {
	const life = 60 * day
	clock := newClock()
	dir := t.TempDir()
	cfg := testConfig(t, dir, clock)
	cfg.CATTL = life
	as := openAll(t, cfg, 4)
	first := as[0].Active()
	start := first.NotBefore
	l := first.NotAfter.Sub(start)
	id := agentID(t, "a1")

	// run has 8 goroutines call MaybeRotate and SignSVID on every
	// Authority, 10 times each. It returns how many MaybeRotate calls
	// reported a change, by Authority, and the latest expiry of the SVIDs
	// issued, by signing CA.
	run := func() ([]int, map[string]time.Time) {
		var changes [4]atomic.Int32
		var mu sync.Mutex
		expiry := map[string]time.Time{}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for n := range 10 {
					i := (g + n) % len(as)
					changed, err := as[i].MaybeRotate()
					if err != nil {
						t.Errorf("authority %d: MaybeRotate: %v", i, err)
						return
					}
					if changed {
						changes[i].Add(1)
					}
					_, csr := newCSR(t)
					// Ttls that differ by more than the recording's
					// granularity, so that most SVIDs are recorded.
					chain, err := as[i].SignSVID(csr, id, time.Hour+time.Duration(g*10+n)*2*time.Minute)
					if err != nil {
						t.Errorf("authority %d: SignSVID: %v", i, err)
						return
					}
					if err := verify(t, chain, as[(i+1)%len(as)].Bundle(), clock.Now(), id); err != nil {
						t.Errorf("authority %d's SVID against another's bundle: %v", i, err)
					}
					mu.Lock()
					ca := fmt.Sprintf("%x", chain[0].AuthorityKeyId)
					if chain[0].NotAfter.After(expiry[ca]) {
						expiry[ca] = chain[0].NotAfter
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		out := make([]int, len(as))
		for i := range out {
			out[i] = int(changes[i].Load())
		}
		return out, expiry
	}
	// checkRecorded checks that authority.json records, for every CA, an
	// expiry no earlier than the latest SVID it signed: no replica wrote
	// over another's record.
	checkRecorded := func(expiry map[string]time.Time) {
		t.Helper()
		recorded := map[string]time.Time{}
		for _, c := range readState(t, dir).CAs {
			recorded[c.ID] = c.LastSVIDExpiry
		}
		for _, c := range as[0].BundleCerts() {
			want, ok := expiry[fmt.Sprintf("%x", c.SubjectKeyId)]
			if ok && recorded[caFileID(c)].Before(want) {
				t.Errorf("CA %s: recorded expiry %v is before that of an SVID it signed, %v", caFileID(c), recorded[caFileID(c)], want)
			}
		}
	}

	clock.Set(start.Add(l / 2)) // every replica is due to prepare
	changes, expiry := run()
	if want := []int{1, 1, 1, 1}; !slices.Equal(changes, want) {
		t.Errorf("prepare: changes reported by each authority: got %v; want %v", changes, want)
	}
	checkSame(t, as)
	if got := len(as[0].BundleCerts()); got != 2 {
		t.Errorf("after preparing: got %d CAs; want 2 (exactly one new CA)", got)
	}
	if got := caFileCount(t, dir); got != 2 {
		t.Errorf("CA files: got %d certificates; want 2", got)
	}
	checkRecorded(expiry)

	// An SVID of the first CA still valid at activation keeps it in the
	// bundle.
	clock.Set(start.Add(l*2/3 - time.Hour))
	mustSign(t, as[0], id, day)
	clock.Set(start.Add(l * 2 / 3)) // every replica is due to activate
	changes, expiry = run()
	if want := []int{1, 1, 1, 1}; !slices.Equal(changes, want) {
		t.Errorf("activate: changes reported by each authority: got %v; want %v", changes, want)
	}
	checkSame(t, as)
	if got := as[0].Active(); got.Equal(first) || len(as[0].BundleCerts()) != 2 {
		t.Errorf("after activating: got %d CAs, first still active %v; want 2 CAs, the second active", len(as[0].BundleCerts()), got.Equal(first))
	}
	checkRecorded(expiry)
	st := states(t, dir)
	if st[caFileID(first)] != "retiring" || len(st) != 2 {
		t.Errorf("authority.json: got %v; want the first CA retiring and one active", st)
	}
}
