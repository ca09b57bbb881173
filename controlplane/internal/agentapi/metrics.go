package agentapi

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// streamMetrics counts what the config streams of this replica do.
type streamMetrics struct {
	admitted          prometheus.Counter
	refused           prometheus.Counter
	dropped           prometheus.Counter
	deltas            prometheus.Counter
	snapshotEnvelopes prometheus.Counter
	snapshotBytes     prometheus.Counter
	retries           prometheus.Counter
	open              prometheus.Gauge
}

func newStreamMetrics() *streamMetrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return &streamMetrics{
		admitted: counter("cairn_agent_stream_admitted_total", "Config streams admitted."),
		refused:  counter("cairn_agent_stream_refused_total", "Config streams refused by the admission rate limit (RESOURCE_EXHAUSTED with a retry hint)."),
		dropped:  counter("cairn_agent_stream_dropped_total", "Config streams ended because the agent fell behind (a send blocked past the send timeout)."),
		deltas:   counter("cairn_agent_stream_deltas_sent_total", "Delta envelopes sent on config streams."),
		snapshotEnvelopes: counter("cairn_agent_stream_snapshot_envelopes_sent_total",
			"Snapshot envelopes (reset, chunks, end) sent on config streams."),
		snapshotBytes: counter("cairn_agent_stream_snapshot_bytes_total",
			"Payload bytes of the snapshot envelopes (reset, chunks, end) sent on config streams."),
		retries: counter("cairn_agent_stream_catchup_retries_total",
			"Catch-ups of config streams that failed (the store could not be read, an envelope not made) and are tried again later; the stream stays open."),
		open: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_agent_streams_open", Help: "Config streams open now."}),
	}
}

// sent counts a message the agent's stream accepted.
func (m *streamMetrics) sent(msg *agentv1.StreamResponse) {
	env := msg.GetUpdate()
	if env == nil {
		return
	}
	switch env.PayloadType {
	case fanout.DeltaType:
		m.deltas.Inc()
	case fanout.ResetType, fanout.SnapshotChunkType, fanout.SnapshotEndType:
		m.snapshotEnvelopes.Inc()
		m.snapshotBytes.Add(float64(len(env.Payload)))
	}
}

// Metrics returns the agent API's metrics, to be served beside the admin
// API's on its /metrics: config streams admitted, refused, dropped and
// open, the deltas and snapshot envelopes and bytes they sent, and their
// catch-ups retried after store errors.
func (s *Server) Metrics() []prometheus.Collector {
	m := s.metrics
	return []prometheus.Collector{m.admitted, m.refused, m.dropped, m.deltas, m.snapshotEnvelopes, m.snapshotBytes, m.retries, m.open}
}
