package benchrun

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/cairnhq/cairn/controlplane/cli"
)

// ServeControlPlane is `cairn-bench controlplane -profile-addr ADDR --
// <cairn-controlplane flags>`: the control plane's own command line
// (controlplane/cli, the code cmd/cairn-controlplane runs), plus an HTTP
// listener that starts and stops CPU profiles and writes heap profiles on
// the benchmark's request, and serves net/http/pprof. cairn-controlplane
// itself serves no pprof, so this is how the benchmark profiles it
// (-profile-dir); figures are measured on the real binary.
func ServeControlPlane(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cairn-bench controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("profile-addr", "127.0.0.1:0", "address of the profiling listener")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(stderr, "cairn-bench controlplane:", err)
		return 1
	}
	p := &profiler{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /bench/cpu-start", p.cpuStart)
	mux.HandleFunc("POST /bench/cpu-stop", p.cpuStop)
	mux.HandleFunc("POST /bench/lookup", p.lookup)
	mux.HandleFunc("/debug/pprof/", httppprof.Index)
	mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Where goroutines wait matters as much as where CPU goes: a stream
	// handler blocked on the database holds up its agent without using
	// CPU. One sample per 100µs blocked; one mutex contention in 100.
	runtime.SetBlockProfileRate(100_000)
	runtime.SetMutexProfileFraction(100)
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	defer p.stop()
	return cli.Run(ctx, fs.Args(), getenv, stdout, stderr)
}

// profiler runs one CPU profile at a time into a file.
type profiler struct {
	mu  sync.Mutex
	cpu *os.File
}

func (p *profiler) cpuStart(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cpu != nil {
		http.Error(w, "a CPU profile is running", http.StatusConflict)
		return
	}
	f, err := os.Create(r.URL.Query().Get("path"))
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.cpu = f
}

func (p *profiler) cpuStop(w http.ResponseWriter, _ *http.Request) {
	if err := p.stop(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

func (p *profiler) stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cpu == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.cpu.Close()
	p.cpu = nil
	return err
}

// lookup writes a named profile (heap, block, mutex, goroutine); the
// heap after a collection, so in-use figures are live memory.
func (p *profiler) lookup(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	prof := pprof.Lookup(name)
	if prof == nil {
		http.Error(w, "no profile "+name, http.StatusNotFound)
		return
	}
	if name == "heap" {
		runtime.GC()
	}
	f, err := os.Create(r.URL.Query().Get("path"))
	if err == nil {
		err = errors.Join(prof.WriteTo(f, 0), f.Close())
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
