package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/canonlog/canonlog/bench/peers"
	"github.com/canonlog/canonlog/eventlog"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// run parses args, runs the comparison and prints its table to stdout,
// progress and errors to stderr. It returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("peersbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg   peers.Config
		url   string
		quiet bool
	)
	fs.StringVar(&url, "database-url", "", "PostgreSQL database to make the run's schemas in (default $CANONLOG_DATABASE_URL, $DATABASE_URL, then "+peers.DefaultDatabaseURL+")")
	fs.IntVar(&cfg.Rounds, "rounds", peers.DefaultRounds, "rounds per scenario (the table gives medians)")
	fs.IntVar(&cfg.SingleEvents, "single", peers.DefaultSingleEvents, "events per side and round appended one call each from 1 client")
	fs.IntVar(&cfg.ConcurrentEvents, "concurrent", peers.DefaultConcurrentEvents, "events per side and round appended one call each from -clients clients")
	fs.IntVar(&cfg.Clients, "clients", peers.DefaultClients, "clients of the concurrent scenario")
	fs.IntVar(&cfg.BatchEvents, "batch", peers.DefaultBatchEvents, "events per side and round appended in calls of -batch-size")
	fs.IntVar(&cfg.BatchSize, "batch-size", peers.DefaultBatchSize, "events per call of the batch scenario")
	fs.IntVar(&cfg.ReplayEvents, "replay", peers.DefaultReplayEvents, "events in the log each side reads back whole per round")
	fs.BoolVar(&cfg.EventIDs, "event-ids", false, "give canonlog's events event ids (exactly-once appends; a single append is then one round trip)")
	fs.DurationVar(&cfg.Latency, "latency", 0, "hold every message this long in each direction, through a proxy every side connects by (the server as if across a network; 0: direct)")
	fs.BoolVar(&quiet, "quiet", false, "print no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "peersbench: unexpected argument %q: every setting is a flag (see -h)\n", fs.Arg(0))
		return exitUsage
	}
	cfg.DatabaseURL = eventlog.DatabaseURL(url, os.LookupEnv, peers.DefaultDatabaseURL)
	if !quiet {
		cfg.Progress = stderr
	}
	r, err := peers.New(&cfg)
	if err != nil {
		fmt.Fprintf(stderr, "peersbench: %v\n", err)
		return exitUsage
	}
	rep, err := r.Run(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Fprintf(stderr, "peersbench: interrupted: %v\n", err)
		return exitInterrupted
	case err != nil:
		fmt.Fprintf(stderr, "peersbench: %v\n", err)
		return exitFailure
	}
	if err := rep.WriteTable(stdout); err != nil {
		fmt.Fprintf(stderr, "peersbench: %v\n", err)
		return exitFailure
	}
	return exitOK
}
