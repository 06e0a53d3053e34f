package projection

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"iter"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
)

// RebuildOptions tunes Rebuild. A nil *RebuildOptions rebuilds every
// registered projection with the defaults.
type RebuildOptions struct {
	// Names selects the projections to rebuild. Empty means all registered
	// ones. An unknown name fails the call before anything is rebuilt.
	Names []string
	// StaleOnly skips the selected projections that are not stale.
	StaleOnly bool
	// BatchSize is the number of events read per page and handed to
	// ApplyBatch at once. Defaults to eventlog.DefaultPageSize.
	BatchSize int
	// Progress, when set, is called as each phase begins and after each
	// batch, from the goroutine running Rebuild.
	Progress func(Progress)
	// Offline rebuilds each projection in one transaction that holds the
	// projection's exclusive lock for the whole replay: appends of its
	// kinds wait for it to end. By default a projection that lists its
	// tables (Tabler) by unqualified names is rebuilt online: beside the
	// live view, while appends go on, swapped in at the end under the
	// lock held only for the events that arrived last (docs/projections.md,
	// "Online rebuilds"). The others are always rebuilt offline.
	Offline bool
	// Gentle makes an online rebuild on PostgreSQL read the next page of
	// the log only once the last is written to the copy, instead of
	// reading and decoding it meanwhile. The rebuild then keeps about
	// one processor core busy instead of two, and the appends going on
	// beside it slow down less, at the cost of a slower rebuild: in
	// rebuild-load on two cores, append p99 rose 1.6x-2.1x instead of
	// 2.4x-2.8x, and the rebuild took 1.6-1.7 times as long
	// (docs/performance.md, "Gentle online rebuilds"). SQLite's online
	// rebuild works that way anyway. Gentle with Offline is an error.
	Gentle bool
}

// Progress reports how far a rebuild has come.
type Progress struct {
	Projection string
	Phase      Phase
	Round      int   // the catch-up round, from 1, in PhaseCatchUp and PhaseSwap
	Done       int64 // events replayed so far
	Total      int64 // events the projection reads (its kinds; with PayloadMarker, those holding a marker) when the rebuild started (or Done, once more)
}

// RebuildResult summarizes one projection's rebuild.
type RebuildResult struct {
	Name     string
	Version  int
	Events   int64 // events replayed: those the projection reads (its kinds, its payload markers)
	Seq      int64 // the log's last seq the rebuild covered
	Rows     int64 // rows in the projection's tables afterwards; -1 when it does not implement Tabler
	Duration time.Duration

	// Online reports an online rebuild; OfflineReason says why a
	// projection was rebuilt offline although Offline was not set.
	Online        bool
	OfflineReason string
	// CatchUpRounds and CatchUpEvents count the online rebuild's
	// catch-up; SwapEvents the events applied in the swap, under the lock.
	CatchUpRounds int
	CatchUpEvents int64
	SwapEvents    int64
	// LockHeld is how long the projection's exclusive lock was held —
	// appends of its kinds wait that long at most: the swap's transaction
	// online, the whole rebuild offline. On SQLite it is the write lock.
	LockHeld time.Duration
	// UncheckedKeys reports an online rebuild on PostgreSQL that wrote
	// the copy without the server checking its foreign keys row by row:
	// its role may set session_replication_role (docs/projections.md,
	// "Online rebuilds"). The keys hold by construction and stay valid.
	UncheckedKeys bool
	// Gentle reports an online rebuild that read each page of the log
	// only once the last was written (RebuildOptions.Gentle on
	// PostgreSQL; every online rebuild on SQLite).
	Gentle bool
}

// Rebuild re-derives projections from the log. Each projection is rebuilt in
// one transaction of its own: take its exclusive lock, Reset, replay every
// event of its kinds from seq 1 in seq order (streamed in pages, so memory
// stays bounded), record the checkpoint, commit. A rebuild that fails or is
// cancelled rolls back and leaves the previous view and checkpoint as they
// were. Appends arriving meanwhile wait for the lock and are then applied
// to the rebuilt view, exactly once; a second rebuild of the same
// projection waits for the first and then rebuilds again. Projections are
// rebuilt in name order; the first failure stops the call and the results
// so far are returned with the error.
func Rebuild(ctx context.Context, log *eventlog.Log, reg *Registry, opts *RebuildOptions) ([]RebuildResult, error) {
	var o RebuildOptions
	if opts != nil {
		o = *opts
	}
	if o.BatchSize < 0 || o.BatchSize > eventlog.MaxPageSize {
		return nil, fmt.Errorf("projection: rebuild: BatchSize is %d, must be between 0 (default %d) and %d",
			o.BatchSize, eventlog.DefaultPageSize, eventlog.MaxPageSize)
	}
	if o.Gentle && o.Offline {
		return nil, errors.New("projection: rebuild: Gentle applies to online rebuilds, and Offline asks for an offline one")
	}
	entries, err := reg.selectEntries(o.Names)
	if err != nil {
		return nil, err
	}
	if o.StaleOnly {
		sts, err := ReadStatus(ctx, log, reg)
		if err != nil {
			return nil, err
		}
		entries = slices.DeleteFunc(entries, func(e *registered) bool {
			i := slices.IndexFunc(sts, func(s Status) bool { return s.Name == e.name })
			return i >= 0 && !sts[i].Stale
		})
	}
	d, err := eventlog.BackendOf(log.DB())
	if err != nil {
		return nil, err
	}
	tel, err := newOpTelemetry(log)
	if err != nil {
		return nil, fmt.Errorf("projection: rebuild: telemetry: %w", err)
	}
	stop, err := tel.observeRebuilds()
	if err != nil {
		return nil, fmt.Errorf("projection: rebuild: telemetry: %w", err)
	}
	defer stop()
	o.Progress = tel.progress(o.Progress)
	var results []RebuildResult
	for _, e := range entries {
		ectx, end := tel.rebuilding(ctx, e.name)
		res, err := rebuildOne(ectx, log, d, e, o)
		end(res, err)
		if err != nil {
			return results, err
		}
		results = append(results, res)
	}
	return results, nil
}

func rebuildOne(ctx context.Context, log *eventlog.Log, d eventlog.Backend, e *registered, o RebuildOptions) (RebuildResult, error) {
	if e.async {
		return rebuildAsync(ctx, log, d, e, o)
	}
	start := time.Now()
	var reason string
	if !o.Offline {
		var tables []string
		if tables, reason = onlineRebuildBlocker(log, e); reason == "" {
			res, err := rebuildOnline(ctx, log, d, e, tables, o)
			var off *offlineError
			switch {
			case errors.As(err, &off):
				reason = off.reason
			case err != nil:
				if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
					// A cancelled statement can cost the rebuild its
					// connection, and the error then only says that.
					err = fmt.Errorf("%w (%w)", cerr, err)
				} else if cerr == nil && errors.Is(err, sql.ErrConnDone) {
					// The server ended the rebuild's own session: a lost
					// connection, retryable as any other (eventlog.Retryable).
					err = fmt.Errorf("%w: %w", driver.ErrBadConn, err)
				}
				return RebuildResult{}, fmt.Errorf("projection: rebuild %s online: %w", e.name, err)
			default:
				if res.Rows, err = countRows(ctx, log.DB(), tables); err != nil {
					return RebuildResult{}, fmt.Errorf("projection: rebuild %s: %w", e.name, err)
				}
				res.Duration = time.Since(start)
				return res, nil
			}
		}
	}
	res, err := rebuildOffline(ctx, log, d, e, o)
	res.OfflineReason = reason
	return res, err
}

// rebuildOffline rebuilds e in one transaction holding its exclusive lock.
func rebuildOffline(ctx context.Context, log *eventlog.Log, d eventlog.Backend, e *registered, o RebuildOptions) (RebuildResult, error) {
	start := time.Now()
	res := RebuildResult{Name: e.name, Version: e.p.Version(), Rows: -1}
	// The total, for progress only, is counted before the lock is taken,
	// so that appends do not wait for the count.
	var total int64
	if o.Progress != nil {
		var err error
		if total, err = log.Count(ctx, e.filter()); err != nil {
			return RebuildResult{}, fmt.Errorf("projection: rebuild %s: %w", e.name, err)
		}
	}
	err := dbutil.WithTx(ctx, log.DB(), nil, func(tx *sqlx.Tx) error {
		if err := lockExclusive(ctx, tx, d, e.name); err != nil {
			return err
		}
		locked := time.Now()
		defer func() { res.LockHeld = time.Since(locked) }()
		if err := e.p.Reset(ctx, tx); err != nil {
			return fmt.Errorf("projection %s: reset: %w", e.name, err)
		}
		events, seq, err := replay(ctx, log, tx, e, o.BatchSize, total, o.Progress)
		if err != nil {
			return err
		}
		res.Events, res.Seq = events, seq
		if t, ok := e.p.(Tabler); ok {
			if res.Rows, err = countRows(ctx, tx, t.Tables()); err != nil {
				return fmt.Errorf("projection %s: %w", e.name, err)
			}
		}
		return writeCheckpoint(ctx, tx, e, checkpoint{Version: res.Version, Seq: seq, At: log.Clock().Now()})
	})
	if err != nil {
		return RebuildResult{}, fmt.Errorf("projection: rebuild %s: %w", e.name, err)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// replay applies every event e reads (its kinds, its payload markers) to
// e inside tx, in seq order, in batches of batchSize, reporting progress
// against total. It must run after e's exclusive lock is held, and reads
// each page with a fresh statement so that on PostgreSQL (READ COMMITTED)
// it sees every append that committed before the lock was granted. It
// returns the events replayed and the log's last seq covered.
func replay(ctx context.Context, log *eventlog.Log, tx *sqlx.Tx, e *registered, batchSize int, total int64, progress func(Progress)) (int64, int64, error) {
	return replayOnly(ctx, log, tx, e, batchSize, total, progress, nil)
}

// replayOnly is replay of the events keep keeps (every event when keep is
// nil).
func replayOnly(ctx context.Context, log *eventlog.Log, tx *sqlx.Tx, e *registered, batchSize int, total int64, progress func(Progress), keep func(seq int64) bool) (int64, int64, error) {
	last, err := log.LastSeqTx(ctx, tx)
	if err != nil {
		return 0, 0, fmt.Errorf("projection %s: %w", e.name, err)
	}
	if progress != nil {
		progress(Progress{Projection: e.name, Phase: PhaseReplay, Total: total})
	}
	var done int64
	advance := func(page []eventlog.Event) error {
		done += int64(len(page))
		last = max(last, page[len(page)-1].Seq)
		if progress != nil {
			progress(Progress{Projection: e.name, Phase: PhaseReplay, Done: done, Total: max(total, done)})
		}
		return ctx.Err()
	}
	pages := log.PagesTx(ctx, tx, 0, e.readOptions(batchSize))
	if keep != nil {
		pages = keepOnly(pages, keep)
	}
	if pl, ok := e.p.(Pipeliner); ok {
		if err := replayPipelined(ctx, tx, e, pl, pages, advance); err != nil {
			return 0, 0, err
		}
		return done, last, nil
	}
	for page, err := range pages {
		if err != nil {
			return 0, 0, fmt.Errorf("projection %s: read log: %w", e.name, err)
		}
		if err := e.apply(ctx, tx, page); err != nil {
			return 0, 0, err
		}
		if err := advance(page); err != nil {
			return 0, 0, err
		}
	}
	return done, last, nil
}

func countRows(ctx context.Context, q sqlx.QueryerContext, tables []string) (int64, error) {
	var total int64
	for _, t := range tables {
		var n int64
		if err := q.QueryRowxContext(ctx, `SELECT COUNT(*) FROM `+quoteIdent(t)).Scan(&n); err != nil {
			return 0, fmt.Errorf("count rows of %s: %w", t, err)
		}
		total += n
	}
	return total, nil
}

// replayPipelined prepares page k+1 on another goroutine while page k is
// written on tx. Reads and writes stay on tx, one at a time; at most two
// pages are in memory.
func replayPipelined(ctx context.Context, tx *sqlx.Tx, e *registered, pl Pipeliner, pages iter.Seq2[[]eventlog.Event, error], advance func([]eventlog.Event) error) error {
	type prepared struct {
		b   PreparedBatch
		err error
	}
	type pending struct {
		page []eventlog.Event
		done chan prepared
	}
	write := func(p *pending) error {
		r := <-p.done
		err := r.err
		if err == nil && r.b != nil {
			err = r.b.WriteTx(ctx, tx)
		}
		if err != nil {
			return e.applyError(p.page, 0, err)
		}
		return advance(p.page)
	}
	var prev *pending
	for page, err := range pages {
		if err != nil {
			return fmt.Errorf("projection %s: read log: %w", e.name, err)
		}
		cur := &pending{page: page, done: make(chan prepared, 1)}
		go func() {
			b, err := pl.PrepareBatch(cur.page)
			cur.done <- prepared{b, err}
		}()
		if prev != nil {
			if err := write(prev); err != nil {
				<-cur.done // let the goroutine finish before returning
				return err
			}
		}
		prev = cur
	}
	if prev != nil {
		return write(prev)
	}
	return nil
}

// keepOnly yields the events of pages that keep keeps, skipping pages
// left empty.
func keepOnly(pages iter.Seq2[[]eventlog.Event, error], keep func(seq int64) bool) iter.Seq2[[]eventlog.Event, error] {
	return func(yield func([]eventlog.Event, error) bool) {
		for page, err := range pages {
			if err == nil {
				page = slices.DeleteFunc(slices.Clone(page), func(ev eventlog.Event) bool { return !keep(ev.Seq) })
				if len(page) == 0 {
					continue
				}
			}
			if !yield(page, err) {
				return
			}
		}
	}
}
