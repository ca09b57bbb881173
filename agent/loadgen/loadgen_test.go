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
