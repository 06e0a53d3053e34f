// Command peersbench runs canonlog and its peers on the same workload
// against one PostgreSQL server and prints one table (package peers).
//
//	cd bench/peers && go run ./cmd/peersbench -database-url postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
