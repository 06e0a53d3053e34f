// Package projectiontest checks that a projection obeys canonlog's rebuild
// contract: whatever history of appends it went through — concurrent
// writers, batches, retried event ids, appends it refused, online rebuilds
// in the middle of it all, an append that commits late — its live view
// equals a fresh derivation from the log.
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
	"slices"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

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
	// Writers that are done append again, one entry at a time, when a
	// rebuild still running needs appends to happen in one of its phases.
	Appends int
	// MaxBatch is the largest AppendBatch; 1 means single appends only.
	// Defaults to 8.
	MaxBatch int
	// Rebuilds is the number of rebuilds run while the writers append.
	// Defaults to 2; negative means none.
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
//
// The rebuilds run as Rebuild runs them by default: online when p lists
// its tables (projection.Tabler), beside the live view, swapped in at the
// end. The writers are at work through every phase: once the build has
// begun and again once the catch-up has, the rebuild waits (in its
// Progress callback) for an append to complete, so that events commit
// after the build's start and during the catch-up, and appends wait for
// the swap. Writers that have made their Appends append once more for
// that.
//
// On PostgreSQL the last online rebuild also gets a late append, in place
// of the append during its build: once the build has begun, and before it
// reads the log, a transaction appends an entry of p's kinds and stays
// open while another entry of p's kinds commits, with a higher seq; the
// open one commits when the catch-up begins. Its event had not committed
// when the build read the log, and its seq is below events that had: the
// catch-up (or the swap) must apply it, exactly once. The late append is
// skipped when db's pool cannot lend Writers+4 connections at once, or
// when gen yields no entry of p's kinds that p accepts.
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
		if opts.Rebuilds != 0 {
			o.Rebuilds = max(opts.Rebuilds, 0)
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
	backend, err := eventlog.BackendOf(db)
	if err != nil {
		fail("%v", err)
	}
	// refused reports an append error that leaves nothing behind.
	refused := func(err error) bool {
		var ee *eventlog.EntryError
		return errors.As(err, &ee) || errors.Is(err, eventlog.ErrEventIDConflict) || o.Refused(err)
	}

	var (
		mu        sync.Mutex
		cond      = sync.NewCond(&mu)
		acked     = map[int64]int{} // seq -> times acknowledged as new
		firstErr  error
		completed int // append calls that returned, whatever their outcome
		running   = o.Writers
		wg        sync.WaitGroup
		stop      = make(chan struct{})
		// more asks a writer that made its Appends for one more.
		more = make(chan struct{}, o.Writers)
		// paused holds the writers back between their appends.
		paused sync.RWMutex
	)
	record := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		cond.Broadcast()
		mu.Unlock()
	}
	ack := func(results []eventlog.Result) {
		mu.Lock()
		for _, r := range results {
			if !r.Duplicate {
				acked[r.Event.Seq]++
			}
		}
		mu.Unlock()
	}
	for w := range o.Writers {
		r := rand.New(rand.NewPCG(o.Seed, uint64(w)+1))
		wg.Go(func() {
			defer func() {
				mu.Lock()
				running--
				cond.Broadcast()
				mu.Unlock()
			}()
			var sent []eventlog.Entry
			for i := 0; ; i++ {
				n := 1 + r.IntN(o.MaxBatch)
				if i >= o.Appends {
					select {
					case <-stop:
						return
					case <-more:
						n = 1
					}
				}
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
				paused.RLock()
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
				paused.RUnlock()
				switch {
				case err == nil:
					ack(res)
					for j, rr := range res {
						if !rr.Duplicate && batch[j].EventID != "" {
							sent = append(sent, batch[j])
						}
					}
				case refused(err):
					// Refused as a whole: nothing may remain of it.
				default:
					record(fmt.Errorf("writer %d append %d: %w", w, i, err))
					return
				}
				mu.Lock()
				completed++
				cond.Broadcast()
				mu.Unlock()
			}
		})
	}
	// nudge returns once an append call that began after it was called
	// has returned (or no writer is left): asking a writer past its
	// Appends for one more, should none be busy.
	nudge := func() {
		mu.Lock()
		defer mu.Unlock()
		want := completed + 1
		select {
		case more <- struct{}{}:
		default:
		}
		for completed < want && running > 0 && firstErr == nil {
			cond.Wait()
		}
	}

	lr := rand.New(rand.NewPCG(o.Seed, 0))
	ofKinds := func(e eventlog.Entry) bool {
		kf, ok := p.(projection.KindFilter)
		return !ok || slices.Contains(kf.Kinds(), e.Kind)
	}
	// written reads how many rows the connection of tx has written to p's
	// tables (PostgreSQL; -1 when p does not list them), by its statistics
	// not yet reported: those of tx and of recent transactions, reported
	// between transactions, never in the middle of one. Read before and
	// after an append, it tells whether the event changed the view: an
	// event whose loss a verify sees.
	written := func(tx *sqlx.Tx) int64 {
		tb, ok := p.(projection.Tabler)
		if !ok {
			return -1
		}
		var n int64
		if err := tx.GetContext(ctx, &n, `SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables
WHERE schemaname = current_schema() AND relname = ANY($1)`, pq.Array(tb.Tables())); err != nil {
			return -1
		}
		return n
	}
	// appendLate opens a transaction that appends an entry of p's kinds
	// (one that changes the view, if gen offers one soon), then commits
	// another in a transaction of its own, and returns the open one (nil
	// when gen offers no entry to do it with). The writers wait
	// meanwhile, so that only the first can hold a lock the second needs:
	// the second then gives up waiting (lock_timeout) and tries another
	// entry. It gets the higher seq.
	appendLate := func() (*sqlx.Tx, int64) {
		paused.Lock()
		defer paused.Unlock()
		const tries = 50
		try := func(late bool) (*sqlx.Tx, []eventlog.Result) {
			for i := range tries {
				e := gen(lr)
				if !ofKinds(e) {
					continue
				}
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					record(fmt.Errorf("late append: %w", err))
					return nil, nil
				}
				if !late {
					if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '100ms'`); err != nil {
						_ = tx.Rollback()
						record(fmt.Errorf("late append: %w", err))
						return nil, nil
					}
				}
				before := written(tx)
				res, err := log.AppendTx(ctx, tx, e)
				if err == nil && !res[0].Duplicate && (!late || i >= tries-10 || before < 0 || written(tx) > before) {
					return tx, res
				}
				_ = tx.Rollback()
				if err != nil && late && !refused(err) && !eventlog.Retryable(err) {
					record(fmt.Errorf("late append: %w", err))
					return nil, nil
				}
			}
			return nil, nil
		}
		late, res := try(true)
		if late == nil {
			return nil, 0
		}
		if tx, after := try(false); tx != nil {
			if err := tx.Commit(); err != nil {
				record(fmt.Errorf("append after the late one: %w", err))
			} else {
				ack(after)
			}
		}
		return late, res[0].Event.Seq
	}
	roomForLate := func() bool {
		n := db.Stats().MaxOpenConnections
		return n == 0 || n >= o.Writers+4
	}

	for i := range o.Rebuilds {
		// The last rebuild gets the late append; the others an append
		// during the build instead (writers may wait for the late one).
		// Only an online rebuild reports PhaseBuild: an offline one never
		// finds a transaction left open for it.
		withLate := i == o.Rebuilds-1 && backend == eventlog.Postgres && roomForLate()
		var (
			late            *sqlx.Tx
			lateSeq         int64
			built, caughtUp bool
		)
		progress := func(pr projection.Progress) {
			switch {
			case pr.Phase == projection.PhaseBuild && !built:
				built = true
				if withLate {
					// Writers may wait for the late transaction's rows:
					// no nudge until it has committed.
					late, lateSeq = appendLate()
					if late != nil {
						return
					}
				}
				nudge()
			case pr.Phase == projection.PhaseCatchUp && !caughtUp:
				caughtUp = true
				if late != nil {
					err := late.Commit()
					late = nil
					if err != nil {
						record(fmt.Errorf("commit the late append: %w", err))
					} else {
						ack([]eventlog.Result{{Event: eventlog.Event{Seq: lateSeq}}})
					}
				}
				nudge()
			}
		}
		opts := &projection.RebuildOptions{BatchSize: 1 + int(o.Seed%50), Progress: progress}
		_, err := projection.Rebuild(ctx, log, reg, opts)
		if late != nil {
			// Failed before its catch-up: the append held open goes.
			_ = late.Rollback()
			late = nil
		}
		for eventlog.Retryable(err) {
			// A rebuild is atomic: retried like an append.
			built, caughtUp, withLate = false, false, false
			_, err = projection.Rebuild(ctx, log, reg, opts)
		}
		if err != nil {
			record(fmt.Errorf("rebuild during appends: %w", err))
			break
		}
	}
	close(stop)
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
