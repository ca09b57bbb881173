package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/controlplane/internal/server"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/internal/storetest"
)

func TestHealthReadyMetrics(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			st, err := store.Open(ctx, store.Config{URL: b.URL(t)})
			if err != nil {
				t.Fatal(err)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv, err := server.New(server.Config{Listener: l, Store: st})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			base := "http://" + l.Addr().String()
			get := func(path string) (int, string) {
				t.Helper()
				resp, err := http.Get(base + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.Header.Get("X-Request-Id") == "" {
					t.Errorf("%s: no X-Request-Id header", path)
				}
				return resp.StatusCode, string(body)
			}
			if code, _ := get("/healthz"); code != http.StatusOK {
				t.Fatalf("/healthz = %d; want 200", code)
			}
			if code, _ := get("/readyz"); code != http.StatusOK {
				t.Fatalf("/readyz = %d; want 200", code)
			}
			// An unauthenticated call still shows up in the metrics.
			resp, err := http.Post(base+"/cairn.admin.v1.TenantService/ListTenants", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("call without token = %d; want 401", resp.StatusCode)
			}
			_, metrics := get("/metrics")
			want := `cairn_admin_rpc_requests_total{code="unauthenticated",procedure="/cairn.admin.v1.TenantService/ListTenants"} 1`
			if !strings.Contains(metrics, want) {
				t.Fatalf("metrics lack %q", want)
			}
			if !strings.Contains(metrics, "cairn_admin_rpc_duration_seconds_bucket") {
				t.Fatal("metrics lack the latency histogram")
			}
			// With the store gone, the server is alive but not ready.
			st.Close()
			if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
				t.Fatalf("/readyz with the store closed = %d; want 503", code)
			}
			if code, _ := get("/healthz"); code != http.StatusOK {
				t.Fatalf("/healthz with the store closed = %d; want 200", code)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
		})
	}
}
