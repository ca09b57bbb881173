package loadgen

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The whole fleet, against a real control plane, is exercised by
// cmd/cairn-bench/internal/benchrun's TestHarnessSmallFleet; these cover
// what needs no control plane.

func TestWorkerRefusesCallsWithoutAFleet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := InProcess(ctx, slog.New(slog.DiscardHandler))
	for name, call := range map[string]func() error{
		"arm":   func() error { return w.Arm("fleet", 1) },
		"stats": func() error { _, err := w.Stats(""); return err },
		"wait":  func() error { _, _, err := w.Wait("fleet", time.Millisecond); return err },
		"churn": func() error { return w.SetChurn(true) },
		"start": func() error { return w.Start(FleetConfig{}) },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "loadgen worker") {
			t.Errorf("%s without a fleet: %v; want a worker error", name, err)
		}
	}
	if _, err := w.call(request{Op: "dance"}); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Errorf("unknown op: %v; want refused", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestLongestProgressWait(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  ReportConfig
		want time.Duration
	}{
		{"defaults: the agent's progress delay", ReportConfig{}, 10 * time.Second},
		{"a shorter delay", ReportConfig{ProgressDelay: 3 * time.Second}, 3 * time.Second},
		{"negative: at once", ReportConfig{ProgressDelay: -1}, 0},
		{"a delay past the default re-send: the re-send", ReportConfig{ProgressDelay: time.Hour}, 72 * time.Second},
		{"a delay past a set re-send: the re-send", ReportConfig{ProgressDelay: time.Hour, StatusEvery: 10 * time.Second}, 12 * time.Second},
		{"a re-send later than the delay: the delay", ReportConfig{ProgressDelay: 5 * time.Second, StatusEvery: time.Hour}, 5 * time.Second},
	} {
		if got := tc.cfg.LongestProgressWait(); got != tc.want {
			t.Errorf("%s: %v; want %v", tc.name, got, tc.want)
		}
	}
}
