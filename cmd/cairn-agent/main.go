// Command cairn-agent runs the Cairn agent in a data plane.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cairnhq/cairn/agent/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
