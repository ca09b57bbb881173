// Package serverproc runs a peer server (embedded etcd or NATS) in a child
// process of the benchmark, so that the server's memory can be read on its
// own and the server can be killed and restarted on the same data directory
// and port while the watchers live on in the parent.
//
// The parent re-executes its own binary with the hidden first argument
// ServeArg. Parent and child speak a line protocol over the child's stdin
// and stdout: the child prints "ready" once it serves, then answers each
// "stats" line with one JSON Stats line and each "stop-profile" line with
// "ok". When its stdin closes the child shuts the server down and exits; a
// parent that dies takes the child with it (Pdeathsig). Linux only: memory
// figures come from /proc.
//
// It must not measure anything beyond the process it runs: the scenario
// decides when to ask.
package serverproc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ServeArg is the hidden first argument that turns the benchmark binary
// into a server child.
const ServeArg = "__serve"

// readyTimeout bounds how long a child may take to start serving, which
// includes replaying an etcd WAL or a JetStream store after a kill.
const readyTimeout = 2 * time.Minute

// Stats is what a child reports about itself.
type Stats struct {
	// RSSBytes and HWMBytes are VmRSS and VmHWM (peak RSS) from /proc.
	RSSBytes int64 `json:"rss_bytes"`
	HWMBytes int64 `json:"hwm_bytes"`
	// HeapAllocBytes is the live Go heap right after a forced GC: what the
	// server retains, without garbage waiting for collection.
	HeapAllocBytes int64 `json:"heap_alloc_bytes"`
	// HeapSysBytes and SysBytes are the Go runtime's view of memory obtained
	// from the OS for the heap and in total.
	HeapSysBytes int64 `json:"heap_sys_bytes"`
	SysBytes     int64 `json:"sys_bytes"`
	Goroutines   int   `json:"goroutines"`
}

// ServeConfig is what a child passes to the server it starts.
type ServeConfig struct {
	// Dir is the data directory; required, kept across restarts.
	Dir string
	// Port is the client port on 127.0.0.1; required.
	Port int
	// PeerPort is etcd's raft peer port on 127.0.0.1; ignored by NATS.
	PeerPort int
	// TLSDir holds the files pki.WriteServerFiles writes; empty means plain
	// TCP, otherwise clients must present a certificate from that CA.
	TLSDir string
	// Log receives the server's own diagnostics; never nil.
	Log *slog.Logger
}

// StartFunc starts one kind of server and returns once it accepts clients.
// Closing the returned io.Closer stops it.
type StartFunc func(ctx context.Context, cfg ServeConfig) (io.Closer, error)

// Spec says how to start a child.
type Spec struct {
	// Exe is the binary to run; empty means this process's own executable.
	Exe string
	// Server names the StartFunc the child runs (see Child).
	Server string
	// Config is passed to the server; Log is ignored (the child logs to
	// its stderr, which goes to LogPath).
	Config ServeConfig
	// CPUProfile, when set, makes the child write a CPU profile there until
	// StopProfile or a clean shutdown.
	CPUProfile string
	// LogPath receives the child's stderr, appended; required.
	LogPath string
}

// Proc is a running child.
type Proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	log   *os.File
	mu    sync.Mutex // one request at a time on the pipe
	done  chan struct{}
	err   error // set before done closes
}

// Start runs the child and waits until it serves.
func Start(ctx context.Context, spec Spec) (*Proc, error) {
	exe := spec.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find own executable: %w", err)
		}
	}
	args := []string{ServeArg,
		"-server", spec.Server,
		"-dir", spec.Config.Dir,
		"-port", strconv.Itoa(spec.Config.Port),
		"-peer-port", strconv.Itoa(spec.Config.PeerPort),
		"-tls-dir", spec.Config.TLSDir,
		"-cpuprofile", spec.CPUProfile,
	}
	logFile, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open child log: %w", err)
	}
	// Not CommandContext: the scenario decides when the child dies.
	cmd := exec.Command(exe, args...)
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("child stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("child stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start child: %w", err)
	}
	p := &Proc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), log: logFile, done: make(chan struct{})}

	ready := make(chan error, 1)
	go func() {
		line, err := p.out.ReadString('\n')
		switch {
		case err != nil:
			ready <- fmt.Errorf("child exited before serving (see %s): %w", spec.LogPath, err)
		case strings.TrimSpace(line) != "ready":
			ready <- fmt.Errorf("child said %q, want ready", strings.TrimSpace(line))
		default:
			ready <- nil
		}
	}()
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case err = <-ready:
	case <-timer.C:
		err = fmt.Errorf("child not ready after %v (see %s)", readyTimeout, spec.LogPath)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// PID returns the child's process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Stats asks the child for its memory figures. It forces a GC in the child.
func (p *Proc) Stats() (Stats, error) {
	var s Stats
	line, err := p.request("stats")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		return s, fmt.Errorf("decode child stats %q: %w", line, err)
	}
	return s, nil
}

// StopProfile makes the child finish its CPU profile, if it writes one,
// before it is killed.
func (p *Proc) StopProfile() error {
	_, err := p.request("stop-profile")
	return err
}

func (p *Proc) request(cmd string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		return "", fmt.Errorf("send %s: %w", cmd, err)
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read %s reply: %w", cmd, err)
	}
	return strings.TrimSpace(line), nil
}

// Kill ends the child with SIGKILL, as a crash would, and waits for it.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Close asks the child to shut down cleanly and waits up to grace for it,
// then kills it.
func (p *Proc) Close(grace time.Duration) error {
	_ = p.stdin.Close()
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("child did not stop within %v; killed", grace)
	}
}

// Child is the child's main: it parses the arguments Start passed (after
// ServeArg), runs starts[server] and answers the parent until stdin closes.
func Child(args []string, starts map[string]StartFunc, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(ServeArg, flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "", "server to run: "+strings.Join(names(starts), ", "))
	var cfg ServeConfig
	fs.StringVar(&cfg.Dir, "dir", "", "data directory")
	fs.IntVar(&cfg.Port, "port", 0, "client port on 127.0.0.1")
	fs.IntVar(&cfg.PeerPort, "peer-port", 0, "peer port on 127.0.0.1 (etcd)")
	fs.StringVar(&cfg.TLSDir, "tls-dir", "", "directory with server TLS files; empty = plain TCP")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the server here")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("child", *server, "pid", os.Getpid())
	start, ok := starts[*server]
	if !ok || cfg.Dir == "" || cfg.Port == 0 {
		log.Error("bad arguments", "server", *server, "dir", cfg.Dir, "port", cfg.Port)
		return 2
	}
	cfg.Log = log
	if _, _, err := RaiseNoFile(0); err != nil {
		log.Warn("raise open file limit", "err", err)
	}

	stopProfile := func() {}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Error("create cpu profile", "err", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Error("start cpu profile", "err", err)
			return 1
		}
		var once sync.Once
		stopProfile = func() { once.Do(func() { pprof.StopCPUProfile(); f.Close() }) }
	}
	defer stopProfile()

	srv, err := start(context.Background(), cfg)
	if err != nil {
		log.Error("start server", "err", err)
		return 1
	}
	fmt.Fprintln(stdout, "ready")

	in := bufio.NewScanner(stdin)
	for in.Scan() {
		switch in.Text() {
		case "stats":
			s, err := selfStats()
			if err != nil {
				log.Error("stats", "err", err)
			}
			b, _ := json.Marshal(s)
			fmt.Fprintf(stdout, "%s\n", b)
		case "stop-profile":
			stopProfile()
			fmt.Fprintln(stdout, "ok")
		default:
			fmt.Fprintln(stdout, "unknown command")
		}
	}
	if err := srv.Close(); err != nil {
		log.Error("stop server", "err", err)
		return 1
	}
	return 0
}

func names(m map[string]StartFunc) []string { return slices.Sorted(maps.Keys(m)) }

// selfStats reads RSS before the forced GC so the GC's own scavenging
// does not flatter it.
func selfStats() (Stats, error) {
	rss, hwm, err := ReadMemory(os.Getpid())
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Stats{
		RSSBytes:       rss,
		HWMBytes:       hwm,
		HeapAllocBytes: int64(ms.HeapAlloc),
		HeapSysBytes:   int64(ms.HeapSys),
		SysBytes:       int64(ms.Sys),
		Goroutines:     runtime.NumGoroutine(),
	}, err
}

// ReadMemory returns a process's VmRSS and VmHWM in bytes.
func ReadMemory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range bytes.Lines(b) {
		field, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(field) {
		case "VmRSS":
			dst = &rss
		case "VmHWM":
			dst = &hwm
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(rest)), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s: %w", field, err)
		}
		*dst = kb * 1024
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc status")
	}
	return rss, hwm, nil
}

// RaiseNoFile raises the soft open-file limit to at least want (0 = as high
// as allowed): to the hard limit, and past it when the process may raise the
// hard limit (root). It returns the limits now in force; err is set only
// when the soft limit is still below want.
func RaiseNoFile(want uint64) (soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("getrlimit: %w", err)
	}
	if want > lim.Max {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return want, want, nil
		}
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, 0, fmt.Errorf("setrlimit: %w", err)
		}
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < want {
		return lim.Cur, lim.Max, fmt.Errorf("open file limit %d is below the %d needed (raise the hard limit: ulimit -Hn)", lim.Cur, want)
	}
	return lim.Cur, lim.Max, nil
}
