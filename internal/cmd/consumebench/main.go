// Command consumebench measures consumers (package consumer) on
// PostgreSQL, in a scratch schema dropped at the end:
//
//	go run ./internal/cmd/consumebench -database-url 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
//
// Latency: how long after an append's commit a consumer in another
// process's log (its own pool, listening) handles the event, while
// -writers writers append -rate events a second in all, with the writers'
// log sending wake-ups (eventlog.Config.Notify) and, in a second case,
// without them (polling every -poll). It is measured from the moment
// Append returned, just after the commit, to the handler's call; both
// clocks are this process's.
//
// Throughput: how fast a transactional consumer maintaining probe_failures
// as an asynchronous projection goes through a realistic history of
// -events events (internal/fleetgen), against the rate at which the same
// events were appended in batches of -batch (the pure log: the projection
// is asynchronous).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"time"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/fleetgen"
	"github.com/canonlog/canonlog/internal/scratchlog"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

type options struct {
	databaseURL string
	rate        int
	writers     int
	window      time.Duration
	poll        time.Duration
	events      int
	batch       int
	prefix      string
	// settle is how long a latency case waits, after its last append, for
	// the consumer to have handled every event.
	settle time.Duration
}

func main() {
	o := options{prefix: "canonlog_consumebench", settle: 10 * time.Second}
	flag.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL database to make the scratch schema in (default $CANONLOG_DATABASE_URL)")
	flag.IntVar(&o.rate, "rate", 1000, "events appended per second in the latency cases, by all writers together")
	flag.IntVar(&o.writers, "writers", 4, "writers of the latency cases")
	flag.DurationVar(&o.window, "window", 10*time.Second, "length of each latency case")
	flag.DurationVar(&o.poll, "poll", 100*time.Millisecond, "the consumer's poll interval in the polling-only case")
	flag.IntVar(&o.events, "events", 200_000, "events of the throughput case (0: skip it)")
	flag.IntVar(&o.batch, "batch", 500, "events per AppendBatch call, and the consumer's page size, in the throughput case")
	flag.Parse()
	o.databaseURL = eventlog.DatabaseURL(o.databaseURL, os.LookupEnv, "")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "consumebench: %v\n", err)
		os.Exit(1)
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func run(ctx context.Context, o options, w io.Writer) (err error) {
	if o.rate < 1 || o.writers < 1 || o.window <= 0 || o.poll <= 0 || o.events < 0 || o.batch < 1 || o.batch > eventlog.MaxPageSize {
		return fmt.Errorf("-rate, -writers, -window and -poll must be positive, -events not negative, -batch between 1 and %d", eventlog.MaxPageSize)
	}
	sl, err := scratchlog.Open(ctx, o.databaseURL, o.prefix, w)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sl.Close()) }()
	if sl.Backend != eventlog.Postgres {
		return errors.New("the consumers' wake-ups and takeovers are PostgreSQL's: give a postgres:// URL")
	}
	for _, c := range []struct {
		name   string
		notify bool
		poll   time.Duration
	}{{"notify", true, eventlog.DefaultPollInterval}, {"poll-only", false, o.poll}} {
		lat, err := latency(ctx, sl, o, c.notify, c.poll)
		if err != nil {
			return fmt.Errorf("latency, %s: %w", c.name, err)
		}
		fmt.Fprintf(w, "LATENCY %-9s poll %-6s events %d  commit-to-handler p50 %s  p99 %s  max %s\n", c.name, c.poll, len(lat),
			pct(lat, 0.50), pct(lat, 0.99), slices.Max(lat).Round(100*time.Microsecond))
	}
	if o.events > 0 {
		if err := throughput(ctx, sl, o, w); err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
	}
	return ctx.Err()
}

func pct(xs []time.Duration, p float64) time.Duration {
	return xs[min(len(xs)-1, int(float64(len(xs))*p))].Round(100 * time.Microsecond)
}

// latency runs one latency case and returns the sorted latencies.
func latency(ctx context.Context, sl *scratchlog.Log, o options, notify bool, poll time.Duration) ([]time.Duration, error) {
	writerDB, err := eventlog.OpenDB(ctx, sl.URL)
	if err != nil {
		return nil, err
	}
	defer writerDB.Close()
	writer, err := eventlog.New(writerDB, &eventlog.Config{Notify: notify})
	if err != nil {
		return nil, err
	}
	defer writer.Close()
	readerDB, err := eventlog.OpenDB(ctx, sl.URL)
	if err != nil {
		return nil, err
	}
	defer readerDB.Close()
	reader, err := eventlog.New(readerDB, &eventlog.Config{ListenURL: sl.URL})
	if err != nil {
		return nil, err
	}
	defer reader.Close()

	var (
		mu        sync.Mutex
		committed = map[int64]time.Time{}
		handled   = map[int64]time.Time{}
	)
	c, err := consumer.New(reader, &consumer.Config{Name: "latency_" + map[bool]string{true: "notify", false: "poll"}[notify],
		FromHead: true, PollInterval: poll, Logger: quiet,
		Handle: func(_ context.Context, ev eventlog.Event) error {
			now := time.Now()
			mu.Lock()
			handled[ev.Seq] = now
			mu.Unlock()
			return nil
		}})
	if err != nil {
		return nil, err
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	defer func() { stop(); <-done }()
	time.Sleep(200 * time.Millisecond) // its takeover

	every := time.Duration(o.writers) * time.Second / time.Duration(o.rate)
	var wg sync.WaitGroup
	errs := make(chan error, o.writers)
	end := time.Now().Add(o.window)
	for wr := range o.writers {
		wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for time.Now().Before(end) && ctx.Err() == nil {
				<-t.C
				res, err := writer.Append(ctx, scratchlog.Entry(wr))
				if err != nil {
					errs <- err
					return
				}
				now := time.Now()
				mu.Lock()
				committed[res.Event.Seq] = now
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	deadline := time.Now().Add(poll + o.settle)
	for {
		mu.Lock()
		n := len(handled)
		mu.Unlock()
		if n >= len(committed) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for seq, at := range committed {
		h, ok := handled[seq]
		if !ok {
			return nil, fmt.Errorf("event %d was not handled within %s of the last append", seq, poll+o.settle)
		}
		lat = append(lat, max(h.Sub(at), 0))
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		return nil, errors.New("nothing appended")
	}
	return lat, nil
}

// asyncFailures is probe_failures maintained by a consumer.
type asyncFailures struct{ *probefailures.Projection }

func (asyncFailures) Asynchronous() bool { return true }

func throughput(ctx context.Context, sl *scratchlog.Log, o options, w io.Writer) error {
	reg := projection.Must(projection.NewRegistry(asyncFailures{probefailures.New()}))
	log, err := eventlog.New(sl.DB, &eventlog.Config{Hook: reg})
	if err != nil {
		return err
	}
	defer log.Close()
	gen, err := fleetgen.New(nil)
	if err != nil {
		return err
	}
	began := time.Now()
	batch := make([]eventlog.Entry, 0, o.batch)
	for i := range o.events {
		batch = append(batch, gen.Entry(int64(i)))
		if len(batch) == o.batch || i == o.events-1 {
			if _, err := log.AppendBatch(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	appendTook := time.Since(began)
	if _, err := sl.DB.ExecContext(ctx, `ANALYZE event_log`); err != nil {
		return err
	}
	last, err := log.Count(ctx, eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindAgentEvent}})
	if err != nil {
		return err
	}

	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	began = time.Now()
	go func() {
		done <- projection.RunAsync(cctx, log, reg, probefailures.Name, &consumer.Config{PageSize: o.batch, Logger: quiet})
	}()
	for {
		var handled int64
		err := sl.DB.GetContext(ctx, &handled, `SELECT count(*) FROM event_log WHERE kind = 'agent_event' AND seq <= COALESCE((SELECT handled_seq FROM canonlog_consumers WHERE name = $1), 0)`, probefailures.Name)
		if err != nil {
			stop()
			return errors.Join(err, <-done)
		}
		if handled >= last {
			break
		}
		select {
		case err := <-done:
			stop()
			return fmt.Errorf("the consumer stopped: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	consumeTook := time.Since(began)
	stop()
	if err := <-done; err != nil {
		return err
	}
	var rows int64
	if err := sl.DB.GetContext(ctx, &rows, `SELECT count(*) FROM probe_failures`); err != nil {
		return err
	}
	appendRate := float64(o.events) / appendTook.Seconds()
	consumeRate := float64(o.events) / consumeTook.Seconds()
	fmt.Fprintf(w, "THROUGHPUT events %d  probe_failures rows %d\n", o.events, rows)
	fmt.Fprintf(w, "THROUGHPUT AppendBatch(%d) %.0f events/s  async consumer (page %d) %.0f events/s  consumer ÷ append %.2f\n",
		o.batch, appendRate, o.batch, consumeRate, consumeRate/appendRate)
	return nil
}
