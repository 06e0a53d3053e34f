package eventlog

import (
	"context"
	"fmt"
	"iter"
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
		f := Filter{AfterSeq: afterSeq, Kinds: o.Kinds}
		where, args, err := f.where()
		if err != nil {
			yield(nil, err)
			return
		}
		if afterSeq == 0 {
			// Keep the cursor condition in the statement from the first page
			// on, so every page runs the same query.
			where, args = " WHERE seq > ?"+andRest(where), append([]any{int64(0)}, args...)
		}
		if o.Before != nil {
			cond, bargs, err := l.beforeCondition(*o.Before)
			if err != nil {
				yield(nil, err)
				return
			}
			where, args = where+" AND "+cond, append(args, bargs...)
		}
		query := l.db.Rebind(`SELECT ` + eventColumns + ` FROM event_log` + where + ` ORDER BY seq LIMIT ?`)
		limit := o.PageSize
		args = append(args, limit)
		for {
			page, truncated, err := readEvents(ctx, q, query, args, limit, o.MaxPageBytes)
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
			args[0] = page[len(page)-1].Seq
			// Ask for about as many events as the budget holds at the
			// average payload size seen, so large payloads are not read
			// only to be dropped.
			size := 0
			for _, ev := range page {
				size += len(ev.Payload)
			}
			limit = o.PageSize
			if avg := size / len(page); avg > 0 {
				limit = max(1, min(o.PageSize, o.MaxPageBytes/avg))
			}
			args[len(args)-1] = limit
		}
	}
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
