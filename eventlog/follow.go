package eventlog

import (
	"context"
	"fmt"
	"iter"
	"strconv"
	"time"

	"github.com/canonlog/canonlog/internal/dialect"
)

// DefaultPollInterval is how long a Follower waits between polls once it
// has caught up, when FollowOptions.PollInterval is 0.
const DefaultPollInterval = 500 * time.Millisecond

// Position is a follower's cursor in the log: everything up to it has been
// delivered (or skipped by the filter), and following resumes after it.
// Persist it (its fields are plain numbers, JSON-friendly) to resume a
// follower where it stopped: each event is then delivered exactly once
// across restarts, as long as the position is saved after the events it
// covers are handled.
//
// The zero Position starts at the beginning of the log. To start after a
// seq, use Log.PositionAfterSeq: a seq alone is not a cursor on
// PostgreSQL (see Follower).
type Position struct {
	// TxID is the PostgreSQL transaction id (xid8) the cursor is in; events
	// are followed in (TxID, Seq) order. Always 0 on SQLite, where commit
	// order is seq order.
	TxID uint64 `json:"tx_id"`
	// Seq is the seq the cursor is at within TxID (on SQLite: the last seq
	// delivered or skipped).
	Seq int64 `json:"seq"`
	// AfterSeq additionally skips every event with seq <= AfterSeq. Set by
	// PositionAfterSeq; kept as the cursor moves, so that a resumed
	// follower keeps the same promise.
	AfterSeq int64 `json:"after_seq,omitempty"`
}

// String renders the position for logs: "tx/seq", with "+after" when
// AfterSeq is set.
func (p Position) String() string {
	s := fmt.Sprintf("%d/%d", p.TxID, p.Seq)
	if p.AfterSeq > 0 {
		s += fmt.Sprintf("+after%d", p.AfterSeq)
	}
	return s
}

// FollowOptions tunes a Follower. A nil *FollowOptions means defaults.
type FollowOptions struct {
	// Filter keeps only matching events: HostID, RolloutID, Kinds, Since
	// and Until work as in Query. AfterSeq and Limit must be zero: the
	// Position says where to start (see PositionAfterSeq) and a follower
	// has no end. Defaults to every event.
	Filter Filter
	// PageSize is the most events read per poll. Defaults to
	// DefaultPageSize; at most MaxPageSize.
	PageSize int
	// PollInterval is the wait between polls once the follower has caught
	// up. Defaults to DefaultPollInterval. A full page is followed by the
	// next poll at once.
	PollInterval time.Duration
}

// Follower reads the log in commit order, without gaps, from a Position
// on: a consumer that must see every event exactly once (to feed another
// system, to drive work that needs the outside world) follows the log
// after commit instead of running inside the append.
//
// Reading "seq > last seen" is not enough on PostgreSQL: a seq is assigned
// when the row is inserted, not when its transaction commits, so seq 10
// can commit after seq 11 and a reader that already moved past 11 never
// sees 10. A Follower therefore orders events by (tx_id, seq) — tx_id is
// the appending transaction's id, stored in every row — and only reads
// events of transactions older than the oldest transaction still running
// (pg_snapshot_xmin(pg_current_snapshot())). Every such transaction has
// finished, so no event can appear later below the cursor. The price: an
// event becomes visible to followers only once every transaction that
// started before it has ended, so a long-running transaction anywhere on
// the PostgreSQL server (in any database) holds followers back for its
// duration. On SQLite there is one writer at a time, so seq order is
// commit order and the cursor is the seq.
//
// A Follower is not safe for concurrent use; run one per consumer.
type Follower struct {
	log      *Log
	pos      Position
	pageSize int
	interval time.Duration

	// Rendered once: the filter's conditions and their arguments.
	filterSQL  string
	filterArgs []any
	pageQuery  string
}

// NewFollower returns a Follower that delivers the events after from,
// filtered by opts.
func (l *Log) NewFollower(from Position, opts *FollowOptions) (*Follower, error) {
	var o FollowOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case o.Filter.AfterSeq != 0 || o.Filter.Limit != 0:
		return nil, fmt.Errorf("eventlog: follow: %w: Filter.AfterSeq and Filter.Limit must be 0; start from Log.PositionAfterSeq instead", ErrInvalidFilter)
	case o.PageSize < 0 || o.PageSize > MaxPageSize:
		return nil, fmt.Errorf("eventlog: follow: %w: PageSize is %d, must be between 0 (default %d) and %d",
			ErrInvalidFilter, o.PageSize, DefaultPageSize, MaxPageSize)
	case o.PollInterval < 0:
		return nil, fmt.Errorf("eventlog: follow: %w: PollInterval is %s, must not be negative (0 means %s)",
			ErrInvalidFilter, o.PollInterval, DefaultPollInterval)
	case from.Seq < 0 || from.AfterSeq < 0:
		return nil, fmt.Errorf("eventlog: follow: %w: position %s has a negative seq", ErrInvalidFilter, from)
	}
	if o.PageSize == 0 {
		o.PageSize = DefaultPageSize
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	where, args, err := o.Filter.where()
	if err != nil {
		return nil, err
	}
	f := &Follower{log: l, pos: from, pageSize: o.PageSize, interval: o.PollInterval,
		filterSQL: andRest(where), filterArgs: args}
	if l.dialect == dialect.Postgres {
		// The (tx_id, seq) index serves the row comparison and the order.
		// The text copy of tx_id needs a name of its own: ORDER BY tx_id
		// would otherwise sort by the output column, as text.
		f.pageQuery = l.db.Rebind(`SELECT tx_id::text AS tx_text, ` + eventColumns + ` FROM event_log
WHERE (tx_id, seq) > (?::xid8, ?) AND tx_id < ?::xid8 AND seq > ?` + f.filterSQL + `
ORDER BY tx_id, seq LIMIT ?`)
	} else {
		f.pageQuery = l.db.Rebind(`SELECT '0', ` + eventColumns + ` FROM event_log
WHERE seq > ? AND seq <= ?` + f.filterSQL + `
ORDER BY seq LIMIT ?`)
	}
	return f, nil
}

// Follow is NewFollower(from, opts).Events(ctx): it yields every event
// after from, in commit order, and keeps polling for new ones until ctx is
// done. A bad option is yielded as the only error. Use a Follower directly
// to read its Position as you go.
func (l *Log) Follow(ctx context.Context, from Position, opts *FollowOptions) iter.Seq2[Event, error] {
	f, err := l.NewFollower(from, opts)
	if err != nil {
		return func(yield func(Event, error) bool) { yield(Event{}, err) }
	}
	return f.Events(ctx)
}

// Position returns the cursor: after the last event yielded by Events (or
// returned by Poll), or further when the follower has learnt that nothing
// can appear before a later point. Save it to resume with NewFollower.
func (f *Follower) Position() Position { return f.pos }

// followPage is one poll's result.
type followPage struct {
	events []Event
	txIDs  []uint64
	// caughtUp reports a short page: every event below the horizon has
	// been read, so the cursor may jump to next.
	caughtUp bool
	next     Position
}

// Poll reads the events that became readable after the cursor, at most
// PageSize of them, and moves the cursor past them. It returns an empty
// slice when there is nothing new (yet). Poll never waits; Events loops
// over it.
func (f *Follower) Poll(ctx context.Context) ([]Event, error) {
	p, err := f.poll(ctx)
	if err != nil {
		return nil, err
	}
	if n := len(p.events); n > 0 {
		f.pos.TxID, f.pos.Seq = p.txIDs[n-1], p.events[n-1].Seq
	}
	if p.caughtUp {
		f.pos = p.next
	}
	return p.events, nil
}

// Events yields every event after the cursor in commit order, polling
// every PollInterval once caught up, until ctx is done (the iteration then
// simply ends: check ctx.Err()) or the loop breaks. A database error is
// yielded once and ends the iteration; Position then tells where to
// resume. Events starts no goroutine: everything runs in the caller's
// loop.
func (f *Follower) Events(ctx context.Context) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		var timer *time.Timer
		defer func() {
			if timer != nil {
				timer.Stop()
			}
		}()
		for {
			p, err := f.poll(ctx)
			if err != nil {
				if ctx.Err() == nil {
					yield(Event{}, err)
				}
				return
			}
			for i, ev := range p.events {
				f.pos.TxID, f.pos.Seq = p.txIDs[i], ev.Seq
				if !yield(ev, nil) {
					return
				}
			}
			if !p.caughtUp {
				if ctx.Err() != nil {
					return
				}
				continue // a full page: more is readable now
			}
			f.pos = p.next
			if timer == nil {
				timer = time.NewTimer(f.interval)
			} else {
				timer.Reset(f.interval)
			}
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
	}
}

func (f *Follower) poll(ctx context.Context) (followPage, error) {
	var p followPage
	if err := ctx.Err(); err != nil {
		return p, err
	}
	l := f.log
	pos := f.pos
	var args []any
	if l.dialect == dialect.Postgres {
		// The horizon is read first, in its own statement: every
		// transaction below it had finished by then, so the page query,
		// which starts later, sees all of their events.
		var horizon string
		if err := l.db.QueryRowxContext(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&horizon); err != nil {
			return p, fmt.Errorf("eventlog: follow: read the horizon: %w", err)
		}
		h, err := strconv.ParseUint(horizon, 10, 64)
		if err != nil {
			return p, fmt.Errorf("eventlog: follow: horizon %q: %w", horizon, err)
		}
		args = append(args, strconv.FormatUint(pos.TxID, 10), pos.Seq, horizon, pos.AfterSeq)
		// Everything below h is read once the page comes back short;
		// (h, 0) sorts before every event of transaction h, since seqs
		// start at 1.
		p.next = Position{TxID: h, Seq: 0, AfterSeq: pos.AfterSeq}
	} else {
		// One writer at a time: every seq up to the current maximum is
		// committed (or gone for good, as AUTOINCREMENT never reuses one).
		var horizon int64
		if err := l.db.QueryRowxContext(ctx, l.q.lastSeq).Scan(&horizon); err != nil {
			return p, fmt.Errorf("eventlog: follow: read the horizon: %w", err)
		}
		args = append(args, max(pos.Seq, pos.AfterSeq), horizon)
		p.next = Position{Seq: horizon, AfterSeq: pos.AfterSeq}
	}
	args = append(args, f.filterArgs...)
	args = append(args, f.pageSize)
	rows, err := l.db.QueryxContext(ctx, f.pageQuery, args...)
	if err != nil {
		return p, fmt.Errorf("eventlog: follow: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			ev Event
			tx string
		)
		if err := scanEvent(prefixScanner{rows, &tx}, &ev); err != nil {
			return p, fmt.Errorf("eventlog: follow: %w", err)
		}
		id, err := strconv.ParseUint(tx, 10, 64)
		if err != nil {
			return p, fmt.Errorf("eventlog: follow: tx_id %q: %w", tx, err)
		}
		p.events = append(p.events, ev)
		p.txIDs = append(p.txIDs, id)
	}
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("eventlog: follow: %w", err)
	}
	p.caughtUp = len(p.events) < f.pageSize
	// The horizon never moves backwards, but a cursor built by hand might
	// be ahead of it: never move the cursor back.
	if p.caughtUp && positionLess(p.next, pos) {
		p.next = pos
	}
	if n := len(p.events); p.caughtUp && n > 0 && positionLess(p.next, Position{TxID: p.txIDs[n-1], Seq: p.events[n-1].Seq}) {
		p.next = Position{TxID: p.txIDs[n-1], Seq: p.events[n-1].Seq, AfterSeq: pos.AfterSeq}
	}
	return p, nil
}

func positionLess(a, b Position) bool {
	if a.TxID != b.TxID {
		return a.TxID < b.TxID
	}
	return a.Seq < b.Seq
}

// prefixScanner scans a leading tx_id column before the event's columns.
type prefixScanner struct {
	r  rowScanner
	tx *string
}

func (s prefixScanner) Scan(dest ...any) error {
	return s.r.Scan(append([]any{s.tx}, dest...)...)
}

// PositionAfterSeq returns the position from which a Follower delivers
// exactly the events with seq > seq, each once, including those of
// transactions still running now. On SQLite that is simply the seq. On
// PostgreSQL the cursor starts at the oldest transaction that appended (or
// may still append) an event after seq, and the position keeps seq as a
// floor (AfterSeq) so that older events of later transactions are
// skipped.
func (l *Log) PositionAfterSeq(ctx context.Context, seq int64) (Position, error) {
	if seq < 0 {
		return Position{}, fmt.Errorf("eventlog: position after seq: %w: seq is %d, must not be negative", ErrInvalidFilter, seq)
	}
	if seq == 0 {
		return Position{}, nil // the whole log: no need to look for where it starts
	}
	if l.dialect != dialect.Postgres {
		return Position{Seq: seq, AfterSeq: seq}, nil
	}
	// A transaction still running may yet insert an event after seq: its
	// id is at least the horizon, so the cursor must start no later.
	var start string
	err := l.db.QueryRowxContext(ctx, l.db.Rebind(`SELECT LEAST(
	(SELECT min(tx_id) FROM event_log WHERE seq > ?),
	pg_snapshot_xmin(pg_current_snapshot()))::text`), seq).Scan(&start)
	if err != nil {
		return Position{}, fmt.Errorf("eventlog: position after seq %d: %w", seq, err)
	}
	tx, err := strconv.ParseUint(start, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("eventlog: position after seq %d: tx_id %q: %w", seq, start, err)
	}
	return Position{TxID: tx, Seq: 0, AfterSeq: seq}, nil
}
