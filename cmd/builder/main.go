// Command builder runs nixbus's builder service alone, against the NATS named by
// --nats.url: how operators scale it past one machine.
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
	code := app.Main(ctx, append([]string{"builder"}, os.Args[1:]...), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
