// Command cairn-dev is `make dev`: a local control plane with demo objects.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cairnhq/cairn/internal/devenv"
)

func main() {
	fs := flag.NewFlagSet("cairn-dev", flag.ExitOnError)
	dir := fs.String("dir", ".cairn", "directory for local state")
	bin := fs.String("bin", "bin", "directory with the built binaries")
	addr := fs.String("admin-addr", "127.0.0.1:7443", "admin API address")
	agentAddr := fs.String("agent-addr", "127.0.0.1:7444", "agent API address")
	agentHTTP := fs.String("agent-http-addr", "127.0.0.1:7445", "the agent's /healthz and /metrics address")
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := devenv.Run(ctx, devenv.Config{Dir: *dir, BinDir: *bin, AdminAddr: *addr, AgentAddr: *agentAddr, AgentHTTPAddr: *agentHTTP, Out: os.Stdout})
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
