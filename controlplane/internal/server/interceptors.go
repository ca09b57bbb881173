package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnhq/cairn/controlplane/internal/requestid"
)

// rpcMetrics counts calls and measures latency by procedure and code.
type rpcMetrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newRPCMetrics(reg prometheus.Registerer) *rpcMetrics {
	m := &rpcMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_admin_rpc_requests_total",
			Help: "Admin API calls by procedure and status code.",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cairn_admin_rpc_duration_seconds",
			Help:    "Admin API call latency by procedure and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"procedure", "code"}),
	}
	reg.MustRegister(m.calls, m.duration)
	return m
}

func codeOf(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

func (m *rpcMetrics) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		code := codeOf(err)
		m.calls.WithLabelValues(req.Spec().Procedure, code).Inc()
		m.duration.WithLabelValues(req.Spec().Procedure, code).Observe(time.Since(start).Seconds())
		return resp, err
	}
}

func (m *rpcMetrics) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (m *rpcMetrics) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// logInterceptor logs one line per call with its request id. It never logs
// request bodies or headers, so tokens and config content stay out of logs.
type logInterceptor struct{ log *slog.Logger }

func (l logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		level := slog.LevelInfo
		attrs := []slog.Attr{
			slog.String("procedure", req.Spec().Procedure),
			slog.String("protocol", req.Peer().Protocol),
			slog.String("code", codeOf(err)),
			slog.Duration("duration", time.Since(start)),
			slog.String("request_id", requestid.From(ctx)),
		}
		var ce *connect.Error
		if err != nil && errors.As(err, &ce) && ce.Code() == connect.CodeInternal {
			level = slog.LevelError
		}
		l.log.LogAttrs(ctx, level, "rpc", attrs...)
		return resp, err
	}
}

func (l logInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (l logInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
