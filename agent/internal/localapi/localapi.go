// Package localapi serves the agent's cached config to data-plane services
// on a Unix socket (LocalConfigService): Get, List and Watch, answered from
// memory, so they work while the control plane is away; and takes their
// metrics (LocalMetricsService) for the agent to report. The socket's file
// permissions are the access control; it serves no other API.
package localapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/report"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

// Config configures the local API.
type Config struct {
	// Socket is the Unix socket path; its directory is created 0700 and a
	// stale socket file is replaced. Required.
	Socket string
	// Cache is read. Required.
	Cache *cache.Cache
	// Stale reports whether the config may be out of date; nil means never.
	Stale func() bool
	// Metrics takes points pushed by data-plane services
	// (LocalMetricsService); nil serves no LocalMetricsService.
	Metrics *report.Reporter
	// Logger; nil discards.
	Logger *slog.Logger
}

// Server is the local API server.
type Server struct {
	agentv1.UnimplementedLocalConfigServiceServer
	cfg Config
	log *slog.Logger
}

// New checks cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Socket == "" || cfg.Cache == nil {
		return nil, errors.New("localapi: Socket and Cache are required")
	}
	if cfg.Stale == nil {
		cfg.Stale = func() bool { return false }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log}, nil
}

// Run serves until ctx ends, then removes the socket.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.cfg.Socket), 0o700); err != nil {
		return fmt.Errorf("local API: %w", err)
	}
	if err := os.Remove(s.cfg.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("local API: remove stale socket: %w", err)
	}
	lis, err := net.Listen("unix", s.cfg.Socket)
	if err != nil {
		return fmt.Errorf("local API: %w", err)
	}
	// Owner and group only: put data-plane services in the agent's group.
	if err := os.Chmod(s.cfg.Socket, 0o660); err != nil {
		lis.Close()
		return fmt.Errorf("local API: %w", err)
	}
	gs := grpc.NewServer()
	agentv1.RegisterLocalConfigServiceServer(gs, s)
	if s.cfg.Metrics != nil {
		agentv1.RegisterLocalMetricsServiceServer(gs, metricsServer{r: s.cfg.Metrics})
	}
	reflection.Register(gs)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	s.log.Info("local API serving", "socket", s.cfg.Socket)
	select {
	case err := <-errc:
		return fmt.Errorf("local API: %w", err)
	case <-ctx.Done():
		gs.Stop() // Watch streams never end by themselves
		_ = os.Remove(s.cfg.Socket)
		return nil
	}
}

func (s *Server) GetDocument(_ context.Context, req *agentv1.GetDocumentRequest) (*agentv1.GetDocumentResponse, error) {
	if req.ScopeType == "" || req.ScopeId == "" || req.Kind == "" || req.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "scope_type, scope_id, kind and name are required")
	}
	st := s.cfg.Cache.State()
	d, ok := s.cfg.Cache.Get(configstate.Key(req.ScopeType, req.ScopeId, req.Kind, req.Name))
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no %s/%s in %s %s at revision %d", req.Kind, req.Name, req.ScopeType, req.ScopeId, st.Revision)
	}
	return &agentv1.GetDocumentResponse{Document: d, Revision: st.Revision}, nil
}

// matching returns the cache's documents of kind ("" for all).
func (s *Server) matching(kind string) []*agentv1.Document {
	all := s.cfg.Cache.List("")
	if kind == "" {
		return all
	}
	out := all[:0]
	for _, d := range all {
		if d.Kind == kind {
			out = append(out, d)
		}
	}
	return out
}

func (s *Server) ListDocuments(_ context.Context, req *agentv1.ListDocumentsRequest) (*agentv1.ListDocumentsResponse, error) {
	if strings.ContainsAny(req.Kind, " \n") {
		return nil, status.Error(codes.InvalidArgument, "kind: not a kind")
	}
	st := s.cfg.Cache.State()
	return &agentv1.ListDocumentsResponse{Documents: s.matching(req.Kind), Revision: st.Revision,
		StateHash: st.StateHash, Stale: s.cfg.Stale()}, nil
}

func (s *Server) Watch(req *agentv1.WatchRequest, stream agentv1.LocalConfigService_WatchServer) error {
	// Subscribe before reading, so no change falls between.
	changes, cancel := s.cfg.Cache.Watch()
	defer cancel()
	send := func() error {
		st := s.cfg.Cache.State()
		return stream.Send(&agentv1.WatchResponse{Documents: s.matching(req.Kind), Revision: st.Revision,
			StateHash: st.StateHash, Stale: s.cfg.Stale()})
	}
	if err := send(); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case _, ok := <-changes:
			if !ok {
				return status.Error(codes.Unavailable, "agent stopping")
			}
			if err := send(); err != nil {
				return err
			}
		}
	}
}

// metricsServer takes metrics pushed by data-plane services.
type metricsServer struct {
	agentv1.UnimplementedLocalMetricsServiceServer
	r *report.Reporter
}

func (m metricsServer) Push(_ context.Context, req *agentv1.PushRequest) (*agentv1.PushResponse, error) {
	err := m.r.Push(req.Source, req.Points)
	switch {
	case errors.Is(err, report.ErrInvalid):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, report.ErrStopped):
		return nil, status.Error(codes.Unavailable, "the agent is stopping; push again after it restarts")
	case errors.Is(err, report.ErrBufferFull):
		return nil, status.Error(codes.ResourceExhausted, "the agent's metrics buffer is full; points dropped")
	case err != nil:
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &agentv1.PushResponse{Accepted: int32(len(req.Points))}, nil
}
