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
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sync"
	"time"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/scratchdb"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
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
	set, err := scratchdb.New(o.databaseURL, &scratchdb.Config{Prefix: o.prefix})
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, set.Close())
		if err == nil {
			fmt.Fprintln(w, "removed the scratch database")
		}
	}()
	sdb, err := set.Create(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: scratch database %s\n", set.Dialect(), sdb.Name)
	db, err := eventlog.OpenDB(ctx, sdb.URL)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	reg := projection.Must(projection.NewRegistry(probefailures.New()))
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, log.Close()) }()
	if _, err := projection.Migrate(ctx, log, reg); err != nil {
		return err
	}
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
		lat, err := window(ctx, log, o)
		if spinner != nil {
			_ = spinner.Process.Kill()
			_ = spinner.Wait()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", win.name, err)
		}
		slices.Sort(lat)
		at := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
		fmt.Fprintf(w, "WINDOW %-14s appends=%d p50=%.1fms p99=%.1fms max=%.1fms\n", win.name, len(lat), at(0.5), at(0.99), at(1))
	}
	return nil
}

// window runs o.writers writers for o.window and returns each append's
// latency.
func window(ctx context.Context, log *eventlog.Log, o options) ([]time.Duration, error) {
	payload := json.RawMessage(`{"type":"ProbeResult","mode":"enforce","status":"pass","probe_name":"ssh-hardening",` +
		`"sub_results":[{"control_id":"CIS-5.2.1","framework":"cis","status":"pass"}]}`)
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	end := time.Now().Add(o.window)
	for i := range o.writers {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				start := time.Now()
				_, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: fmt.Sprint("host-", i), RolloutID: "r1", Payload: payload})
				d := time.Since(start)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if len(lat) == 0 {
		return nil, errors.New("no append finished in the window")
	}
	return lat, nil
}
