// Command busycore measures what one busy processor core does to the
// latency of single appends, with no rebuild, no lock and nothing shared
// but the machine: writers append agent events one at a time, with
// probe_failures applied inline, in three windows — nothing else
// running, one core kept busy by a loop in another process (this
// command, started again with -spin), nothing else running again — and
// it prints each window's p50, p99 and longest append. It is the
// reference for rebuild-load's p99 target (docs/performance.md,
// "Rebuilds and verify under load"): a rebuild keeps about a core busy.
//
//	go run ./internal/cmd/busycore -database-url 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
//
// It works in a scratch database (a schema of its own on PostgreSQL, a
// file in a temporary directory on SQLite), dropped at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"time"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/scratchlog"
)

type options struct {
	databaseURL string
	writers     int
	window      time.Duration
	prefix      string // of the scratch database's name
	spinner     []string
}

func main() {
	o := options{prefix: "canonlog_busycore"}
	var spin bool
	flag.StringVar(&o.databaseURL, "database-url", "", "where to make the scratch database (default $CANONLOG_DATABASE_URL, then sqlite:canonlog.db)")
	flag.IntVar(&o.writers, "writers", 8, "writers appending at once")
	flag.DurationVar(&o.window, "window", 10*time.Second, "length of each window")
	flag.BoolVar(&spin, "spin", false, "keep one core busy until killed (the busy window's other process)")
	flag.Parse()
	if spin {
		start := time.Now()
		for time.Since(start) >= 0 { // until killed
		}
		return
	}
	if o.writers < 1 || o.window <= 0 {
		fmt.Fprintln(os.Stderr, "busycore: -writers and -window must be positive")
		os.Exit(2)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "busycore: %v\n", err)
		os.Exit(1)
	}
	o.spinner = []string{exe, "-spin"}
	o.databaseURL = eventlog.DatabaseURL(o.databaseURL, os.LookupEnv, "sqlite:canonlog.db")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "busycore: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, w io.Writer) (err error) {
	sl, err := scratchlog.Open(ctx, o.databaseURL, o.prefix, w)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sl.Close()) }()
	for _, win := range []struct {
		name string
		busy bool
	}{{"idle", false}, {"one-core-busy", true}, {"idle-again", false}} {
		var spinner *exec.Cmd
		if win.busy {
			spinner = exec.CommandContext(ctx, o.spinner[0], o.spinner[1:]...)
			if err := spinner.Start(); err != nil {
				return fmt.Errorf("start the spinner: %w", err)
			}
		}
		res, err := scratchlog.Write(ctx, o.writers, o.window, func(ctx context.Context, w int) error {
			_, err := sl.Log.Append(ctx, scratchlog.Entry(w))
			return err
		})
		if spinner != nil {
			_ = spinner.Process.Kill()
			_ = spinner.Wait()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", win.name, err)
		}
		lat := res.Latencies
		slices.Sort(lat)
		at := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
		fmt.Fprintf(w, "WINDOW %-14s appends=%d p50=%.1fms p99=%.1fms max=%.1fms\n", win.name, len(lat), at(0.5), at(0.99), at(1))
	}
	return nil
}
