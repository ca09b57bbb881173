// Package health serves the agent's /healthz and /metrics over plain HTTP
// on a local address, for the host's supervisor and Prometheus. It reads
// the agent's state through functions it is given; it changes nothing.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Snapshot is the agent state the endpoints report.
type Snapshot struct {
	// AppliedRevision and CacheBytes describe the config cache.
	AppliedRevision int64
	CacheBytes      int64
	// Applied, Nacks count updates applied and refused since start.
	Applied, Nacks int64
	// LastFresh is when the config was last known current.
	LastFresh time.Time
	// Stale: nothing fresh from the control plane for too long.
	Stale bool
	// SVIDExpiry is when the agent's SVID expires.
	SVIDExpiry time.Time
	// Connected: a config stream is open. Lag is the newest signed
	// revision seen minus the applied one.
	Connected bool
	Lag       int64
	// ReportsQueued wait on disk for the control plane; ReportsDelivered
	// and ReportsDropped (queue full or refused) count since start and
	// since the queue was created.
	ReportsQueued                    int
	ReportsDelivered, ReportsDropped int64
}

// Config configures the server.
type Config struct {
	// Listener is where to serve. Required.
	Listener net.Listener
	// State returns the current state. Required.
	State func() Snapshot
	// Logger; nil discards.
	Logger *slog.Logger
}

// Server serves /healthz and /metrics.
type Server struct {
	cfg  Config
	http *http.Server
}

// New builds the handlers.
func New(cfg Config) (*Server, error) {
	if cfg.Listener == nil || cfg.State == nil {
		return nil, errors.New("health: Listener and State are required")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func(Snapshot) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(cfg.State()) }))
	}
	counter := func(name, help string, f func(Snapshot) float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(cfg.State()) }))
	}
	gauge("cairn_agent_applied_revision", "Config revision in the agent's cache.", func(s Snapshot) float64 { return float64(s.AppliedRevision) })
	gauge("cairn_agent_cache_bytes", "Size of the agent's config cache file.", func(s Snapshot) float64 { return float64(s.CacheBytes) })
	gauge("cairn_agent_stale", "1 when nothing fresh came from the control plane for too long.", func(s Snapshot) float64 {
		if s.Stale {
			return 1
		}
		return 0
	})
	gauge("cairn_agent_last_fresh_timestamp_seconds", "When the config was last known current.", func(s Snapshot) float64 { return unix(s.LastFresh) })
	gauge("cairn_agent_svid_expiry_timestamp_seconds", "When the agent's SVID expires.", func(s Snapshot) float64 { return unix(s.SVIDExpiry) })
	gauge("cairn_agent_stream_connected", "1 while a config stream to the control plane is open.", func(s Snapshot) float64 {
		if s.Connected {
			return 1
		}
		return 0
	})
	gauge("cairn_agent_lag_revisions", "Newest signed revision seen minus the applied revision.", func(s Snapshot) float64 { return float64(s.Lag) })
	gauge("cairn_agent_report_queue_length", "Status and metric reports waiting on disk for the control plane.", func(s Snapshot) float64 { return float64(s.ReportsQueued) })
	counter("cairn_agent_reports_delivered_total", "Reports the control plane acknowledged since the agent started.", func(s Snapshot) float64 { return float64(s.ReportsDelivered) })
	counter("cairn_agent_reports_dropped_total", "Reports dropped (queue full, or refused as invalid) since the queue was created.", func(s Snapshot) float64 { return float64(s.ReportsDropped) })
	counter("cairn_agent_updates_applied_total", "Config updates applied.", func(s Snapshot) float64 { return float64(s.Applied) })
	counter("cairn_agent_updates_refused_total", "Config updates refused (NACKed).", func(s Snapshot) float64 { return float64(s.Nacks) })

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// The agent serves its cache even when stale, so it is healthy;
		// staleness is reported, not fatal.
		s := cfg.State()
		fmt.Fprintf(w, "ok\nrevision %d\nstale %t\n", s.AppliedRevision, s.Stale)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}, nil
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.cfg.Listener) }()
	select {
	case err := <-errc:
		return fmt.Errorf("health: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return s.http.Shutdown(sctx)
	}
}
