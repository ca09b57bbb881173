package auth_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

func TestParseSecret(t *testing.T) {
	good := auth.NewSecret()
	for _, tc := range []struct {
		name, tok string
		ok        bool
	}{
		{"round trip", good.String(), true},
		{"surrounding space", "  " + good.String() + "\n", true},
		{"no prefix", strings.TrimPrefix(good.String(), "cairn_"), false},
		{"short secret", "cairn_" + good.ID + "_abc", false},
		{"bad id", "cairn_not-a-uuid-not-a-uuid-not-a-uuid-xx_" + strings.Repeat("a", 43), false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := auth.ParseSecret(tc.tok)
			if (err == nil) != tc.ok {
				t.Fatalf("got error %v; want ok=%v", err, tc.ok)
			}
			if tc.ok && (s.ID != good.ID || !s.Matches(good.Hash())) {
				t.Fatalf("got %s; want %s", s.ID, good.ID)
			}
		})
	}
	if other := auth.NewSecret(); other.Matches(good.Hash()) {
		t.Fatal("a different secret matches the hash")
	}
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Config{URL: storetest.SQLiteURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestBootstrapPrintsOnce(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	var out bytes.Buffer
	if err := auth.Bootstrap(ctx, st, "", &out); err != nil {
		t.Fatal(err)
	}
	var tok string
	for _, f := range strings.Fields(out.String()) {
		if strings.HasPrefix(f, "cairn_") {
			tok = f
		}
	}
	p, err := auth.NewAuthenticator(st, nil).Authenticate(ctx, "Bearer "+tok)
	if err != nil || p.Role != adminv1.Role_ROLE_ADMIN || !p.OperatorWide() {
		t.Fatalf("printed token authenticates as %+v, %v; want operator-wide admin", p, err)
	}
	out.Reset()
	if err := auth.Bootstrap(ctx, st, "", &out); err != nil || out.Len() != 0 {
		t.Fatalf("second bootstrap printed %q, %v; want nothing", out.String(), err)
	}
}

func TestBootstrapFile(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "admin.token")
	if err := auth.Bootstrap(ctx, st, path, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	b, _ := os.ReadFile(path)
	if _, err := auth.NewAuthenticator(st, nil).Authenticate(ctx, "Bearer "+strings.TrimSpace(string(b))); err != nil {
		t.Fatalf("file token does not authenticate: %v", err)
	}
	// Idempotent with the same file.
	if err := auth.Bootstrap(ctx, st, path, nil); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.CountTokens(ctx); n != 1 {
		t.Fatalf("tokens = %d; want 1", n)
	}
	// A token provisioned by the operator (e.g. a Kubernetes Secret) is
	// registered on a fresh store.
	st2 := openStore(t)
	if err := auth.Bootstrap(ctx, st2, path, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.NewAuthenticator(st2, nil).Authenticate(ctx, "Bearer "+strings.TrimSpace(string(b))); err != nil {
		t.Fatalf("provisioned token does not authenticate: %v", err)
	}
	// Replicas starting together on one fresh database with the same
	// mounted file all succeed.
	st3 := openStore(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- auth.Bootstrap(ctx, st3, path, nil) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent bootstrap: %v", err)
		}
	}
	// A file whose secret differs from the stored token is refused.
	forged := auth.NewSecret()
	parsed, _ := auth.ParseSecret(string(b))
	bad := strings.Replace(forged.String(), forged.ID, parsed.ID, 1)
	badPath := filepath.Join(t.TempDir(), "bad.token")
	os.WriteFile(badPath, []byte(bad), 0o600)
	if err := auth.Bootstrap(ctx, st, badPath, nil); err == nil {
		t.Fatal("mismatched token file accepted")
	}
	os.WriteFile(badPath, []byte("garbage"), 0o600)
	if err := auth.Bootstrap(ctx, st, badPath, nil); err == nil {
		t.Fatal("malformed token file accepted")
	}
}

func TestAuthenticate(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	a := auth.NewAuthenticator(st, clock)
	sec := auth.NewSecret()
	exp := now.Add(time.Hour)
	if _, err := st.CreateToken(ctx, store.Actor{ID: "t"}, "", store.APIToken{ID: sec.ID, Role: 1, ExpireTime: &exp}, sec.Hash()); err != nil {
		t.Fatal(err)
	}
	wrong := strings.Replace(auth.NewSecret().String(), auth.NewSecret().ID, sec.ID, 1)
	for _, tc := range []struct {
		name, header string
		advance      time.Duration
		ok           bool
	}{
		{"valid", "Bearer " + sec.String(), 0, true},
		{"no scheme", sec.String(), 0, false},
		{"basic", "Basic " + sec.String(), 0, false},
		{"unknown id", "Bearer " + auth.NewSecret().String(), 0, false},
		{"wrong secret", "Bearer " + wrong, 0, false},
		{"expired", "Bearer " + sec.String(), 2 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now = time.Now().Add(tc.advance)
			_, err := a.Authenticate(ctx, tc.header)
			if (err == nil) != tc.ok {
				t.Fatalf("got %v; want ok=%v", err, tc.ok)
			}
		})
	}
	now = time.Now()
	if _, err := st.RevokeToken(ctx, store.Actor{ID: "t"}, "", sec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, "Bearer "+sec.String()); err == nil {
		t.Fatal("revoked token accepted")
	}
}

func TestRequiredRole(t *testing.T) {
	for proc, want := range map[string]adminv1.Role{
		"/cairn.admin.v1.TenantService/GetTenant":            adminv1.Role_ROLE_VIEWER,
		"/cairn.admin.v1.ConfigService/ListConfigDocuments":  adminv1.Role_ROLE_VIEWER,
		"/cairn.admin.v1.ConfigService/UpdateConfigDocument": adminv1.Role_ROLE_OPERATOR,
		"/cairn.admin.v1.ClusterService/DeleteCluster":       adminv1.Role_ROLE_OPERATOR,
		"/cairn.admin.v1.TokenService/ListTokens":            adminv1.Role_ROLE_ADMIN,
		"/cairn.admin.v1.TokenService/CreateToken":           adminv1.Role_ROLE_ADMIN,
		// Reads are what the contract declares free of side effects,
		// whatever their name.
		"/cairn.admin.v1.ClusterService/SummarizeVersions": adminv1.Role_ROLE_VIEWER,
		"/cairn.admin.v1.NoSuchService/GetThing":           adminv1.Role_ROLE_OPERATOR,
	} {
		if got := auth.RequiredRole(proc); got != want {
			t.Errorf("RequiredRole(%s) = %v; want %v", proc, got, want)
		}
	}
}
