// Command nixbus runs nixbus services, all in one process or one at a time,
// and the operator commands (run, plan, trigger). See internal/app.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"nixbus.dev/nixbus/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
