package benchrun

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairnhq/cairn/agent/loadgen"
	"github.com/cairnhq/cairn/internal/flagenv"
)

const envPrefix = "CAIRN_BENCH"

// Main is cairn-bench's command line; it returns the exit code: 0 when
// every run finished, 1 when one failed, 2 for bad usage. `ratios
// CAIRN.json PEERS.json` prints Cairn/peer ratios from the JSON of a run
// and of the peer benchmark (Ratios). Two hidden subcommands serve the
// benchmark itself: `agents-worker` (a process of simulated agents, driven
// over stdin and stdout) and `controlplane` (the profiled control plane,
// ServeControlPlane).
func Main(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "agents-worker":
			log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			if err := loadgen.ServeWorker(ctx, stdin, stdout, log); err != nil {
				fmt.Fprintln(stderr, "cairn-bench agents-worker:", err)
				return 1
			}
			return 0
		case "controlplane":
			return ServeControlPlane(ctx, args[1:], getenv, stdout, stderr)
		case "ratios":
			return Ratios(args[1:], stdout, stderr)
		}
	}
	cfgs, jsonPath, quiet, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "cairn-bench:", err)
		return 2
	}
	logOut := stderr
	if quiet {
		logOut = io.Discard
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if cfgs[0].ControlPlane == "" {
		bin, err := controlPlaneBinary(ctx, log)
		if err != nil {
			fmt.Fprintln(stderr, "cairn-bench:", err)
			return 1
		}
		for i := range cfgs {
			cfgs[i].ControlPlane = bin
		}
	}
	var results []*Result
	code := 0
	for _, cfg := range cfgs {
		cfg.Log = log.With("store", cfg.Store)
		res, err := Run(ctx, cfg)
		if res != nil {
			if werr := res.WriteText(stdout); werr != nil {
				fmt.Fprintln(stderr, "cairn-bench:", werr)
			}
			fmt.Fprintln(stdout)
			results = append(results, res)
		}
		if err != nil {
			fmt.Fprintf(stderr, "cairn-bench: %s: %v\n", cfg.Store, err)
			code = 1
		}
	}
	if jsonPath != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err == nil {
			err = os.WriteFile(jsonPath, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "cairn-bench:", err)
			code = 1
		}
	}
	return code
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (cfgs []Config, jsonPath string, quiet bool, err error) {
	fs := flag.NewFlagSet("cairn-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c Config
	stores := fs.String("store", SQLite, "comma-separated stores to run on, one run each: sqlite, postgres")
	storms := fs.String("storms", "raised,default", "figure 4's reconnect storms, in order: raised (the -admit-rate and -admit-burst limits), default (the control plane's own), or RATE/BURST; empty skips figure 4")
	fs.IntVar(&c.N, "n", 10000, "agents in the fleet's data plane, each with its own SVID and mTLS connection (one more agent has a data plane of its own, for figure 2)")
	fs.StringVar(&c.PostgresURL, "postgres-url", DefaultPostgresURL, "PostgreSQL server on which each postgres run creates (and drops) a fresh database")
	fs.StringVar(&c.ControlPlane, "controlplane", "", "cairn-controlplane binary (default: next to this program, else built with go build)")
	fs.IntVar(&c.Changes, "changes", 5, "figure 1: changes fanned out to all agents, one at a time (0 skips)")
	fs.IntVar(&c.Single, "single", 1000, "figure 2: sequential changes to the one-agent data plane (0 skips)")
	fs.DurationVar(&c.IngestFor, "ingest", 30*time.Second, "figure 5: how long to measure status ingest (0 skips)")
	fs.DurationVar(&c.ThroughputFor, "throughput", 30*time.Second, "figure 6: how long to write changes back to back (0 skips)")
	fs.BoolVar(&c.SkipMemory, "skip-memory", false, "skip figure 3")
	fs.Float64Var(&c.AdmitRate, "admit-rate", 0, "control plane --stream-admit-rate while connecting and in the raised storm (0: N per second)")
	fs.IntVar(&c.AdmitBurst, "admit-burst", 0, "control plane --stream-admit-burst likewise (0: N+1)")
	fs.DurationVar(&c.Heartbeat, "heartbeat-interval", 0, "control plane --heartbeat-interval (0: its default)")
	fs.Int64Var(&c.History, "history-revisions", 0, "control plane --history-revisions (0: its default)")
	extra := fs.String("controlplane-args", "", "more control-plane flags, space-separated")
	fs.DurationVar(&c.Report.StatusEvery, "status-every", 0, "agents' --status-interval (0: cairn-agent's default, 1m)")
	fs.DurationVar(&c.Report.ProgressDelay, "progress-delay", 0, "agents' --status-progress-delay (0: cairn-agent's default, 10s; negative: progress reported at once)")
	fs.DurationVar(&c.Report.MetricsEvery, "metrics-every", 0, "agents' --metrics-interval (0: cairn-agent's default, 30s)")
	fs.DurationVar(&c.Report.PollEvery, "poll-every", 0, "how often agents check their status for a change nothing signalled (0: cairn-agent's default, 30s)")
	fs.DurationVar(&c.Report.ChurnEvery, "churn-every", time.Second, "figure 5: how often each agent's status changes")
	fs.IntVar(&c.ValueBytes, "value-bytes", 256, "size of each written config value")
	fs.IntVar(&c.AgentsPerProcess, "agents-per-process", 0, "agents per process (0: as many as the open-file limit allows, 3 files per agent)")
	fs.IntVar(&c.EnrollConcurrency, "enroll-concurrency", 32, "enrollments at once per agents process")
	fs.StringVar(&c.WorkDir, "work-dir", "", "directory for the control plane's data and log, the agents' data and logs (default: a temporary directory, removed)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the temporary work directory")
	fs.StringVar(&c.AgentsDir, "agents-dir", "", "directory for the agents' data (identity, cache, report queue) instead of the work directory, e.g. a tmpfs such as /dev/shm so that agents' fsyncs do not share the control plane's disk (emptied at the end)")
	fs.StringVar(&c.ProfileDir, "profile-dir", "", "profile: run the control plane under this program's profiling wrapper and write CPU profiles (figures 1, 5, 6) of it and of the agents, and its heap at figure 3, here")
	fs.DurationVar(&c.Settle, "settle", 2*time.Second, "pause before memory readings and between changes")
	fs.DurationVar(&c.Timeout, "timeout", 0, "bound on each wait (0: 2m + 20ms per agent)")
	fs.StringVar(&jsonPath, "json", "", "also write the results as a JSON array to this file")
	fs.BoolVar(&quiet, "q", false, "no progress log on stderr")
	fs.Usage = flagenv.Usage(fs, envPrefix, "usage: cairn-bench [flags]\n       cairn-bench ratios CAIRN.json PEERS.json\n\nRuns the Cairn fleet benchmark: a control plane and N simulated agents on this machine.\nratios prints Cairn/peer ratios for figures 1, 3 and 4 from this program's -json and bench/'s peerbench -json.", stderr)
	if err := flagenv.Parse(fs, envPrefix, args, getenv); err != nil {
		return nil, "", false, err
	}
	if fs.NArg() > 0 {
		return nil, "", false, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if c.N < 1 || c.Changes < 0 || c.Single < 0 || c.ValueBytes < 16 || c.Report.PollEvery < 0 || c.Report.ChurnEvery <= 0 {
		return nil, "", false, errors.New("-n must be at least 1, -value-bytes at least 16, -churn-every positive, -poll-every, -changes and -single not negative")
	}
	if *extra != "" {
		c.ExtraArgs = strings.Fields(*extra)
	}
	for _, s := range strings.Split(*storms, ",") {
		switch s = strings.TrimSpace(s); s {
		case "":
		case "raised":
			c.Storms = append(c.Storms, StormConfig{Name: "raised"})
		case "default":
			c.Storms = append(c.Storms, StormConfig{Name: "default", Rate: -1})
		default:
			rate, burst, ok := strings.Cut(s, "/")
			r, err1 := strconv.ParseFloat(rate, 64)
			b, err2 := strconv.Atoi(burst)
			if !ok || err1 != nil || err2 != nil || r <= 0 || b < 1 {
				return nil, "", false, fmt.Errorf("-storms: %q is not raised, default or RATE/BURST", s)
			}
			c.Storms = append(c.Storms, StormConfig{Name: s, Rate: r, Burst: b})
		}
	}
	exe, err := os.Executable()
	if err == nil {
		c.Exe = exe
	}
	c.Command = "cairn-bench " + strings.Join(args, " ")
	storeList := strings.Split(*stores, ",")
	for _, s := range storeList {
		s = strings.TrimSpace(s)
		if s != SQLite && s != Postgres {
			return nil, "", false, fmt.Errorf("-store: %q is not sqlite or postgres", s)
		}
		cc := c
		cc.Storms = append([]StormConfig(nil), c.Storms...)
		cc.Store = s
		if cc.WorkDir != "" && len(storeList) > 1 {
			cc.WorkDir = filepath.Join(c.WorkDir, s)
		}
		cfgs = append(cfgs, cc)
	}
	return cfgs, jsonPath, quiet, nil
}

// controlPlaneBinary finds cairn-controlplane next to this program (as
// `make build` puts them in bin/), or builds it.
func controlPlaneBinary(ctx context.Context, log *slog.Logger) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "cairn-controlplane")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	dir, err := os.MkdirTemp("", "cairn-bench-bin-")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "cairn-controlplane")
	log.Info("building cairn-controlplane", "into", p)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", p, "github.com/cairnhq/cairn/cmd/cairn-controlplane").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("no cairn-controlplane next to this program, and go build failed: %v\n%s", err, out)
	}
	return p, nil
}
