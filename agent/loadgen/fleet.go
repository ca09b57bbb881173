package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/agent/internal/cache"
)

// Member is one agent a Fleet enrolls: the group it is counted in (the
// benchmark puts a data plane's agents in one group) and its join token.
type Member struct {
	Group string `json:"group"`
	Token string `json:"token"`
}

// FleetConfig configures a Fleet.
type FleetConfig struct {
	// Addr is the control plane's agent API. Required.
	Addr string `json:"addr"`
	// Pin authenticates the control plane at enrollment. Required.
	Pin string `json:"pin"`
	// Dir holds one data directory per agent. Required.
	Dir string `json:"dir"`
	// Members are the agents to enroll. Required.
	Members []Member `json:"members"`
	// EnrollConcurrency bounds enrollments at once; 0 means 32.
	EnrollConcurrency int `json:"enroll_concurrency,omitempty"`
	// Report configures every agent's reporting.
	Report ReportConfig `json:"report"`
	// Logger; nil discards.
	Logger *slog.Logger `json:"-"`
}

// Fleet is the simulated agents of one process. It records, per group,
// when each agent applied a revision the caller is waiting for. Its
// methods are safe for concurrent use.
type Fleet struct {
	agents []*Agent
	group  []string // of each agent
	pos    []int    // each agent's index within its group
	groups map[string][]int
	churn  atomic.Bool

	runCtx     context.Context // the agents' Run; ended by Close
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	churnEvery time.Duration

	mu        sync.Mutex
	armed     map[string]*armed
	stopChurn context.CancelFunc // ends the churn ticker; nil while not churning
	closed    bool               // Close began: no more goroutines
}

// armed is one group's wait for a revision: when each agent reached it.
type armed struct {
	rev   int64
	times []int64 // Unix nanoseconds; 0 for not yet
	left  int
	done  chan struct{}
}

// StartFleet enrolls cfg.Members, at most cfg.EnrollConcurrency at once,
// and starts each agent as soon as it is enrolled. It returns once every
// agent is enrolled and running, or with the first enrollment error after
// stopping the agents already started.
func StartFleet(ctx context.Context, cfg FleetConfig) (*Fleet, error) {
	if cfg.Addr == "" || cfg.Pin == "" || cfg.Dir == "" || len(cfg.Members) == 0 {
		return nil, errors.New("loadgen: fleet needs Addr, Pin, Dir and Members")
	}
	conc := cfg.EnrollConcurrency
	if conc <= 0 {
		conc = 32
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := len(cfg.Members)
	f := &Fleet{agents: make([]*Agent, n), group: make([]string, n), pos: make([]int, n),
		groups: map[string][]int{}, armed: map[string]*armed{}}
	for i, m := range cfg.Members {
		f.group[i] = m.Group
		f.pos[i] = len(f.groups[m.Group])
		f.groups[m.Group] = append(f.groups[m.Group], i)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.runCtx, f.cancel = runCtx, cancel
	f.churnEvery = cfg.Report.ChurnEvery
	if f.churnEvery <= 0 {
		f.churnEvery = time.Second
	}

	idx := make(chan int)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	ectx, stopEnroll := context.WithCancel(ctx)
	defer stopEnroll()
	for range min(conc, n) {
		wg.Go(func() {
			for i := range idx {
				a, err := Enroll(ectx, AgentConfig{
					Addr: cfg.Addr, Dir: filepath.Join(cfg.Dir, fmt.Sprintf("%s-%05d", cfg.Members[i].Group, i)),
					JoinToken: cfg.Members[i].Token, Pin: cfg.Pin, Report: cfg.Report, Churn: &f.churn,
					OnApplied: func(st cache.State) { f.applied(i, st) }, Logger: log,
				})
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("enroll agent %d: %w", i, err); stopEnroll() })
					continue
				}
				f.mu.Lock()
				f.agents[i] = a
				f.mu.Unlock()
				f.wg.Go(func() {
					if err := a.Run(runCtx); err != nil {
						log.Error("agent stopped", "agent_id", a.ID(), "error", err)
					}
				})
			}
		})
	}
feed:
	for i := range n {
		select {
		case idx <- i:
		case <-ectx.Done():
			break feed
		}
	}
	close(idx)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		f.Close()
		return nil, firstErr
	}
	return f, nil
}

// applied records agent i's new state against its group's wait.
func (f *Fleet) applied(i int, st cache.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.armed[f.group[i]]
	if a == nil || st.Revision < a.rev || a.times[f.pos[i]] != 0 {
		return
	}
	a.times[f.pos[i]] = time.Now().UnixNano()
	a.left--
	if a.left == 0 {
		close(a.done)
	}
}

// Arm starts recording when each agent of group holds revision rev or a
// later one. Agents that already do are recorded as of now. Arm replaces
// the group's previous wait.
func (f *Fleet) Arm(group string, rev int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	members, ok := f.groups[group]
	if !ok {
		return fmt.Errorf("loadgen: no group %q", group)
	}
	a := &armed{rev: rev, times: make([]int64, len(members)), left: len(members), done: make(chan struct{})}
	now := time.Now().UnixNano()
	for j, i := range members {
		if f.agents[i].Revision() >= rev {
			a.times[j] = now
			a.left--
		}
	}
	if a.left == 0 {
		close(a.done)
	}
	f.armed[group] = a
	return nil
}

// Wait waits until every agent of group reached the armed revision, or
// timeout, or ctx ends, and returns when each did (Unix nanoseconds, 0
// for those that did not) and how many did not. It ends the wait.
func (f *Fleet) Wait(ctx context.Context, group string, timeout time.Duration) (times []int64, missing int, err error) {
	f.mu.Lock()
	a := f.armed[group]
	f.mu.Unlock()
	if a == nil {
		return nil, 0, fmt.Errorf("loadgen: group %q is not armed", group)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-a.done:
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.armed, group)
	return append([]int64(nil), a.times...), a.left, err
}

// SetChurn turns the status-ingest load on or off: while it is on, every
// agent's status changes once every Report.ChurnEvery (AgentConfig.Churn),
// the agents' changes spread evenly over the interval, and each change
// wakes the agent's reporter as a real change of status would.
func (f *Fleet) SetChurn(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || on == (f.stopChurn != nil) {
		return
	}
	f.churn.Store(on)
	if !on {
		f.stopChurn()
		f.stopChurn = nil
		for _, a := range f.agents {
			a.changed.Notify() // the "loadgen" check is gone
		}
		return
	}
	ctx, stop := context.WithCancel(f.runCtx)
	f.stopChurn = stop
	f.wg.Go(func() {
		// The agents' changes are spread over each interval in churnSlices
		// steps, as agents' own clocks would spread them, rather than all
		// at one instant.
		t := time.NewTicker(f.churnEvery / churnSlices)
		defer t.Stop()
		for slice := 0; ; slice = (slice + 1) % churnSlices {
			n := len(f.agents)
			for _, a := range f.agents[slice*n/churnSlices : (slice+1)*n/churnSlices] {
				a.churnTick()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// churnSlices is how many steps SetChurn spreads each interval's changes
// over.
const churnSlices = 50

// Stats sums what a fleet's agents did. Revisions are of the group asked
// for ("" for all agents).
type Stats struct {
	Agents      int   `json:"agents"`
	Connected   int   `json:"connected"`
	MinRevision int64 `json:"min_revision"`
	MaxRevision int64 `json:"max_revision"`
	// Applied counts deltas and snapshots applied; Nacks refusals sent.
	Applied int64 `json:"applied"`
	Nacks   int64 `json:"nacks"`
	// StreamEnds counts config stream sessions that ended (and were
	// retried) while the agents ran.
	StreamEnds int64 `json:"stream_ends"`
	// Reports delivered (acknowledged, so stored), Report calls answered,
	// reports still queued, reports the queues dropped.
	ReportsDelivered int64 `json:"reports_delivered"`
	ReportCalls      int64 `json:"report_calls"`
	ReportsQueued    int64 `json:"reports_queued"`
	ReportsDropped   int64 `json:"reports_dropped"`
}

// Stats returns the counters of group's agents ("" for all).
func (f *Fleet) Stats(group string) Stats {
	idx := f.groups[group]
	if group == "" {
		idx = make([]int, len(f.agents))
		for i := range idx {
			idx[i] = i
		}
	}
	s := Stats{Agents: len(idx), MinRevision: -1}
	for _, i := range idx {
		a := f.agents[i]
		ss := a.syncer.Stats()
		rs := a.reporter.Stats()
		rev := a.Revision()
		if s.MinRevision < 0 || rev < s.MinRevision {
			s.MinRevision = rev
		}
		s.MaxRevision = max(s.MaxRevision, rev)
		if ss.Connected {
			s.Connected++
		}
		s.Applied += ss.Applied
		s.Nacks += ss.Nacks
		s.StreamEnds += a.streamEnds.Load()
		s.ReportsDelivered += rs.Delivered
		s.ReportCalls += a.reportCalls.Load()
		s.ReportsQueued += int64(rs.Queued)
		s.ReportsDropped += rs.Dropped
	}
	return s
}

// Close stops every agent and closes its files.
func (f *Fleet) Close() error {
	f.mu.Lock()
	f.closed = true // SetChurn starts nothing after this
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	var errs []error
	for _, a := range f.agents {
		if a != nil {
			errs = append(errs, a.Close())
		}
	}
	return errors.Join(errs...)
}
