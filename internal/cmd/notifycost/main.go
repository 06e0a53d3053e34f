// Command notifycost measures what a LISTEN/NOTIFY wake-up costs single
// appends, sent from three places: nowhere (the reference), from every
// append's own transaction (pg_notify before COMMIT), and from the log's
// own notifier (eventlog.Config.Notify), which sends at most one
// notification every eventlog.NotifyInterval, after the commits. A
// listener is connected throughout. It prints appends/s per case and the
// ratios to the reference, alternating the cases for -rounds rounds from
// 1 and from -clients clients (issue 16: appends with wake-up enabled must
// keep ≥ 0.95x their throughput without it).
//
//	go run ./internal/cmd/notifycost -database-url 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
//
// PostgreSQL only; it works in a scratch schema, dropped at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/scratchlog"
)

type options struct {
	databaseURL string
	clients     int
	rounds      int
	window      time.Duration
	prefix      string // of the scratch schema's name
}

func main() {
	o := options{prefix: "canonlog_notifycost"}
	flag.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL database to make the scratch schema in (default $CANONLOG_DATABASE_URL)")
	flag.IntVar(&o.clients, "clients", 8, "clients of the concurrent cases")
	flag.IntVar(&o.rounds, "rounds", 4, "rounds per client count; the cases alternate in each")
	flag.DurationVar(&o.window, "window", 5*time.Second, "length of each case in a round")
	flag.Parse()
	o.databaseURL = eventlog.DatabaseURL(o.databaseURL, os.LookupEnv, "")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "notifycost: %v\n", err)
		os.Exit(1)
	}
}

const channel = eventlog.NotifyChannel

func run(ctx context.Context, o options, w io.Writer) (err error) {
	if o.clients < 1 || o.rounds < 1 || o.window <= 0 {
		return errors.New("-clients, -rounds and -window must be positive")
	}
	sl, err := scratchlog.Open(ctx, o.databaseURL, o.prefix, w)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sl.Close()) }()
	if sl.Backend != eventlog.Postgres {
		return errors.New("LISTEN/NOTIFY is PostgreSQL's: give a postgres:// URL")
	}
	log, db := sl.Log, sl.DB

	listener := pq.NewListener(sl.URL, time.Second, time.Minute, nil)
	defer func() { err = errors.Join(err, listener.Close()) }()
	if err := listener.Listen(channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var received atomic.Int64
	go func() {
		for n := range listener.Notify {
			if n != nil {
				received.Add(1)
			}
		}
	}()

	// The log's own notifier (Config.Notify): at most one notification
	// every eventlog.NotifyInterval, after the appends' commits.
	notifying, err := eventlog.New(db, &eventlog.Config{Notify: true})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, notifying.Close()) }()

	entry := scratchlog.Entry
	cases := []struct {
		name   string
		append func(ctx context.Context, c int) error
	}{
		{"none", func(ctx context.Context, c int) error {
			_, err := log.Append(ctx, entry(c))
			return err
		}},
		{"in-transaction", func(ctx context.Context, c int) error {
			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			if _, err := log.AppendTx(ctx, tx, entry(c)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, channel); err != nil {
				return err
			}
			return tx.Commit()
		}},
		{"notify", func(ctx context.Context, c int) error {
			_, err := notifying.Append(ctx, entry(c))
			return err
		}},
	}
	for _, clients := range []int{1, o.clients} {
		rates := make([][]float64, len(cases))
		for round := range o.rounds {
			for k := range cases {
				i := (round + k) % len(cases)
				res, err := scratchlog.Write(ctx, clients, o.window, cases[i].append)
				if err != nil {
					return fmt.Errorf("%s, %d clients: %w", cases[i].name, clients, err)
				}
				rates[i] = append(rates[i], res.Rate)
			}
		}
		for i, cs := range cases {
			ratios := make([]float64, o.rounds)
			for r := range ratios {
				ratios[r] = rates[i][r] / rates[0][r]
			}
			fmt.Fprintf(w, "CASE clients=%d %-15s appends/s median %.0f  ÷ none: median %.2f (%.2f-%.2f)\n",
				clients, cs.name, median(rates[i]), median(ratios), slices.Min(ratios), slices.Max(ratios))
		}
	}
	fmt.Fprintf(w, "notifications received: %d\n", received.Load())
	return ctx.Err()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
