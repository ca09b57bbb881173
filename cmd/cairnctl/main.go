// Command cairnctl is the operators' command line for the Cairn admin API.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cairnhq/cairn/cairnctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cairnctl.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
