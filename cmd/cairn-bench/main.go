// Command cairn-bench runs the Cairn fleet benchmark: cairn-controlplane
// and N simulated agents (agent/loadgen) on this machine, and the figures
// of BENCHMARKS.md. See cmd/cairn-bench/internal/benchrun.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cairnhq/cairn/cmd/cairn-bench/internal/benchrun"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := benchrun.Main(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
