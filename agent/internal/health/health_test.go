package health_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/agent/internal/health"
)

func TestEndpoints(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	state := health.Snapshot{AppliedRevision: 7, CacheBytes: 4096, Applied: 3, Nacks: 1, Stale: true,
		LastFresh: time.Unix(1700000000, 0), SVIDExpiry: time.Unix(1700003600, 0)}
	srv, err := health.New(health.Config{Listener: l, State: func() health.Snapshot { return state }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		return string(b)
	}
	if h := get("/healthz"); !strings.Contains(h, "revision 7") || !strings.Contains(h, "stale true") {
		t.Fatalf("/healthz = %q", h)
	}
	m := get("/metrics")
	for _, want := range []string{
		"cairn_agent_applied_revision 7",
		"cairn_agent_cache_bytes 4096",
		"cairn_agent_stale 1",
		"cairn_agent_updates_applied_total 3",
		"cairn_agent_updates_refused_total 1",
		"cairn_agent_svid_expiry_timestamp_seconds 1.7000036e+09",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
