package eventlog

import (
	"context"
	"fmt"
	"iter"
	"math"
	"strconv"

	"github.com/jmoiron/sqlx"
)

// Page sizes for streaming reads.
const (
	// DefaultPageSize is the number of events per page when
	// ReadOptions.PageSize is 0.
	DefaultPageSize = 2000
	// MaxPageSize is the largest ReadOptions.PageSize accepted.
	MaxPageSize = 100000
	// DefaultMaxPageBytes is the payload budget of a page when
	// ReadOptions.MaxPageBytes is 0: 16 MiB.
	DefaultMaxPageBytes = 16 << 20
)

// ReadOptions tunes a streaming read. A nil *ReadOptions means defaults.
type ReadOptions struct {
	// PageSize is the number of events fetched per round trip, and so the
	// most held in memory at once. Defaults to DefaultPageSize.
	PageSize int
	// Kinds, when set, keeps only events of these kinds.
	Kinds []Kind
	// PayloadContains, when set, keeps only events whose payload contains
	// one of these strings: see Filter.PayloadContains.
	PayloadContains []string
	// MaxPageBytes bounds the payload bytes of one page: a page ends early
	// once its payloads reach it (always holding at least one event), and
	// the next page's size is scaled to the payloads seen, so memory stays
	// bounded by bytes, not only by event count, when payloads are large.
	// Defaults to DefaultMaxPageBytes.
	MaxPageBytes int
	// Before, when set, keeps only the events that a Follower started from
	// *Before does not deliver: for a start position (PositionAtHead), the
	// events that had committed when it was taken. With it, reads outside
	// any transaction see the log as of that moment, page after page,
	// without holding a snapshot open: the log only grows, so an event
	// committed then stays readable, and one committed later (even with a
	// lower seq, on PostgreSQL) stays excluded. A Follower from the same
	// position then delivers exactly the rest, once each.
	Before *Position
}

// Pages streams every event with seq > afterSeq, in seq order, a page at a
// time: each page is one keyset query (seq > last seen), so memory stays
// bounded by the page size however long the log is, and no cursor or
// transaction is held between pages. Stop early by breaking out of the loop.
//
//	for page, err := range log.Pages(ctx, 0, nil) {
//		if err != nil { return err }
//		for _, ev := range page { … }
//	}
//
// A page belongs to the caller: it is not reused.
func (l *Log) Pages(ctx context.Context, afterSeq int64, opts *ReadOptions) iter.Seq2[[]Event, error] {
	return l.pages(ctx, l.db, afterSeq, opts)
}

// PagesTx is Pages inside the caller's transaction, so every page is read
// under the transaction's isolation and locks.
func (l *Log) PagesTx(ctx context.Context, tx *sqlx.Tx, afterSeq int64, opts *ReadOptions) iter.Seq2[[]Event, error] {
	return l.pages(ctx, tx, afterSeq, opts)
}

// Events streams every event with seq > afterSeq, in seq order, one at a
// time; it reads in pages like Pages.
func (l *Log) Events(ctx context.Context, afterSeq int64, opts *ReadOptions) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for page, err := range l.Pages(ctx, afterSeq, opts) {
			if err != nil {
				yield(Event{}, err)
				return
			}
			for _, ev := range page {
				if !yield(ev, nil) {
					return
				}
			}
		}
	}
}

func (l *Log) pages(ctx context.Context, q sqlx.QueryerContext, afterSeq int64, opts *ReadOptions) iter.Seq2[[]Event, error] {
	return func(yield func([]Event, error) bool) {
		var o ReadOptions
		if opts != nil {
			o = *opts
		}
		switch {
		case o.PageSize < 0 || o.PageSize > MaxPageSize:
			yield(nil, fmt.Errorf("eventlog: %w: PageSize is %d, must be between 0 (default %d) and %d",
				ErrInvalidFilter, o.PageSize, DefaultPageSize, MaxPageSize))
			return
		case o.PageSize == 0:
			o.PageSize = DefaultPageSize
		}
		switch {
		case o.MaxPageBytes < 0:
			yield(nil, fmt.Errorf("eventlog: %w: MaxPageBytes is %d, must not be negative", ErrInvalidFilter, o.MaxPageBytes))
			return
		case o.MaxPageBytes == 0:
			o.MaxPageBytes = DefaultMaxPageBytes
		}
		if err := (Filter{AfterSeq: afterSeq, Kinds: o.Kinds, PayloadContains: o.PayloadContains}).Validate(); err != nil {
			yield(nil, err)
			return
		}
		where, args, err := Filter{Kinds: o.Kinds, PayloadContains: o.PayloadContains}.where(l.backend)
		if err != nil {
			yield(nil, err)
			return
		}
		if o.Before != nil {
			cond, bargs, err := l.beforeCondition(*o.Before)
			if err != nil {
				yield(nil, err)
				return
			}
			where, args = andWhere(where, cond), append(args, bargs...)
		}
		if where == "" {
			l.pagesAll(ctx, q, afterSeq, o, yield)
			return
		}
		l.pagesInRanges(ctx, q, afterSeq, o, where, args, yield)
	}
}

// pagesAll is pages without a filter: a keyset walk of the primary key.
func (l *Log) pagesAll(ctx context.Context, q sqlx.QueryerContext, afterSeq int64, o ReadOptions, yield func([]Event, error) bool) {
	query := l.db.Rebind(`SELECT ` + eventColumns + ` FROM event_log WHERE seq > ? ORDER BY seq LIMIT ?`)
	limit := o.PageSize
	for {
		page, truncated, err := readEvents(ctx, q, query, []any{afterSeq, limit}, limit, o.MaxPageBytes)
		if err != nil {
			yield(nil, err)
			return
		}
		if len(page) == 0 {
			return
		}
		if !yield(page, nil) {
			return
		}
		if !truncated && len(page) < limit {
			return
		}
		afterSeq = page[len(page)-1].Seq
		limit = nextLimit(page, o)
	}
}

// pagesInRanges is pages with a filter (kinds, Before): see rangeReader.
func (l *Log) pagesInRanges(ctx context.Context, q sqlx.QueryerContext, afterSeq int64, o ReadOptions, where string, args []any, yield func([]Event, error) bool) {
	r := l.newRangeReader(q, afterSeq, where, args, o.PageSize, o.MaxPageBytes)
	limit := o.PageSize
	for {
		page, err := r.next(ctx, limit)
		if err != nil {
			yield(nil, err)
			return
		}
		if page == nil || !yield(page, nil) {
			return
		}
		limit = nextLimit(page, o)
	}
}

// rangeReader reads the events matching a filter after a cursor, in seq
// order, a page at a time. Each page reads the matching events of a
// bounded range of seqs after the cursor:
//
//	seq > cursor AND seq <= cursor + span AND <filter> ORDER BY seq LIMIT n
//
// The range is what keeps a read linear whatever the planner knows. With
// "seq > cursor" alone, a table without statistics (after a bulk load or
// a restore, with autovacuum behind or off) gets planned as a bitmap scan
// of the (kind, seq) index over every matching event after the cursor,
// sorted, on every page: quadratic in the log (a rebuild of 300,000
// events took three times as long as after ANALYZE). Bounded by the
// range, whichever plan the planner picks — the matching index, the
// primary key, a bitmap — reads no more than the range holds, so a whole
// read costs about one pass over the log, and the planner may still use
// the matching index to skip the other events. The span follows the
// density of matches: about one page of matches per range.
type rangeReader struct {
	l        *Log
	q        sqlx.QueryerContext
	query    string
	args     []any // cursor, range end, the filter's, limit
	after    int64
	head     int64 // the log's last seq as last read; -1 before the first
	span     int64
	maxBytes int
}

func (l *Log) newRangeReader(q sqlx.QueryerContext, afterSeq int64, where string, args []any, pageSize, maxBytes int) *rangeReader {
	qargs := append([]any{int64(0), int64(0)}, args...)
	return &rangeReader{
		l: l, q: q, after: afterSeq, head: -1, span: int64(pageSize), maxBytes: maxBytes,
		query: l.db.Rebind(`SELECT ` + eventColumns + ` FROM event_log WHERE seq > ? AND seq <= ?` + andRest(where) + ` ORDER BY seq LIMIT ?`),
		args:  append(qargs, 0),
	}
}

// next returns the next page of at most limit matching events (fewer
// when maxBytes cut it short), nil after the last one. A nil page comes
// once the ranges pass the log's last seq, read again when reached, so
// the events appended meanwhile are read too.
func (r *rangeReader) next(ctx context.Context, limit int) ([]Event, error) {
	for {
		if r.after >= r.head {
			if err := r.q.QueryRowxContext(ctx, r.l.q.lastSeq).Scan(&r.head); err != nil {
				return nil, fmt.Errorf("eventlog: read the last seq: %w", err)
			}
			if r.after >= r.head {
				return nil, nil
			}
		}
		end := r.after + min(r.span, math.MaxInt64-r.after)
		r.args[0], r.args[1], r.args[len(r.args)-1] = r.after, end, limit
		page, truncated, err := readEvents(ctx, r.q, r.query, r.args, limit, r.maxBytes)
		if err != nil {
			return nil, err
		}
		if truncated || len(page) == limit {
			// More matches in the range than a page: the next range
			// begins after the last one read, as long as this page took.
			last := page[len(page)-1].Seq
			r.span = max(int64(limit), (last-r.after)*5/4)
			r.after = last
			return page, nil
		}
		// The range is read to its end. Aim the next one at a page of
		// matches, growing at most sixteenfold at a time.
		r.span = min(r.span*16, max(int64(limit), r.span*int64(limit)/int64(max(len(page), 1))), maxSpan)
		r.after = end
		if len(page) > 0 {
			return page, nil
		}
	}
}

// maxSpan bounds the range of seqs a page of a filtered read covers:
// far more than any log holds, small enough to multiply safely.
const maxSpan = 1 << 40

// nextLimit is the next page's size: about as many events as the byte
// budget holds at the average payload size seen, so that large payloads
// are not read only to be dropped.
func nextLimit(page []Event, o ReadOptions) int {
	size := 0
	for _, ev := range page {
		size += len(ev.Payload)
	}
	if avg := size / len(page); avg > 0 {
		return max(1, min(o.PageSize, o.MaxPageBytes/avg))
	}
	return o.PageSize
}

// andWhere adds cond to " WHERE …" (or makes it one).
func andWhere(where, cond string) string {
	if where == "" {
		return " WHERE " + cond
	}
	return where + " AND " + cond
}

// andRest turns " WHERE a AND b" into " AND a AND b".
// beforeCondition renders ReadOptions.Before: the complement of what a
// Follower from p delivers. On PostgreSQL that is every event at or below
// the cursor in (tx_id, seq) order, and the events at or below the floor
// that the start snapshot sees (every one, for a position saved without a
// snapshot, as the follower then skips them all). On SQLite the cursor and
// the floor are seqs.
func (l *Log) beforeCondition(p Position) (string, []any, error) {
	if p.Seq < 0 || p.AfterSeq < 0 {
		return "", nil, fmt.Errorf("eventlog: %w: position %s has a negative seq", ErrInvalidFilter, p)
	}
	if l.backend != Postgres {
		if p.Snapshot != "" {
			return "", nil, fmt.Errorf("eventlog: %w: position %s holds a PostgreSQL snapshot, but this log is on %s: take the position from this log",
				ErrInvalidFilter, p, l.backend)
		}
		return "seq <= ?", []any{max(p.Seq, p.AfterSeq)}, nil
	}
	var snapshot any // NULL: the floor applies to every event
	if p.Snapshot != "" {
		if _, _, err := parseSnapshot(p.Snapshot); err != nil {
			return "", nil, fmt.Errorf("eventlog: %w: position %s: %w", ErrInvalidFilter, p, err)
		}
		snapshot = p.Snapshot
	}
	return "((tx_id, seq) <= (?::xid8, ?) OR (seq <= ? AND COALESCE(pg_visible_in_snapshot(tx_id, ?::pg_snapshot), TRUE)))",
		[]any{strconv.FormatUint(p.TxID, 10), p.Seq, p.AfterSeq, snapshot}, nil
}

func andRest(where string) string {
	if where == "" {
		return ""
	}
	return " AND " + where[len(" WHERE "):]
}
