package ca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"maps"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/certs"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
)

func TestRotation(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	a := mustOpen(t, testConfig(t, dir, clock))
	old := a.Active()
	oldID := caFileID(old)
	id := agentID(t, "a1")

	clock.Advance(time.Hour)
	if err := a.Prepare(); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	bundle := a.BundleCerts()
	if len(bundle) != 2 {
		t.Fatalf("after Prepare: got %d CAs in the bundle; want 2", len(bundle))
	}
	next := bundle[0]
	nextID := caFileID(next)
	if next.Equal(old) || !bundle[1].Equal(old) {
		t.Errorf("after Prepare: bundle is not [prepared, active]")
	}
	if !a.Active().Equal(old) {
		t.Errorf("after Prepare: active CA changed")
	}
	if got, want := a.PinAll(), []string{certs.SPKIPin(next), certs.SPKIPin(old)}; !slices.Equal(got, want) {
		t.Errorf("PinAll: got %v; want %v", got, want)
	}
	if got, want := states(t, dir), map[string]string{oldID: "active", nextID: "prepared"}; !maps.Equal(got, want) {
		t.Errorf("authority.json: got %v; want %v", got, want)
	}
	if err := a.Prepare(); err == nil {
		t.Errorf("second Prepare: got nil error; want error")
	}
	beforeSVID := mustSign(t, a, id, 12*time.Hour)
	if !signedBy(beforeSVID[0], old) {
		t.Errorf("SVID after Prepare is not signed by the old CA")
	}

	clock.Advance(time.Hour)
	if err := a.Activate(); err != nil {
		t.Fatalf("Activate: %v", err)
	}
	if !a.Active().Equal(next) {
		t.Errorf("after Activate: active is not the prepared CA")
	}
	if got := a.Pin(); got != certs.SPKIPin(next) {
		t.Errorf("Pin: got %s; want the new CA's", got)
	}
	if got, want := states(t, dir), map[string]string{oldID: "retiring", nextID: "active"}; !maps.Equal(got, want) {
		t.Errorf("authority.json: got %v; want %v", got, want)
	}
	if err := a.Activate(); err == nil {
		t.Errorf("second Activate: got nil error; want error")
	}
	afterSVID := mustSign(t, a, id, time.Hour)
	if !signedBy(afterSVID[0], next) {
		t.Errorf("SVID after Activate is not signed by the new CA")
	}
	for name, chain := range map[string][]*x509.Certificate{"old": beforeSVID, "new": afterSVID} {
		if err := verify(t, chain, a.Bundle(), clock.Now(), id); err != nil {
			t.Errorf("%s SVID: Verify: %v", name, err)
		}
	}

	// The old CA stays while its SVID is valid ...
	clock.Set(beforeSVID[0].NotAfter.Add(-time.Second))
	if err := a.Prune(); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if got := len(a.BundleCerts()); got != 2 {
		t.Errorf("Prune before the old SVID expired: got %d CAs; want 2", got)
	}
	if err := verify(t, beforeSVID, a.Bundle(), clock.Now(), id); err != nil {
		t.Errorf("old SVID just before expiry: Verify: %v", err)
	}
	// ... and survives a restart in that state.
	if got := len(mustOpen(t, testConfig(t, dir, clock)).BundleCerts()); got != 2 {
		t.Errorf("reopened before the old SVID expired: got %d CAs; want 2", got)
	}

	// It goes once the SVID has expired (plus the rounding of the recorded
	// expiry to the minute).
	clock.Set(beforeSVID[0].NotAfter.Add(time.Minute + time.Second))
	if err := a.Prune(); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if got := a.BundleCerts(); len(got) != 1 || !got[0].Equal(next) {
		t.Errorf("Prune after the old SVID expired: got %d CAs; want only the new one", len(got))
	}
	for _, ext := range []string{".crt", ".key"} {
		if fileExists(t, filepath.Join(dir, oldID+ext)) {
			t.Errorf("old CA's %s file still on disk", ext)
		}
	}
	if got, want := states(t, dir), map[string]string{nextID: "active"}; !maps.Equal(got, want) {
		t.Errorf("authority.json: got %v; want %v", got, want)
	}
	if d := readState(t, dir).Discard; len(d) != 0 {
		t.Errorf("discard: got %v; want none", d)
	}
	if err := verify(t, afterSVID, a.Bundle(), afterSVID[0].NotAfter.Add(-time.Second), id); err != nil {
		t.Errorf("new SVID after Prune: Verify: %v", err)
	}
}

func TestPruneNeverSigned(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	a := mustOpen(t, testConfig(t, dir, clock))
	clock.Advance(time.Hour)
	if err := a.Prepare(); err != nil {
		t.Fatal(err)
	}
	if err := a.Activate(); err != nil {
		t.Fatal(err)
	}
	// The old CA signed nothing, so nothing needs it once it has stopped
	// being the active one.
	clock.Advance(time.Second)
	if err := a.Prune(); err != nil {
		t.Fatal(err)
	}
	if got := len(a.BundleCerts()); got != 1 {
		t.Errorf("got %d CAs; want 1", got)
	}
	// Prune leaves active and prepared CAs alone whatever their age.
	if err := a.Prepare(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * 365 * day)
	if err := a.Prune(); err != nil {
		t.Fatal(err)
	}
	if got := len(a.BundleCerts()); got != 2 {
		t.Errorf("got %d CAs; want 2 (active and prepared)", got)
	}
}

func TestReopenAfterRotation(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	a := mustOpen(t, testConfig(t, dir, clock))
	id := agentID(t, "a1")
	clock.Advance(time.Hour)
	if err := a.Prepare(); err != nil {
		t.Fatal(err)
	}
	oldSVID := mustSign(t, a, id, day)
	if err := a.Activate(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if err := a.Prepare(); err != nil {
		t.Fatal(err)
	}
	want := a.BundleCerts() // prepared, active, retiring
	if len(want) != 3 {
		t.Fatalf("got %d CAs; want 3", len(want))
	}

	b := mustOpen(t, testConfig(t, dir, clock))
	got := b.BundleCerts()
	if !slices.EqualFunc(got, want, (*x509.Certificate).Equal) {
		t.Errorf("reopened bundle differs")
	}
	if !b.Active().Equal(a.Active()) || b.Pin() != a.Pin() {
		t.Errorf("reopened active CA differs")
	}
	if err := verify(t, oldSVID, b.Bundle(), clock.Now(), id); err != nil {
		t.Errorf("old SVID against reopened bundle: %v", err)
	}
	// The prepared one is still prepared: Activate works, Prepare does not.
	if err := b.Prepare(); err == nil {
		t.Errorf("Prepare on reopened authority with a prepared CA: got nil error; want error")
	}
	// The retiring CA's last_svid_expiry came back too.
	clock.Set(oldSVID[0].NotAfter.Add(-time.Minute))
	if err := b.Prune(); err != nil {
		t.Fatal(err)
	}
	if got := len(b.BundleCerts()); got != 3 {
		t.Errorf("Prune before old SVID expiry after reopen: got %d CAs; want 3", got)
	}
	if err := b.Activate(); err != nil {
		t.Fatalf("Activate on reopened authority: %v", err)
	}
	if !b.Active().Equal(want[0]) {
		t.Errorf("Activate activated the wrong CA")
	}
}

func TestMaybeRotateSchedule(t *testing.T) {
	const life = 60 * day
	clock := newClock()
	cfg := testConfig(t, t.TempDir(), clock)
	cfg.CATTL = life
	a := mustOpen(t, cfg)
	first := a.Active()
	start := first.NotBefore // lifetimes count from NotBefore
	l := first.NotAfter.Sub(start)

	step := func(at time.Duration, wantChanged bool, wantBundle int, wantActive *x509.Certificate) {
		t.Helper()
		clock.Set(start.Add(at))
		changed, err := a.MaybeRotate()
		if err != nil {
			t.Fatalf("at %v: MaybeRotate: %v", at, err)
		}
		if changed != wantChanged {
			t.Errorf("at %v: changed: got %v; want %v", at, changed, wantChanged)
		}
		if got := len(a.BundleCerts()); got != wantBundle {
			t.Errorf("at %v: got %d CAs; want %d", at, got, wantBundle)
		}
		if wantActive != nil && !a.Active().Equal(wantActive) {
			t.Errorf("at %v: unexpected active CA", at)
		}
	}
	step(0, false, 1, first)
	step(l/2-time.Second, false, 1, first)
	step(l/2, true, 2, first) // prepared
	second := a.BundleCerts()[0]
	step(l/2+time.Hour, false, 2, first)
	step(l*2/3-time.Second, false, 2, first)
	step(l*2/3, true, 1, second) // activated; the old one never signed, so pruned at once
	step(l*2/3+time.Hour, false, 1, second)

	t.Run("late prepare delays activation", func(t *testing.T) {
		clock := newClock()
		cfg := testConfig(t, t.TempDir(), clock)
		cfg.CATTL = life
		a := mustOpen(t, cfg)
		first := a.Active()
		start := first.NotBefore
		l := first.NotAfter.Sub(start)
		// The control plane was down from before L/2 until 3L/4.
		clock.Set(start.Add(l * 3 / 4))
		if changed, err := a.MaybeRotate(); err != nil || !changed {
			t.Fatalf("MaybeRotate: got %v, %v; want true, nil", changed, err)
		}
		if !a.Active().Equal(first) || len(a.BundleCerts()) != 2 {
			t.Fatalf("got active changed or bundle of %d; want prepared only", len(a.BundleCerts()))
		}
		clock.Advance(l/6 - time.Minute)
		if changed, _ := a.MaybeRotate(); changed {
			t.Errorf("activated before the prepared CA was published for L/6")
		}
		clock.Advance(time.Minute)
		if changed, _ := a.MaybeRotate(); !changed || a.Active().Equal(first) {
			t.Errorf("not activated once the prepared CA was published for L/6")
		}
	})

	t.Run("about to expire activates at once", func(t *testing.T) {
		clock := newClock()
		cfg := testConfig(t, t.TempDir(), clock)
		cfg.CATTL = life
		a := mustOpen(t, cfg)
		first := a.Active()
		clock.Set(first.NotAfter.Add(-time.Hour))
		if changed, err := a.MaybeRotate(); err != nil || !changed {
			t.Fatalf("MaybeRotate: got %v, %v; want true, nil", changed, err)
		}
		if a.Active().Equal(first) {
			t.Errorf("active CA within MaxSVIDTTL of expiry was not replaced")
		}
		id := agentID(t, "a1")
		chain := mustSign(t, a, id, day)
		if got, want := chain[0].NotAfter, clock.Now().Add(day); !got.Equal(want) {
			t.Errorf("SVID NotAfter: got %v; want %v", got, want)
		}
	})
}

// TestMaybeRotateYear runs a year of hourly-ish MaybeRotate calls and SVID
// renewals with 90-day CAs, and checks at every step that every SVID issued
// and not yet expired verifies against the current bundle, and that a new
// SVID verifies against the bundle of a day ago (an agent that has not
// fetched it since its last renewal).
func TestMaybeRotateYear(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	clock := newClock()
	dir := t.TempDir()
	cfg := testConfig(t, dir, clock)
	cfg.CATTL = 90 * day
	cfg.Logger = slog.New(slog.DiscardHandler)
	a := mustOpen(t, cfg)
	id := agentID(t, "a1")

	const step = 7 * time.Hour // not a divisor of a day, so steps drift across boundaries
	type issued struct {
		chain []*x509.Certificate
	}
	type snapshot struct {
		at     time.Time
		bundle *x509bundle.Bundle
	}
	var (
		live        []issued
		history     []snapshot
		activations int
		maxBundle   int
		minBundle   = 99
		lastActive  = a.Active()
		end         = clock.Now().Add(365 * day)
	)
	for now := clock.Now(); now.Before(end); now = now.Add(step) {
		clock.Set(now)
		if _, err := a.MaybeRotate(); err != nil {
			t.Fatalf("%v: MaybeRotate: %v", now, err)
		}
		if !a.Active().Equal(lastActive) {
			activations++
			lastActive = a.Active()
		}
		bundle := a.Bundle()
		n := len(bundle.X509Authorities())
		maxBundle, minBundle = max(maxBundle, n), min(minBundle, n)
		history = append(history, snapshot{now, bundle})

		// Vary the ttl so expiries do not line up with steps.
		ttl := day - time.Duration(len(history)%5)*time.Hour
		chain := mustSign(t, a, id, ttl)
		live = append(live, issued{chain})

		live = slices.DeleteFunc(live, func(s issued) bool { return !now.Before(s.chain[0].NotAfter) })
		for _, s := range live {
			if err := verify(t, s.chain, bundle, now, id); err != nil {
				t.Fatalf("%v: SVID issued at %v does not verify: %v", now, s.chain[0].NotBefore, err)
			}
		}
		// The newest bundle at least a day old.
		for i := len(history) - 1; i >= 0; i-- {
			if now.Sub(history[i].at) >= day {
				if err := verify(t, chain, history[i].bundle, now, id); err != nil {
					t.Fatalf("%v: new SVID does not verify against the bundle from %v: %v", now, history[i].at, err)
				}
				break
			}
		}
	}
	// 90-day CAs activated at 2/3 of a life that began at the previous
	// one's 1/2: a new CA about every 45 days.
	if activations < 6 {
		t.Errorf("got %d activations in a year; want at least 6", activations)
	}
	if maxBundle > 3 || minBundle != 1 {
		t.Errorf("bundle size ranged %d..%d; want 1..at most 3", minBundle, maxBundle)
	}
	// Only the current CAs are on disk, with the state and lock files.
	if got, want := len(listDir(t, dir)), 2+2*len(a.BundleCerts()); got != want {
		t.Errorf("got %d files in the CA directory; want %d", got, want)
	}
	// And they come back.
	b := mustOpen(t, cfg)
	if !slices.EqualFunc(b.BundleCerts(), a.BundleCerts(), (*x509.Certificate).Equal) {
		t.Errorf("reopened bundle differs")
	}
}

func TestConcurrentUse(t *testing.T) {
	clock := newClock()
	a := mustOpen(t, testConfig(t, t.TempDir(), clock))
	id := agentID(t, "a1")
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 4 {
		csrs := make([][]byte, 10)
		for i := range csrs {
			_, csrs[i] = newCSR(t)
		}
		wg.Go(func() {
			for _, csr := range csrs {
				chain, err := a.SignSVID(csr, id, time.Hour)
				if err != nil {
					errs <- err
					return
				}
				// The bundle after signing always trusts what was signed.
				if err := verify(t, chain, a.Bundle(), clock.Now(), id); err != nil {
					errs <- err
					return
				}
				_ = a.Pin()
				_ = a.PinAll()
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if err := a.Prepare(); err != nil {
				errs <- err
				return
			}
			if err := a.Activate(); err != nil {
				errs <- err
				return
			}
			if _, err := a.MaybeRotate(); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNoKeyMaterialInLogs(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	var buf syncBuffer
	cfg := testConfig(t, dir, clock)
	cfg.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := mustOpen(t, cfg)
	id := agentID(t, "a1")

	// Collect every CA key as it exists, then exercise everything that logs.
	var keys []any
	addKeys := func() {
		for _, c := range a.BundleCerts() {
			k, err := certs.ReadKeyFile(filepath.Join(dir, caFileID(c)+".key"))
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
	}
	agentKey, csr := newCSR(t)
	keys = append(keys, agentKey)
	if _, err := a.SignSVID(csr, id, time.Hour); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if err := a.Prepare(); err != nil {
		t.Fatal(err)
	}
	addKeys()
	if err := a.Activate(); err != nil {
		t.Fatal(err)
	}
	mustSign(t, a, id, time.Hour)
	clock.Advance(2 * time.Hour)
	if err := a.Prune(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(200 * day)
	if _, err := a.MaybeRotate(); err != nil {
		t.Fatal(err)
	}
	addKeys()
	mustOpen(t, cfg)

	out := buf.String()
	if !strings.Contains(out, "CA activated") || !strings.Contains(out, "SVID issued") {
		t.Fatalf("log output is missing expected events; got:\n%s", out)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("log output contains a PEM private key")
	}
	for i, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		d := privateScalar(t, k)
		for _, s := range []string{
			d.String(), d.Text(16), hex.EncodeToString(d.Bytes()), strings.ToUpper(d.Text(16)),
			base64.StdEncoding.EncodeToString(d.Bytes()),
			base64.StdEncoding.EncodeToString(der)[:40],
		} {
			if strings.Contains(out, s) {
				t.Errorf("log output contains key %d's private value (%q...)", i, s[:8])
			}
		}
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

// privateScalar is the private key's secret D.
func privateScalar(tb testing.TB, k any) *big.Int {
	tb.Helper()
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		tb.Fatalf("got %T; want *ecdsa.PrivateKey", k)
	}
	b, err := ek.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return new(big.Int).SetBytes(b)
}
