// Package scratchlog gives the measurement commands under internal/cmd a
// log with probe_failures in a scratch database, and writers that append
// to it for a while.
//
//	sl, err := scratchlog.Open(ctx, url, "canonlog_mytool", os.Stdout)
//	if err != nil {
//		return err
//	}
//	defer sl.Close() // drops the scratch database
//	res, err := scratchlog.Write(ctx, 8, 10*time.Second, func(ctx context.Context, w int) error {
//		_, err := sl.Log.Append(ctx, scratchlog.Entry(w))
//		return err
//	})
package scratchlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/scratchdb"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// Log is a migrated log in a scratch database, probe_failures its
// projection (applied inline).
type Log struct {
	Log     *eventlog.Log
	DB      *sqlx.DB
	Backend eventlog.Backend
	URL     string // the scratch database's
	set     *scratchdb.Set
	w       io.Writer
}

// Open makes a scratch database next to the one baseURL names (a schema
// on PostgreSQL, a file in a new directory on SQLite), its name beginning
// with prefix, migrates it and opens a log on it. It prints the
// database's name to w.
func Open(ctx context.Context, baseURL, prefix string, w io.Writer) (_ *Log, err error) {
	set, err := scratchdb.New(baseURL, &scratchdb.Config{Prefix: prefix})
	if err != nil {
		return nil, err
	}
	sl := &Log{set: set, Backend: set.Dialect(), w: w}
	defer func() {
		if err != nil {
			err = errors.Join(err, sl.Close())
		}
	}()
	sdb, err := set.Create(ctx)
	if err != nil {
		return nil, err
	}
	sl.URL = sdb.URL
	fmt.Fprintf(w, "%s: scratch database %s\n", set.Dialect(), sdb.Name)
	if sl.DB, err = eventlog.OpenDB(ctx, sdb.URL); err != nil {
		return nil, err
	}
	reg := projection.Must(projection.NewRegistry(probefailures.New()))
	if sl.Log, err = eventlog.New(sl.DB, &eventlog.Config{Hook: reg}); err != nil {
		return nil, err
	}
	if _, err := projection.Migrate(ctx, sl.Log, reg); err != nil {
		return nil, err
	}
	return sl, nil
}

// Close closes the log and its pool and drops the scratch database; it
// says so on Open's writer.
func (sl *Log) Close() error {
	var err error
	if sl.Log != nil {
		err = errors.Join(err, sl.Log.Close())
	}
	if sl.DB != nil {
		err = errors.Join(err, sl.DB.Close())
	}
	if err = errors.Join(err, sl.set.Close()); err == nil {
		fmt.Fprintln(sl.w, "removed the scratch database")
	}
	return err
}

// Entry is writer w's next event: an agent event of host-<w> holding a
// passing probe result, which derives no probe_failures row.
func Entry(w int) eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: fmt.Sprint("host-", w), RolloutID: "r1", Payload: payload}
}

var payload = json.RawMessage(`{"type":"ProbeResult","mode":"enforce","status":"pass","probe_name":"ssh-hardening",` +
	`"sub_results":[{"control_id":"CIS-5.2.1","framework":"cis","status":"pass"}]}`)

// Result is what Write measured.
type Result struct {
	// Latencies holds every call's duration, in the order they ended.
	Latencies []time.Duration
	// Rate is calls per second over the window.
	Rate float64
}

// Write runs writers goroutines that call fn(ctx, w) one call after the
// other until d has passed, and returns what they measured. The first
// error stops its writer and is returned once all have stopped.
func Write(ctx context.Context, writers int, d time.Duration, fn func(ctx context.Context, w int) error) (Result, error) {
	var (
		mu   sync.Mutex
		res  Result
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for w := range writers {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				began := time.Now()
				err := fn(ctx, w)
				took := time.Since(began)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				res.Latencies = append(res.Latencies, took)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if len(res.Latencies) == 0 {
		return Result{}, errors.New("no call ended in the window")
	}
	res.Rate = float64(len(res.Latencies)) / time.Since(start).Seconds()
	return res, nil
}
