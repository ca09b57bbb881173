// Command peerbench runs Cairn's fan-out benchmark scenario against etcd
// watch and NATS KV watch, so Cairn's figures can be put side by side with
// theirs: fan-out latency (figure 1), server memory per watcher (figure 3)
// and a reconnect storm (figure 4). See bench/README.md.
//
// It lives in its own module so that etcd and NATS never enter the
// product's dependency graph.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/bench/internal/scenario"
	"github.com/cairnhq/cairn/bench/internal/serverproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// flags is the command line, before it becomes scenario.Configs.
type flags struct {
	systems    []string
	n          int
	changes    int
	jsonPath   string
	natsURL    string
	serverPID  int
	valueBytes int
	dialConc   int
	timeout    time.Duration
	settle     time.Duration
	skipRecon  bool
	workDir    string
	watchers   string
	cpuProfile string
	serverProf string
	quiet      bool
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	fs := flag.NewFlagSet("peerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f flags
	system := fs.String("system", "etcd", "comma-separated systems to run, or all: "+strings.Join(scenario.Systems, ", "))
	fs.IntVar(&f.n, "n", 10000, "watchers, each on its own connection")
	fs.IntVar(&f.changes, "changes", 5, "changes timed for figure 1, one after another")
	fs.StringVar(&f.jsonPath, "json", "", "also write the results as a JSON array to this file")
	fs.StringVar(&f.natsURL, "nats-url", "", "use this NATS server (e.g. nats://127.0.0.1:4222) instead of an embedded one; no reconnect figure")
	fs.IntVar(&f.serverPID, "server-pid", 0, "with -nats-url: the server's pid, to read its memory from /proc")
	fs.IntVar(&f.valueBytes, "value-bytes", 256, "size of each written value")
	fs.IntVar(&f.dialConc, "dial-concurrency", 32, "watchers set up at once")
	fs.DurationVar(&f.timeout, "timeout", 0, "bound on each phase (0 = 2m + 10ms per watcher)")
	fs.DurationVar(&f.settle, "settle", time.Second, "pause before memory readings and between changes")
	fs.BoolVar(&f.skipRecon, "skip-reconnect", false, "skip figure 4 (the reconnect storm)")
	fs.StringVar(&f.workDir, "work-dir", "", "directory for server data, TLS files and server logs (default: a temporary directory, removed)")
	fs.StringVar(&f.watchers, "watchers-dir", "", "for the +work systems, where the watchers' files go (default: the work directory); make bench uses /dev/shm, as for Cairn's agents")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the watchers) here")
	fs.StringVar(&f.serverProf, "server-cpuprofile", "", "write a CPU profile of the server child here (setup, figures 1 and 3); with several systems, the system name is appended")
	fs.BoolVar(&f.quiet, "q", false, "no progress log on stderr")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *system == "all" {
		f.systems = scenario.Systems
	} else {
		f.systems = strings.Split(*system, ",")
	}
	if f.n < 1 || f.changes < 1 {
		return nil, fmt.Errorf("-n and -changes must be at least 1")
	}
	return &f, nil
}

func (f *flags) config(system string, log *slog.Logger) scenario.Config {
	prof := f.serverProf
	if prof != "" && len(f.systems) > 1 {
		prof += "." + system
	}
	return scenario.Config{
		System:           system,
		N:                f.n,
		Changes:          f.changes,
		ValueBytes:       f.valueBytes,
		DialConcurrency:  f.dialConc,
		Timeout:          f.timeout,
		Settle:           f.settle,
		SkipReconnect:    f.skipRecon,
		NATSURL:          f.natsURL,
		ServerPID:        f.serverPID,
		WorkDir:          f.workDir,
		WatchersDir:      f.watchers,
		ServerCPUProfile: prof,
		Log:              log,
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == serverproc.ServeArg {
		return serverproc.Child(args[1:], scenario.Starts(), stdin, stdout, stderr)
	}
	f, err := parseFlags(args, stderr)
	if err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintln(stderr, "peerbench:", err)
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if f.quiet {
		log = slog.New(slog.DiscardHandler)
	}

	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "peerbench:", err)
			return 1
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			fmt.Fprintln(stderr, "peerbench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	var results []*scenario.Result
	code := 0
	for _, sys := range f.systems {
		log.Info("run", "system", sys, "n", f.n, "changes", f.changes)
		res, err := scenario.Run(ctx, f.config(sys, log))
		if err != nil {
			fmt.Fprintf(stderr, "peerbench: %s: %v\n", sys, err)
			code = 1
			if ctx.Err() != nil {
				break
			}
			continue
		}
		results = append(results, res)
		if err := res.WriteText(stdout); err != nil {
			fmt.Fprintln(stderr, "peerbench:", err)
			return 1
		}
		fmt.Fprintln(stdout)
	}

	out, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		fmt.Fprintln(stderr, "peerbench:", err)
		return 1
	}
	out = append(out, '\n')
	if f.jsonPath != "" {
		if err := os.WriteFile(f.jsonPath, out, 0o644); err != nil {
			fmt.Fprintln(stderr, "peerbench:", err)
			return 1
		}
	} else {
		stdout.Write(out)
	}
	return code
}
