// Package server serves the admin API: connect services (gRPC, gRPC-Web and
// Connect/JSON on one port), gRPC reflection, health and readiness, and
// Prometheus metrics, behind TLS or, when asked explicitly, plaintext. It
// composes the pieces; it holds no business logic.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cairnhq/cairn/certs/ca"
	"github.com/cairnhq/cairn/controlplane/internal/adminapi"
	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/requestid"
	"github.com/cairnhq/cairn/controlplane/internal/store"
)

// DefaultMaxMessageBytes bounds a request body; larger ones are refused
// with ResourceExhausted.
const DefaultMaxMessageBytes = 4 << 20

// Config configures the admin server.
type Config struct {
	// Listener is where to serve. Required.
	Listener net.Listener
	// Store keeps all state. Required.
	Store *store.Store
	// TLS, when set, serves HTTPS (HTTP/2 and HTTP/1.1). Nil serves
	// plaintext HTTP/1.1 and h2c; the command allows that only with
	// --insecure.
	TLS *tls.Config
	// Logger receives request logs (JSON in production). Nil discards.
	Logger *slog.Logger
	// MaxMessageBytes bounds request bodies; 0 means
	// DefaultMaxMessageBytes.
	MaxMessageBytes int
	// Now is the clock for token expiry; nil means time.Now.
	Now func() time.Time
	// CA is the agent CA whose bundle the admin API hands out; nil
	// answers GetTrustBundle with Unavailable.
	CA *ca.Authority
	// SigningRoot is the config-signing root public key GetTrustBundle
	// returns; nil returns none.
	SigningRoot ed25519.PublicKey
	// JoinTokenTTL is the default join token lifetime; 0 means 10 minutes.
	JoinTokenTTL time.Duration
	// Metrics are served on /metrics beside the admin API's own (the
	// agent API's config stream metrics); nil adds none.
	Metrics []prometheus.Collector
}

// Server is the admin API server.
type Server struct {
	cfg  Config
	log  *slog.Logger
	http *http.Server
}

// New checks cfg and builds the handler tree.
func New(cfg Config) (*Server, error) {
	if cfg.Listener == nil || cfg.Store == nil {
		return nil, errors.New("server: Listener and Store are required")
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cfg.Metrics...)
	metrics := newRPCMetrics(reg)

	authn := auth.NewAuthenticator(cfg.Store, cfg.Now)
	svcs, err := adminapi.New(adminapi.Config{
		Store:        cfg.Store,
		Logger:       log,
		CA:           cfg.CA,
		SigningRoot:  cfg.SigningRoot,
		JoinTokenTTL: cfg.JoinTokenTTL,
		Now:          cfg.Now,
		HandlerOptions: []connect.HandlerOption{
			connect.WithInterceptors(metrics, logInterceptor{log}, authn.Interceptor()),
			connect.WithReadMaxBytes(cfg.MaxMessageBytes),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	mux := http.NewServeMux()
	svcs.Register(mux)
	// Reflection describes the schema only, which is public (proto/), so
	// it needs no token; every service call does.
	reflector := grpcreflect.NewStaticReflector(adminapi.ServiceNames...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := cfg.Store.Ping(ctx); err != nil {
			log.WarnContext(r.Context(), "not ready: store unreachable", "error", err)
			http.Error(w, "store unreachable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if cfg.TLS != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	hs := &http.Server{
		Handler:           requestid.Middleware(limitBody(mux, int64(cfg.MaxMessageBytes)+1024)),
		TLSConfig:         cfg.TLS,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return &Server{cfg: cfg, log: log, http: hs}, nil
}

// limitBody refuses bodies far beyond the message limit before connect
// reads them, so a client cannot make the server buffer an unbounded body.
func limitBody(next http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// Run serves until ctx ends, then shuts down gracefully (in-flight calls
// get up to 10 seconds).
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		if s.cfg.TLS != nil {
			errc <- s.http.ServeTLS(s.cfg.Listener, "", "")
		} else {
			errc <- s.http.Serve(s.cfg.Listener)
		}
	}()
	s.log.Info("admin API serving", "addr", s.cfg.Listener.Addr().String(), "tls", s.cfg.TLS != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("admin server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.http.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("admin server shutdown: %w", err)
	}
	return nil
}
