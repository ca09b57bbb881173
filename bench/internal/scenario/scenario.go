// Package scenario runs the fan-out benchmark against one peer system:
// N watchers, each on its own connection, one change at a time, and the
// time until every watcher has it (figure 1); the server's memory per
// watcher (figure 3); and a reconnect storm after the server is killed and
// restarted on the same data directory and port (figure 4).
//
// All watchers live in this process, so every receive time is read from
// one monotonic clock. The server lives in a child process (see
// serverproc) so that its memory is its own. The Cairn side of the
// benchmark prints the same Result shape; a report step divides the two.
//
// It must not assert on timing: it measures, and reports what it could not
// measure in Result.Notes.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/bench/internal/agentwork"
	"github.com/cairnhq/cairn/bench/internal/etcdpeer"
	"github.com/cairnhq/cairn/bench/internal/natspeer"
	"github.com/cairnhq/cairn/bench/internal/pki"
	"github.com/cairnhq/cairn/bench/internal/serverproc"
)

// The systems Run knows.
const (
	Etcd    = "etcd"
	EtcdTLS = "etcd-tls"
	NATS    = "nats"
	NATSTLS = "nats-tls"
	// The mutual-TLS systems with an agent's work in each watcher (see
	// agentwork): figure 1 compares delivery doing the same work at the
	// edge as Cairn's agents.
	EtcdTLSWork = EtcdTLS + workSuffix
	NATSTLSWork = NATSTLS + workSuffix

	workSuffix = "+work"
)

// Systems lists the systems in the order a full run measures them.
var Systems = []string{Etcd, EtcdTLS, NATS, NATSTLS, EtcdTLSWork, NATSTLSWork}

const (
	// fdMargin is the open files beyond one per watcher that either process
	// may need: the server's data files, listeners, the writer, pipes.
	fdMargin = 1024
	// childGrace bounds a clean child shutdown at the end of a run.
	childGrace = 30 * time.Second
	// closeConcurrency bounds parallel watcher closes at the end of a run.
	closeConcurrency = 64
	// setupAttempts is how often one watcher's setup is tried before the
	// run gives up: an agent would retry a connection that timed out on a
	// busy server, and so does the benchmark, counting it.
	setupAttempts  = 5
	setupRetryWait = time.Second
)

// Starts returns the servers a serverproc child can run, by the name a
// system's Spec uses.
func Starts() map[string]serverproc.StartFunc {
	return map[string]serverproc.StartFunc{
		"etcd": etcdpeer.Start,
		"nats": natspeer.Start,
	}
}

// Config is one benchmark run.
type Config struct {
	// System is one of Systems; required.
	System string
	// N is the number of watchers; required, at least 1.
	N int
	// Changes is how many changes figure 1 times, one after another;
	// required, at least 1.
	Changes int
	// ValueBytes is the size of each written value; zero means 256.
	ValueBytes int
	// DialConcurrency bounds watchers being set up at once; zero means 32.
	DialConcurrency int
	// Timeout bounds each phase (connecting all watchers, one change
	// reaching all of them, the reconnect storm); zero means two minutes
	// plus 10 ms per watcher.
	Timeout time.Duration
	// Settle is the pause before each memory reading and between changes;
	// zero means one second.
	Settle time.Duration
	// SkipReconnect skips figure 4.
	SkipReconnect bool
	// NATSURL, for the NATS systems, points at an external server instead
	// of an embedded one in a child process; empty means embedded. An
	// external server is not restarted (no figure 4) and its memory is read
	// only when ServerPID is set.
	NATSURL string
	// ServerPID is the external server's process id for memory readings;
	// zero means none. Ignored for embedded servers.
	ServerPID int
	// Exe is the binary that runs the server child (it must dispatch
	// serverproc.ServeArg to serverproc.Child with Starts); empty means
	// this process's own executable.
	Exe string
	// WorkDir holds the server's data, TLS files and log; empty means a
	// temporary directory removed at the end.
	WorkDir string
	// WatchersDir, for the +work systems, holds the watchers' files
	// (one subdirectory per run, removed at the end); empty means the work
	// directory. Cairn's benchmark keeps its agents' files on /dev/shm;
	// the same place keeps the comparison fair.
	WatchersDir string
	// ServerCPUProfile, when set, is where the server child writes a CPU
	// profile covering setup and figures 1 and 3.
	ServerCPUProfile string
	// Log receives progress; nil means none.
	Log *slog.Logger
}

// peer is what the scenario needs from a system's client side.
type peer interface {
	// Put writes value and returns once the server acknowledged it.
	Put(ctx context.Context, value string) error
	// Watch opens a watcher on its own connection and returns once it
	// watches; deliver is called from the watcher's own goroutine.
	Watch(ctx context.Context, id int, deliver func(id int, value []byte)) (io.Closer, error)
	Close() error
}

type system struct {
	server  string // serverproc start name
	tls     bool
	work    bool // watchers verify and commit each value (agentwork)
	version string
	dial    func(ctx context.Context, addr string, ca *pki.CA) (peer, error)
}

func lookup(cfg Config) (system, error) {
	natsDial := func(ctx context.Context, addr string, ca *pki.CA) (peer, error) {
		url := cfg.NATSURL
		if url == "" {
			url = "nats://" + addr
		}
		// A unique bucket keeps runs against a shared server apart.
		bucket := fmt.Sprintf("peerbench_%d", os.Getpid())
		return natspeer.Dial(ctx, natspeer.ClientConfig{URL: url, CA: ca, Bucket: bucket})
	}
	etcdDial := func(ctx context.Context, addr string, ca *pki.CA) (peer, error) {
		return etcdpeer.Dial(ctx, etcdpeer.ClientConfig{Endpoint: addr, CA: ca})
	}
	var sys system
	switch cfg.System {
	case Etcd, EtcdTLS, EtcdTLSWork:
		sys = system{server: "etcd", tls: cfg.System != Etcd, version: "etcd " + etcdpeer.Version(), dial: etcdDial}
	case NATS, NATSTLS, NATSTLSWork:
		sys = system{server: "nats", tls: cfg.System != NATS, version: "nats-server " + natspeer.Version, dial: natsDial}
	default:
		return system{}, fmt.Errorf("unknown system %q; want one of %v", cfg.System, Systems)
	}
	sys.work = strings.HasSuffix(cfg.System, workSuffix)
	return sys, nil
}

// Run runs the benchmark and returns its figures. An error means the run
// could not go on; watchers that missed a change within Timeout are not an
// error but a note and a count in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	sys, err := lookup(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.N < 1 || cfg.Changes < 1 {
		return nil, fmt.Errorf("need N ≥ 1 and Changes ≥ 1; got %d and %d", cfg.N, cfg.Changes)
	}
	if cfg.ValueBytes == 0 {
		cfg.ValueBytes = 256
	}
	if cfg.DialConcurrency == 0 {
		cfg.DialConcurrency = 32
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2*time.Minute + time.Duration(cfg.N)*10*time.Millisecond
	}
	if cfg.Settle == 0 {
		cfg.Settle = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	external := cfg.NATSURL != "" && sys.server == "nats"
	if external && sys.work {
		return nil, fmt.Errorf("%s needs the embedded server: an external server does not trust this run's CA", cfg.System)
	}

	soft, _, err := serverproc.RaiseNoFile(uint64(cfg.N) + fdMargin)
	if err != nil {
		return nil, err
	}

	r := &run{cfg: cfg, sys: sys, log: cfg.Log, rec: newRecorder(cfg.N, cfg.Changes+1)}
	r.res = &Result{
		System:     cfg.System,
		N:          cfg.N,
		Changes:    cfg.Changes,
		Peer:       sys.version,
		TLS:        sys.tls,
		Work:       sys.work,
		ValueBytes: cfg.ValueBytes,
		Machine:    machine(soft),
	}
	defer r.cleanup()

	if err := r.prepare(ctx, external); err != nil {
		return nil, err
	}
	if err := r.connectWatchers(ctx); err != nil {
		return nil, err
	}
	if err := r.fanOut(ctx); err != nil {
		return nil, err
	}
	if err := r.memory(ctx); err != nil {
		return nil, err
	}
	if !cfg.SkipReconnect && !external && !sys.work {
		if err := r.reconnectStorm(ctx); err != nil {
			return nil, err
		}
	}
	if r.agents != nil {
		fs := "not tmpfs: each fsync reaches the disk"
		if r.agents.OnTmpfs() {
			fs = "tmpfs: fsync reaches no disk, as for Cairn's agents on /dev/shm"
		}
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("the watchers' files were in %s (%s); each value carried a %d-byte signature suffix beyond its %d bytes", r.agents.Dir(), fs, agentwork.Overhead, cfg.ValueBytes))
		r.res.WorkApplied = r.agents.Applied()
		if n, first := r.agents.Failures(); n > 0 {
			r.res.WorkFailures = n
			r.res.Notes = append(r.res.Notes, fmt.Sprintf("%d values failed the watchers' verification or commit and were not counted as received (first: %s)", n, first))
		}
	}
	if ae, ok := r.factory.(interface{ AsyncErrors() (int64, string) }); ok {
		if n, first := ae.AsyncErrors(); n > 0 {
			r.res.WatcherErrors = n
			r.res.Notes = append(r.res.Notes, fmt.Sprintf("the watchers' connections reported %d asynchronous errors, all retried by the client (first: %s)", n, first))
		}
	}
	r.res.addStandardNotes(r.sys, external, cfg)
	return r.res, nil
}

type run struct {
	cfg      Config
	sys      system
	log      *slog.Logger
	res      *Result
	rec      *recorder
	work     string
	tmpWork  bool
	ca       *pki.CA
	spec     serverproc.Spec
	proc     *serverproc.Proc
	addr     string
	writer   peer // replaced by a new one after the restart
	factory  peer // the first writer, which made the watchers
	watchers []io.Closer
	idle     serverproc.Stats
	agents   *agentwork.Fleet // the +work systems' signing key and watchers' files; nil otherwise
}

// prepare makes the work directory and TLS material, starts the server,
// connects the writer, writes a first value and reads idle memory.
func (r *run) prepare(ctx context.Context, external bool) error {
	r.work = r.cfg.WorkDir
	if r.work == "" {
		dir, err := os.MkdirTemp("", "peerbench-")
		if err != nil {
			return err
		}
		r.work, r.tmpWork = dir, true
	}
	dataDir := filepath.Join(r.work, "data-"+r.cfg.System)
	tlsDir := ""
	for _, d := range []string{r.work, dataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if r.sys.tls {
		ca, err := pki.NewCA()
		if err != nil {
			return err
		}
		tlsDir = filepath.Join(r.work, "tls-"+r.cfg.System)
		if err := os.MkdirAll(tlsDir, 0o700); err != nil {
			return err
		}
		if err := ca.WriteServerFiles(tlsDir); err != nil {
			return err
		}
		// One for each watcher and the writer; the writer after the
		// restart gets a fresh one.
		if err := ca.Preissue(r.cfg.N + 1); err != nil {
			return err
		}
		r.ca = ca
	}
	if r.sys.work {
		parent := r.cfg.WatchersDir
		if parent == "" {
			parent = r.work
		}
		agents, err := agentwork.New(parent)
		if err != nil {
			return err
		}
		r.agents = agents
	}

	if external {
		r.res.Server = "external " + r.cfg.NATSURL
		if r.sys.tls {
			return errors.New("nats-tls needs the embedded server: an external server does not trust this run's CA")
		}
	} else {
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		r.spec = serverproc.Spec{
			Exe:    r.cfg.Exe,
			Server: r.sys.server,
			Config: serverproc.ServeConfig{
				Dir: dataDir, Port: ports[0], PeerPort: ports[1], TLSDir: tlsDir,
			},
			CPUProfile: r.cfg.ServerCPUProfile,
			LogPath:    filepath.Join(r.work, "server-"+r.cfg.System+".log"),
		}
		r.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		start := time.Now()
		proc, err := serverproc.Start(ctx, r.spec)
		if err != nil {
			return err
		}
		r.proc = proc
		r.res.Server = "embedded, child process"
		r.log.Info("server started", "system", r.cfg.System, "pid", proc.PID(), "addr", r.addr, "took", time.Since(start))
	}

	w, err := r.sys.dial(ctx, r.addr, r.ca)
	if err != nil {
		return err
	}
	r.writer, r.factory = w, w
	if sv, ok := w.(interface{ ServerVersion() string }); ok && external {
		r.res.Peer = "nats-server " + sv.ServerVersion()
	}
	if err := w.Put(ctx, "seed"); err != nil {
		return fmt.Errorf("first put: %w", err)
	}
	if err := sleep(ctx, r.cfg.Settle); err != nil {
		return err
	}
	idle, err := r.serverStats()
	if err != nil {
		return err
	}
	r.idle = idle
	return nil
}

// serverStats reads the server's memory: the child's own report, or an
// external server's /proc entry when its pid is known.
func (r *run) serverStats() (serverproc.Stats, error) {
	switch {
	case r.proc != nil:
		return r.proc.Stats()
	case r.cfg.ServerPID != 0:
		rss, hwm, err := serverproc.ReadMemory(r.cfg.ServerPID)
		return serverproc.Stats{RSSBytes: rss, HWMBytes: hwm}, err
	}
	return serverproc.Stats{}, nil
}

// connectWatchers sets up all N watchers, DialConcurrency at a time.
func (r *run) connectWatchers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	r.watchers = make([]io.Closer, r.cfg.N)
	ids := make(chan int)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		done     atomic.Int64
		retries  atomic.Int64
		retryErr atomic.Value
	)
	start := time.Now()
	deliver := r.rec.deliver
	if r.agents != nil {
		deliver = r.agents.Wrap(func(v []byte) bool { _, ok := parseChange(v); return ok }, deliver)
	}
	for range min(r.cfg.DialConcurrency, r.cfg.N) {
		wg.Go(func() {
			for id := range ids {
				var w io.Closer
				var err error
				if r.agents != nil {
					if err = r.agents.Prepare(id); err != nil {
						once.Do(func() { firstErr = err; cancel() })
						continue
					}
				}
				for attempt := 1; ; attempt++ {
					if w, err = r.factory.Watch(ctx, id, deliver); err == nil || attempt == setupAttempts || ctx.Err() != nil {
						break
					}
					retries.Add(1)
					retryErr.CompareAndSwap(nil, err.Error())
					if sleep(ctx, setupRetryWait) != nil {
						break
					}
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("watcher %d (after %d connected): %w", id, done.Load(), err); cancel() })
					continue
				}
				r.watchers[id] = w
				if n := done.Add(1); n%1000 == 0 {
					r.log.Info("watchers connected", "n", n, "elapsed", time.Since(start).Round(time.Millisecond))
				}
			}
		})
	}
feed:
	for id := range r.cfg.N {
		select {
		case ids <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(ids)
	wg.Wait()
	if n := retries.Load(); n > 0 {
		r.res.ConnectRetries = n
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("setting up the watchers took %d retries (first error: %v)", n, retryErr.Load()))
	}
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connect watchers: %d of %d after %v: %w", done.Load(), r.cfg.N, time.Since(start), err)
	}
	r.res.ConnectAllMs = ms(time.Since(start))
	r.log.Info("all watchers connected", "n", r.cfg.N, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// fanOut is figure 1: Changes changes, one at a time, each timed from the
// start of its Put to each watcher's receipt.
func (r *run) fanOut(ctx context.Context) error {
	if err := sleep(ctx, r.cfg.Settle); err != nil {
		return err
	}
	var all []time.Duration
	for k := range r.cfg.Changes {
		c, lat, err := r.change(ctx, k)
		if err != nil {
			return err
		}
		r.res.PerChange = append(r.res.PerChange, c)
		all = append(all, lat...)
		r.log.Info("change", "k", k, "received", c.Received, "p50_ms", c.P50Ms, "p99_ms", c.P99Ms, "max_ms", c.MaxMs, "write_ms", c.WriteMs)
		if c.Received < r.cfg.N {
			r.res.Notes = append(r.res.Notes, fmt.Sprintf("change %d: %d of %d watchers did not receive it within %v; its percentiles cover those that did", k, r.cfg.N-c.Received, r.cfg.N, r.cfg.Timeout))
		}
		if k < r.cfg.Changes-1 {
			if err := sleep(ctx, r.cfg.Settle); err != nil {
				return err
			}
		}
	}
	p := summarize(all)
	r.res.FanoutP50Ms, r.res.FanoutP99Ms, r.res.FanoutMaxMs = p.p50, p.p99, p.max
	return nil
}

// change writes change k and waits until every watcher has it or Timeout.
func (r *run) change(ctx context.Context, k int) (Change, []time.Duration, error) {
	value := changeValue(k, r.cfg.ValueBytes)
	t0 := r.rec.now()
	if r.agents != nil {
		// Signed for each change, inside the timing, as Cairn's control
		// plane signs each delta before it is sent.
		value = r.agents.Sign(value)
	}
	if err := r.writer.Put(ctx, value); err != nil {
		return Change{}, nil, fmt.Errorf("put change %d: %w", k, err)
	}
	written := r.rec.now()
	if err := r.rec.wait(ctx, k, r.cfg.Timeout); err != nil {
		return Change{}, nil, err
	}
	lat := r.rec.latencies(k, t0)
	p := summarize(lat)
	return Change{
		WriteMs:  ms(time.Duration(written - t0)),
		P50Ms:    p.p50,
		P99Ms:    p.p99,
		MaxMs:    p.max,
		Received: len(lat),
	}, lat, nil
}

// memory is figure 3: the server's memory with N watchers against the
// idle reading taken before any watcher connected.
func (r *run) memory(ctx context.Context) error {
	if r.proc == nil && r.cfg.ServerPID == 0 {
		r.res.Notes = append(r.res.Notes, "server memory not measured: external server without -server-pid")
		return nil
	}
	if err := sleep(ctx, r.cfg.Settle); err != nil {
		return err
	}
	loaded, err := r.serverStats()
	if err != nil {
		return err
	}
	n := float64(r.cfg.N)
	r.res.ServerRSSIdleBytes = r.idle.RSSBytes
	r.res.ServerRSSBytes = loaded.RSSBytes
	r.res.BytesPerWatcher = float64(loaded.RSSBytes-r.idle.RSSBytes) / n
	if r.proc != nil {
		r.res.ServerHeapIdleBytes = r.idle.HeapAllocBytes
		r.res.ServerHeapBytes = loaded.HeapAllocBytes
		r.res.HeapBytesPerWatcher = float64(loaded.HeapAllocBytes-r.idle.HeapAllocBytes) / n
		r.res.ServerGoroutines = loaded.Goroutines
	}
	if rss, _, err := serverproc.ReadMemory(os.Getpid()); err == nil {
		r.res.ClientRSSBytes = rss
	}
	r.log.Info("memory", "server_rss", loaded.RSSBytes, "idle_rss", r.idle.RSSBytes, "bytes_per_watcher", r.res.BytesPerWatcher)
	return nil
}

// reconnectStorm is figure 4: kill the server, start it again on the same
// data directory and port, write a change as soon as it serves, and time
// until every watcher has that change. Receiving it proves the watcher is
// watching again: both systems resume a watch from where it left off.
func (r *run) reconnectStorm(ctx context.Context) error {
	k := r.cfg.Changes // the recorder's spare slot
	if r.cfg.ServerCPUProfile != "" {
		if err := r.proc.StopProfile(); err != nil {
			r.log.Warn("stop server profile", "err", err)
		}
	}
	// The old writer would only add its own reconnect attempts; the new
	// one dials once the server is back, as an operator's write would.
	_ = r.writer.Close()
	r.writer = nil

	kill := r.rec.now()
	r.proc.Kill()
	r.proc = nil
	r.log.Info("server killed; restarting")
	// A killed server's CPU profile would be truncated; the restarted one
	// is not profiled.
	spec := r.spec
	spec.CPUProfile = ""
	proc, err := serverproc.Start(ctx, spec)
	if err != nil {
		return fmt.Errorf("restart server: %w", err)
	}
	r.proc = proc
	ready := r.rec.now()
	r.log.Info("server restarted", "pid", proc.PID(), "took", time.Duration(ready-kill).Round(time.Millisecond))

	deadline := time.Now().Add(r.cfg.Timeout)
	var written int64
	for {
		// One attempt may take all the time left: the writer's connection
		// queues behind N reconnecting watchers, and cutting it short would
		// only restart its wait.
		err := r.putAfterRestart(ctx, k, deadline)
		if err == nil {
			written = r.rec.now()
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("write after restart: %w", err)
		}
		r.log.Info("write after restart failed; retrying", "err", err)
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	if err := r.rec.wait(ctx, k, time.Until(deadline)); err != nil {
		return err
	}
	lat := r.rec.latencies(k, kill)
	p := summarize(lat)
	r.res.ServerRestartMs = ms(time.Duration(ready - kill))
	r.res.ReconnectWriteMs = ms(time.Duration(written - kill))
	r.res.ReconnectP50Ms = p.p50
	r.res.ReconnectP99Ms = p.p99
	r.res.ReconnectReceived = len(lat)
	if len(lat) == r.cfg.N {
		r.res.ReconnectAllMs = p.max
	} else {
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("reconnect storm: %d of %d watchers had not received the change %v after the kill", r.cfg.N-len(lat), r.cfg.N, r.cfg.Timeout))
	}
	st, err := proc.Stats()
	if err != nil {
		return err
	}
	r.res.ReconnectPeakRSSBytes = st.HWMBytes
	r.log.Info("reconnect storm", "all_ms", r.res.ReconnectAllMs, "received", len(lat), "peak_rss", st.HWMBytes)
	return nil
}

func (r *run) putAfterRestart(ctx context.Context, k int, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if r.writer == nil {
		w, err := r.sys.dial(ctx, r.addr, r.ca)
		if err != nil {
			return err
		}
		r.writer = w
	}
	return r.writer.Put(ctx, changeValue(k, r.cfg.ValueBytes))
}

// cleanup closes watchers, the writer and the server, and removes a
// temporary work directory. Errors are logged: the figures are already in.
func (r *run) cleanup() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, closeConcurrency)
	for _, w := range r.watchers {
		if w == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = w.Close()
		})
	}
	wg.Wait()
	if r.writer != nil {
		if d, ok := r.writer.(interface{ DeleteBucket(context.Context) error }); ok && r.cfg.NATSURL != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := d.DeleteBucket(ctx); err != nil {
				r.log.Warn("delete bucket", "err", err)
			}
			cancel()
		}
		_ = r.writer.Close()
	}
	if r.proc != nil {
		if err := r.proc.Close(childGrace); err != nil {
			r.log.Warn("stop server", "err", err)
		}
	}
	if r.agents != nil {
		if err := r.agents.Close(); err != nil {
			r.log.Warn("close watcher files", "err", err)
		}
	}
	if r.tmpWork {
		_ = os.RemoveAll(r.work)
	}
}

// freePorts asks the kernel for n free loopback ports. Another process
// could take one before the server binds it; on this benchmark's machine
// nothing else is handing out ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
