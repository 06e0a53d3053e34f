// Package projectiontest checks that a projection obeys canonlog's rebuild
// contract: whatever history of appends it went through — concurrent
// writers, batches, retried event ids, appends it refused, rebuilds in the
// middle — its live view equals a fresh derivation from the log.
//
//	func TestMyViewRebuilds(t *testing.T) {
//		db := eventlogtest.NewDB(t) // or a PostgreSQL database of your own
//		projectiontest.RequireRebuildEquivalent(t, db, myview.New(), func(r *rand.Rand) eventlog.Entry {
//			return eventlog.Entry{Kind: "order_placed", HostID: fmt.Sprint("shop-", r.IntN(3)), Payload: …}
//		}, nil)
//	}
package projectiontest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/projection"
)

// Generator returns a random entry. It may return entries the projection
// refuses; those appends must fail with a *projection.ApplyError and leave
// no trace.
type Generator func(r *rand.Rand) eventlog.Entry

// Options tunes RequireRebuildEquivalent. A nil *Options means defaults.
type Options struct {
	// Writers is the number of concurrent appenders. Defaults to 4.
	Writers int
	// Appends is the number of append calls per writer. Defaults to 50.
	Appends int
	// MaxBatch is the largest AppendBatch; 1 means single appends only.
	// Defaults to 8.
	MaxBatch int
	// Rebuilds is the number of rebuilds run while the writers append.
	// Defaults to 2.
	Rebuilds int
	// Seed seeds the random history; 0 picks one (logged on failure).
	Seed uint64
	// Refused reports whether an append error is the projection refusing
	// the entry on purpose (for example failed validation); such appends
	// must leave no trace. Other errors fail the test, except transient
	// ones (eventlog.Retryable), which are retried. Defaults to refusing
	// nothing but malformed entries and event id conflicts.
	Refused func(error) bool
}

// RequireRebuildEquivalent migrates db for p (core and p's own
// migrations), appends a random history built from gen with concurrent
// writers while rebuilding p now and then, and fails t unless, at the end,
// every acknowledged event is in the log exactly once, p's live view
// equals a fresh derivation (projection.Verify), and a final rebuild
// leaves the view unchanged. db must be otherwise unused by the test: the
// history goes into its event log.
func RequireRebuildEquivalent(t testing.TB, db *sqlx.DB, p projection.Projection, gen Generator, opts *Options) {
	t.Helper()
	o := Options{Writers: 4, Appends: 50, MaxBatch: 8, Rebuilds: 2}
	if opts != nil {
		if opts.Writers > 0 {
			o.Writers = opts.Writers
		}
		if opts.Appends > 0 {
			o.Appends = opts.Appends
		}
		if opts.MaxBatch > 0 {
			o.MaxBatch = opts.MaxBatch
		}
		if opts.Rebuilds >= 0 {
			o.Rebuilds = opts.Rebuilds
		}
		o.Seed = opts.Seed
		o.Refused = opts.Refused
	}
	if o.Refused == nil {
		o.Refused = func(error) bool { return false }
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64()
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("projectiontest (seed %d): "+format, append([]any{o.Seed}, args...)...)
	}

	ctx := context.Background()
	reg, err := projection.NewRegistry(p)
	if err != nil {
		fail("%v", err)
	}
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	if err != nil {
		fail("%v", err)
	}
	defer log.Close()
	if _, err := projection.Migrate(ctx, log, reg); err != nil {
		fail("migrate: %v", err)
	}

	var (
		mu       sync.Mutex
		acked    = map[int64]int{} // seq -> times acknowledged as new
		firstErr error
		wg       sync.WaitGroup
	)
	record := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	for w := range o.Writers {
		r := rand.New(rand.NewPCG(o.Seed, uint64(w)+1))
		wg.Go(func() {
			var sent []eventlog.Entry
			for i := range o.Appends {
				n := 1 + r.IntN(o.MaxBatch)
				batch := make([]eventlog.Entry, n)
				for j := range batch {
					if len(sent) > 0 && r.IntN(8) == 0 {
						batch[j] = sent[r.IntN(len(sent))] // a retry
						continue
					}
					e := gen(r)
					if e.EventID == "" && r.IntN(2) == 0 {
						e.EventID = fmt.Sprintf("projectiontest/%d/%d/%d", w, i, j)
					}
					batch[j] = e
				}
				var res []eventlog.Result
				var err error
				for attempt := 0; attempt < 10; attempt++ {
					if n == 1 {
						var one eventlog.Result
						one, err = log.Append(ctx, batch[0])
						res = []eventlog.Result{one}
					} else {
						res, err = log.AppendBatch(ctx, batch)
					}
					if !eventlog.Retryable(err) {
						break
					}
				}
				var ee *eventlog.EntryError
				switch {
				case err == nil:
				case errors.As(err, &ee), errors.Is(err, eventlog.ErrEventIDConflict), o.Refused(err):
					continue // refused as a whole: nothing may remain of it
				case err != nil:
					record(fmt.Errorf("writer %d append %d: %w", w, i, err))
					return
				}
				mu.Lock()
				for j, rr := range res {
					if !rr.Duplicate {
						acked[rr.Event.Seq]++
						if batch[j].EventID != "" {
							sent = append(sent, batch[j])
						}
					}
				}
				mu.Unlock()
			}
		})
	}
	for range o.Rebuilds {
		if _, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 1 + int(o.Seed%50)}); err != nil {
			record(fmt.Errorf("rebuild during appends: %w", err))
		}
	}
	wg.Wait()
	if firstErr != nil {
		fail("%v", firstErr)
	}

	// Nothing lost, nothing doubled.
	stored := map[int64]bool{}
	for ev, err := range log.Events(ctx, 0, nil) {
		if err != nil {
			fail("read log: %v", err)
		}
		stored[ev.Seq] = true
	}
	for seq, n := range acked {
		if n != 1 {
			fail("seq %d acknowledged %d times", seq, n)
		}
		if !stored[seq] {
			fail("acknowledged seq %d is not in the log", seq)
		}
	}
	if len(stored) != len(acked) {
		fail("log holds %d events, %d were acknowledged", len(stored), len(acked))
	}

	requireEqual := func(when string) {
		t.Helper()
		res, err := projection.Verify(ctx, log, reg, []string{p.Name()})
		if err != nil {
			fail("verify %s: %v", when, err)
		}
		if !res[0].Equal {
			fail("%s: live view differs from a fresh derivation: %d missing, %d extra rows, e.g. %v",
				when, res[0].Missing, res[0].Extra, res[0].Samples)
		}
	}
	requireEqual("after the history")
	if _, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Names: []string{p.Name()}}); err != nil {
		fail("final rebuild: %v", err)
	}
	requireEqual("after a final rebuild")
}
