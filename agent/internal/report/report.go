// Package report delivers the agent's status and metrics to the control
// plane: at least once, counted once. Reports go to an on-disk Queue under
// increasing sequence numbers before anything is sent; Deliver sends them
// in order in batches and drops what the control plane acknowledges, which
// it stores once per sequence number. So a report survives restarts of
// either side and a lost response, and is never counted twice. It must not
// import control-plane code.
package report

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/metricpoint"
)

// Batch limits, within what the control plane accepts: 500 reports, 5,000
// points, and a 1 MiB message (the encoded batch stays well below it).
const (
	MaxBatchReports  = 500
	MaxBatchPoints   = 5000
	MaxBatchBytes    = 900 << 10
	maxItemBytes     = 256 << 10
	maxPointsPerItem = 1000
	maxPushPoints    = 1000
	// maxStatusText is the control plane's limit on each status text.
	maxStatusText = 1024
)

// Config configures a Reporter.
type Config struct {
	// Queue holds reports until acknowledged. Required; not closed.
	Queue *Queue
	// Status returns the agent's current status, a new message on every
	// call: the Reporter keeps it, fills in DroppedReports and makes its
	// texts fit to send in place. Called when Changed signals, when a
	// report is due and every PollEvery. Required.
	Status func() *agentv1.AgentStatus
	// Changed, when not nil, wakes Run to check the status at once: the
	// agent's status sources notify it when what they report changes, so
	// a change is reported without polling for it, and PollEvery is only
	// the safety net for what no source signals. Nil: Run polls every
	// PollEvery.
	Changed Signal
	// Sample returns the agent's own metrics; nil means none.
	Sample func() []*agentv1.MetricPoint
	// StatusEvery is how often the status is sent when it does not change,
	// jittered by ±20%; 0 means one minute.
	StatusEvery time.Duration
	// MetricsEvery is how often metrics are batched into a report; 0
	// means 30 seconds.
	MetricsEvery time.Duration
	// PollEvery is how often Status is checked for a change that nothing
	// signalled; 0 means DefaultSignalledPoll with Changed set, one second
	// without.
	PollEvery time.Duration
	// ProgressDelay defers "progress": a status that differs from the
	// last one queued only in its applied revision and state hash. It is
	// queued a uniformly random time in (0, ProgressDelay] after the
	// progress was first seen, with whatever progress followed in the
	// meantime, so that the agents of a data plane do not all report a
	// config change within the same second while the control plane fans it
	// out; the control plane records each agent's applied revision from
	// the config stream's ACK already. Any other change is queued at once,
	// with the newest revision. 0 means DefaultProgressDelay; negative
	// means progress is queued at once too.
	ProgressDelay time.Duration
	// MaxPushed bounds points pushed by data-plane services waiting for
	// the next batch; 0 means 10,000.
	MaxPushed int
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultProgressDelay is the default Config.ProgressDelay.
const DefaultProgressDelay = 10 * time.Second

// DefaultSignalledPoll is Config.PollEvery's default when Config.Changed
// is set: a safety net for a status source that does not signal.
const DefaultSignalledPoll = 30 * time.Second

// Signal wakes a Reporter whose status may have changed (Config.Changed).
// Notify never blocks, and notifications the Reporter has not taken yet
// count as one.
type Signal chan struct{}

// NewSignal returns a Signal for Config.Changed.
func NewSignal() Signal { return make(Signal, 1) }

// Notify wakes the Reporter; on a nil Signal it does nothing.
func (s Signal) Notify() {
	select {
	case s <- struct{}{}:
	default:
	}
}

// ErrBufferFull is returned by Push when the pushed-points buffer is full.
var ErrBufferFull = errors.New("metrics buffer full")

// Reporter makes status and metric reports and delivers them.
type Reporter struct {
	cfg Config
	log *slog.Logger

	mu            sync.Mutex
	pushed        []*agentv1.MetricPoint
	pushedDropped int64
	stopped       bool // Run ended: Push takes nothing more
	delivered     int64
	discarded     int64
}

// Stats counts what a Reporter did.
type Stats struct {
	// Queued is how many reports wait for acknowledgement.
	Queued int
	// Dropped is how many reports the queue dropped when full.
	Dropped int64
	// Delivered is how many reports the control plane acknowledged to
	// this process (after a crash, reports sent again count again).
	Delivered int64
	// PushedDropped is how many pushed points were refused because the
	// buffer was full.
	PushedDropped int64
}

// New checks cfg.
func New(cfg Config) (*Reporter, error) {
	if cfg.Queue == nil || cfg.Status == nil {
		return nil, errors.New("report: Queue and Status are required")
	}
	if cfg.StatusEvery <= 0 {
		cfg.StatusEvery = time.Minute
	}
	if cfg.MetricsEvery <= 0 {
		cfg.MetricsEvery = 30 * time.Second
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = time.Second
		if cfg.Changed != nil {
			cfg.PollEvery = DefaultSignalledPoll
		}
	}
	if cfg.ProgressDelay == 0 {
		cfg.ProgressDelay = DefaultProgressDelay
	}
	if cfg.MaxPushed <= 0 {
		cfg.MaxPushed = 10_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reporter{cfg: cfg, log: log}, nil
}

// Stats returns the counters.
func (r *Reporter) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Queued: r.cfg.Queue.Len(), Dropped: r.cfg.Queue.Dropped(), Delivered: r.delivered, PushedDropped: r.pushedDropped}
}

// Push takes points from a data-plane service for the next metrics
// report. It checks every point first and takes none if one is bad, so a
// bad point never reaches the queue (where the control plane would refuse
// its whole batch). Points without a time get the agent's clock.
func (r *Reporter) Push(source string, points []*agentv1.MetricPoint) error {
	if err := metricpoint.CheckSource(source); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(points) > maxPushPoints {
		return fmt.Errorf("%w: at most %d points", ErrInvalid, maxPushPoints)
	}
	now := timestamppb.New(r.cfg.Now())
	out := make([]*agentv1.MetricPoint, 0, len(points))
	for i, p := range points {
		if err := metricpoint.CheckName(p.GetName()); err != nil {
			return fmt.Errorf("%w: points[%d].name: %w", ErrInvalid, i, err)
		}
		if err := metricpoint.CheckLabels(p.GetLabels()); err != nil {
			return fmt.Errorf("%w: points[%d].labels: %w", ErrInvalid, i, err)
		}
		if err := metricpoint.CheckValue(p.GetValue()); err != nil {
			return fmt.Errorf("%w: points[%d].value: %w", ErrInvalid, i, err)
		}
		c := proto.CloneOf(p)
		c.Source = source
		if c.Time == nil || c.Time.CheckValid() != nil {
			c.Time = now
		}
		out = append(out, c)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	if len(r.pushed)+len(out) > r.cfg.MaxPushed {
		r.pushedDropped += int64(len(out))
		return ErrBufferFull
	}
	r.pushed = append(r.pushed, out...)
	return nil
}

// ErrStopped is returned by Push once Run has ended.
var ErrStopped = errors.New("agent stopping")

// ErrInvalid wraps Push's refusals of bad points.
var ErrInvalid = errors.New("invalid metric points")

// Run makes reports until ctx ends: the status when it changes (the
// count of dropped reports alone is no change: with a full queue it moves
// on every append; progress alone waits for Config.ProgressDelay) and at
// least every StatusEvery, and a metrics report every MetricsEvery. It
// checks the status when Config.Changed signals, when a report of it is
// due, and at least every PollEvery. A queue that cannot be written (a
// full disk) is logged, at most once a minute, and tried again within a
// second: reporting never stops the agent from serving its config.
func (r *Reporter) Run(ctx context.Context) error {
	check := time.NewTimer(r.cfg.PollEvery)
	defer check.Stop()
	metrics := time.NewTicker(r.cfg.MetricsEvery)
	defer metrics.Stop()
	p := &statusPacer{every: r.cfg.StatusEvery, delay: r.cfg.ProgressDelay}
	var logged time.Time
	failed := func(err error) {
		if now := r.cfg.Now(); now.Sub(logged) >= time.Minute {
			r.log.Error("cannot queue a report", "error", err)
			logged = now
		}
	}
	for {
		wait := r.cfg.PollEvery
		if err := r.pollStatus(p); err != nil {
			// The status stays due: try again in a second, not at once.
			failed(err)
			wait = min(wait, time.Second)
		} else if next := p.next(); !next.IsZero() {
			wait = min(wait, max(next.Sub(r.cfg.Now()), 0))
		}
		check.Reset(wait)
		select {
		case <-ctx.Done():
			// Points already accepted from services go to disk, so a
			// clean stop loses nothing it said it took.
			return r.flushPushed()
		case <-check.C:
		case <-r.cfg.Changed:
		case <-metrics.C:
			if err := r.flushMetrics(); err != nil {
				failed(err)
			}
		}
	}
}

// pollStatus checks the status once and queues it if p says it is due.
// A status that could not be queued is tried again at the next poll.
func (r *Reporter) pollStatus(p *statusPacer) error {
	now := r.cfg.Now()
	st := r.status()
	if !p.due(st, now) {
		return nil
	}
	if err := r.enqueue(&agentv1.Report{Body: &agentv1.Report_Status{Status: st}}); err != nil {
		return err
	}
	p.queued(st, now)
	return nil
}

// statusPacer decides when Run queues the status. It belongs to Run's
// goroutine.
type statusPacer struct {
	every time.Duration // Config.StatusEvery
	delay time.Duration // Config.ProgressDelay; negative: progress at once
	// draw returns a uniformly random value in [0, n): when progress is
	// due within the delay. Nil is math/rand/v2's Int64N; tests pin it.
	draw func(n int64) int64

	last     *agentv1.AgentStatus // the last status queued; nil before the first
	resend   time.Time            // when last is queued again, unchanged
	progress time.Time            // when pending progress is queued; zero when none is
}

// due reports whether st, polled at now, is to be queued.
func (p *statusPacer) due(st *agentv1.AgentStatus, now time.Time) bool {
	if p.last == nil || !now.Before(p.resend) {
		return true
	}
	switch compareStatus(st, p.last) {
	case statusSame:
		p.progress = time.Time{}
		return false
	case statusProgress:
		if p.delay < 0 {
			return true
		}
		if p.progress.IsZero() {
			draw := p.draw
			if draw == nil {
				draw = rand.Int64N
			}
			p.progress = now.Add(time.Duration(draw(int64(p.delay))) + 1)
		}
		return !now.Before(p.progress)
	default:
		return true
	}
}

// next is when the status must be looked at again for a report to go
// in time without a change: the pending progress's deadline or the
// re-send, whichever comes first; zero before the first status.
func (p *statusPacer) next() time.Time {
	if p.last == nil {
		return time.Time{}
	}
	if !p.progress.IsZero() && p.progress.Before(p.resend) {
		return p.progress
	}
	return p.resend
}

// queued records that st was queued at now: whatever progress was
// pending went with it.
func (p *statusPacer) queued(st *agentv1.AgentStatus, now time.Time) {
	p.last, p.resend, p.progress = st, now.Add(jitter(p.every)), time.Time{}
}

// statusChange is how a status differs from the last one queued.
type statusChange int

const (
	// statusSame: not at all, but perhaps in the dropped-reports count.
	statusSame statusChange = iota
	// statusProgress: in the applied revision or state hash only, which
	// the config stream's ACK tells the control plane already.
	statusProgress
	// statusChanged: in anything else (checks, last error, staleness,
	// versions, clusters), which the rollout engine and operators act on;
	// a field added to AgentStatus lands here too.
	statusChanged
)

// compareStatus tells how st differs from last, field by field: polling
// an unchanged status neither clones nor allocates (proto.Equal does,
// and costs more than the rest of a poll). TestCompareStatusSeesEveryField
// fails when AgentStatus, Check or ClusterVersion gains a field this
// leaves out.
func compareStatus(st, last *agentv1.AgentStatus) statusChange {
	switch {
	case st.AgentVersion != last.AgentVersion, st.HostVersion != last.HostVersion, st.ProductVersion != last.ProductVersion,
		st.LastError != last.LastError, st.Stale != last.Stale,
		!slices.EqualFunc(st.Checks, last.Checks, sameCheck), !slices.EqualFunc(st.Clusters, last.Clusters, sameCluster):
		return statusChanged
	case st.AppliedRevision != last.AppliedRevision, st.StateHash != last.StateHash:
		return statusProgress
	default:
		return statusSame
	}
}

func sameCheck(a, b *agentv1.Check) bool {
	return a.GetName() == b.GetName() && a.GetHealthy() == b.GetHealthy() && a.GetDetail() == b.GetDetail()
}

func sameCluster(a, b *agentv1.ClusterVersion) bool {
	return a.GetClusterId() == b.GetClusterId() && a.GetVersion() == b.GetVersion() && a.GetHealthy() == b.GetHealthy() &&
		a.GetDetail() == b.GetDetail() && a.GetDesiredVersion() == b.GetDesiredVersion()
}

// status is Config.Status made fit to send: every text valid UTF-8
// without NUL bytes and within the control plane's limit, so that no
// status can be refused (and its batch dropped) or fail to encode.
func (r *Reporter) status() *agentv1.AgentStatus {
	st := r.cfg.Status()
	st.DroppedReports = r.cfg.Queue.Dropped()
	for _, f := range [...]*string{&st.StateHash, &st.AgentVersion, &st.HostVersion, &st.ProductVersion, &st.LastError} {
		*f = cleanText(*f, maxStatusText)
	}
	for _, c := range st.Checks {
		c.Name, c.Detail = cleanText(c.Name, 64), cleanText(c.Detail, maxStatusText)
	}
	for _, c := range st.Clusters {
		c.Detail = cleanText(c.Detail, maxStatusText)
	}
	return st
}

// cleanText makes s valid UTF-8 without control characters (but for
// newline and tab) and cuts it to at most max bytes at a character
// boundary, as the control plane requires (metricpoint.CheckText). Text
// that is fit already is returned as it is, without allocating.
func cleanText(s string, max int) string {
	if !isCleanText(s) {
		s = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) && r != '\n' && r != '\t' {
				return -1
			}
			return r
		}, strings.ToValidUTF8(s, "\uFFFD"))
	}
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// isCleanText reports whether s is valid UTF-8 without control
// characters but for newline and tab.
func isCleanText(s string) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false // an invalid byte, not a U+FFFD in the text
			}
		}
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return false
		}
	}
	return true
}

// flushPushed queues the pushed points waiting for the next batch and
// refuses further pushes: Run is ending.
func (r *Reporter) flushPushed() error {
	r.mu.Lock()
	points := r.pushed
	r.pushed = nil
	r.stopped = true
	r.mu.Unlock()
	return r.enqueuePoints(points)
}

// flushMetrics queues the agent's own sample and the pushed points.
func (r *Reporter) flushMetrics() error {
	var points []*agentv1.MetricPoint
	if r.cfg.Sample != nil {
		now := timestamppb.New(r.cfg.Now())
		for _, p := range r.cfg.Sample() {
			if p.Time == nil {
				p.Time = now
			}
			if p.Source == "" {
				p.Source = "agent"
			}
			points = append(points, p)
		}
	}
	r.mu.Lock()
	points = append(points, r.pushed...)
	r.pushed = nil
	r.mu.Unlock()
	return r.enqueuePoints(points)
}

// enqueuePoints queues points in reports of at most maxPointsPerItem
// points and about maxItemBytes, so any report fits in a batch.
func (r *Reporter) enqueuePoints(points []*agentv1.MetricPoint) error {
	for len(points) > 0 {
		n, size := 0, 0
		for n < len(points) && n < maxPointsPerItem {
			ps := proto.Size(points[n]) + 4 // field tag and length
			if n > 0 && size+ps > maxItemBytes {
				break
			}
			size += ps
			n++
		}
		// A copy: the queue keeps the report, which would otherwise hold
		// every point of the flush.
		batch := slices.Clone(points[:n])
		if err := r.enqueue(&agentv1.Report{Body: &agentv1.Report_Metrics{Metrics: &agentv1.MetricBatch{Points: batch}}}); err != nil {
			return err
		}
		points = points[n:]
	}
	return nil
}

func (r *Reporter) enqueue(rep *agentv1.Report) error {
	rep.Time = timestamppb.New(r.cfg.Now())
	if err := r.cfg.Queue.Append(rep); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// Deliver sends queued reports with client until ctx ends or a call
// fails, and reports whether any batch was acknowledged. A batch the
// control plane refuses as invalid, or a single report too large for it,
// is discarded and counted as dropped, so it cannot block the queue; any
// other error is returned for the caller to reconnect with backoff.
func (r *Reporter) Deliver(ctx context.Context, client agentv1.ReportServiceClient) (progress bool, err error) {
	q := r.cfg.Queue
	for {
		wake := q.Wait()
		batch, err := q.Peek(MaxBatchReports, MaxBatchPoints, MaxBatchBytes)
		if err != nil {
			return progress, err
		}
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return progress, ctx.Err()
			case <-wake:
				continue
			}
		}
		resp, err := client.Report(ctx, &agentv1.ReportRequest{QueueId: q.ID(), Reports: batch})
		last := batch[len(batch)-1].Seq
		code := status.Code(err)
		switch {
		case code == codes.InvalidArgument || (code == codes.ResourceExhausted && len(batch) == 1):
			r.log.Error("control plane refused a report batch; dropping it", "first_seq", batch[0].Seq, "last_seq", last, "error", err)
			if err := q.Discard(last); err != nil {
				return progress, err
			}
			continue
		case err != nil:
			return progress, err
		}
		if resp.AckedSeq > q.LastSeq() {
			// The control plane holds a sequence number this queue never
			// handed out: the data directory was restored from a backup.
			// It would skip our reports up to it; under a new id it takes
			// them all.
			r.log.Warn("control plane is ahead of the report queue (restored data directory?); starting a new queue id",
				"acked_seq", resp.AckedSeq, "last_seq", q.LastSeq())
			if err := q.NewID(); err != nil {
				return progress, err
			}
			continue
		}
		before := q.Len()
		err = q.Ack(resp.AckedSeq) // acknowledged even when it fails to write
		r.mu.Lock()
		r.delivered += int64(before - q.Len())
		r.mu.Unlock()
		progress = true
		if err != nil {
			return progress, err
		}
	}
}

// jitter returns d ±20%.
func jitter(d time.Duration) time.Duration {
	return d*4/5 + time.Duration(rand.Int64N(int64(d*2/5)+1))
}
