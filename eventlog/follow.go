package eventlog

import (
	"context"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
)

// DefaultPollInterval is how long a Follower waits between polls once it
// has caught up, when FollowOptions.PollInterval is 0.
const DefaultPollInterval = 500 * time.Millisecond

// Position is a follower's cursor in the log: everything up to it has been
// delivered (or skipped by the filter), and following resumes after it.
// Persist it (plain numbers and a string, JSON-friendly) to resume a
// follower where it stopped: each event is then delivered exactly once
// across restarts, as long as the position is saved after the events it
// covers are handled.
//
// The zero Position starts at the beginning of the log. To start anywhere
// else take a start position from the log: PositionAtHead (from now on),
// PositionAtHeadTx (after what a transaction reads), PositionAfterSeq
// (after a seq). A start position promises that a follower delivers every
// event that commits after the position was taken, whatever its seq — on
// PostgreSQL an event can take its seq long before it commits, so "seq
// greater than the head" would skip it — and, of the events committed
// before, exactly those above its floor (none from the head): nothing is
// skipped and nothing repeated. A position saved mid-way keeps that
// promise when resumed.
type Position struct {
	// TxID is the PostgreSQL transaction id (xid8) the cursor is in; events
	// are followed in (TxID, Seq) order. Always 0 on SQLite, where commit
	// order is seq order.
	TxID uint64 `json:"tx_id"`
	// Seq is the seq the cursor is at within TxID (on SQLite: the last seq
	// delivered or skipped).
	Seq int64 `json:"seq"`
	// AfterSeq is the start's floor: of the events committed when the
	// position was taken (those visible in Snapshot), only those with seq >
	// AfterSeq are delivered. Set by the start positions on PostgreSQL,
	// together with Snapshot, and dropped with it once the cursor has
	// passed every transaction of the snapshot.
	//
	// A position saved by an earlier canonlog may hold AfterSeq without a
	// Snapshot: the floor then applies to every event, as it did then, and
	// so skips an event that was still being appended at its start with a
	// seq at or below the floor. Take a new start position for the full
	// promise.
	AfterSeq int64 `json:"after_seq,omitempty"`
	// Snapshot is the PostgreSQL snapshot taken with the start position, in
	// pg_current_snapshot's text form "xmin:xmax:xip,…": it tells the
	// events committed before the start (visible in it) from those
	// committed after. Empty on SQLite, and once the cursor reaches the
	// snapshot's xmax: every later transaction began after the start.
	Snapshot string `json:"snapshot,omitempty"`
}

// String renders the position for logs: "tx/seq", with "+afterN" when
// AfterSeq is set and "@snapshot" when Snapshot is.
func (p Position) String() string {
	s := fmt.Sprintf("%d/%d", p.TxID, p.Seq)
	if p.AfterSeq > 0 {
		s += fmt.Sprintf("+after%d", p.AfterSeq)
	}
	if p.Snapshot != "" {
		s += "@" + p.Snapshot
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
	// Name names the follower in the log's metrics (Config.MeterProvider):
	// while Events runs, canonlog.follower.position, .lag and .lag.age
	// are reported with canonlog.follower.name = Name. Empty reports
	// nothing. Use a few fixed names ("tail", "audit_export"): every name
	// is a series. At most 63 bytes.
	Name string
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
// The same trap awaits a start position: "from seq N on" would skip an
// event that took a seq below N before the start and commits after it.
// The start positions (PositionAtHead, PositionAtHeadTx, PositionAfterSeq)
// therefore record which transactions had committed at the start (see
// Position), so that such an event is delivered however low its seq.
//
// A Follower is not safe for concurrent use; run one per consumer.
type Follower struct {
	log      *Log
	pos      Position
	pageSize int
	interval time.Duration
	// snapXmax is the xmax of pos.Snapshot, 0 when there is none: once the
	// cursor reaches it, the snapshot and floor are dropped.
	snapXmax uint64

	// Rendered once: the filter's conditions and their arguments.
	filterSQL  string
	filterArgs []any
	pageQuery  string
	// windowed: pageQuery reads a window of events, marked whether they
	// match the filter (PostgreSQL, with a filter).
	windowed bool
	// caughtUp reports that the last poll read everything readable.
	caughtUp bool

	// For the metrics (FollowOptions.Name): the filter, and the last seq
	// Events yielded.
	name      string
	filter    Filter
	delivered atomic.Int64
}

// NewFollower returns a Follower that delivers the events after from,
// filtered by opts: from the zero Position every event, from a start
// position what it promises (see Position). A malformed position or option
// is an error wrapping ErrInvalidFilter.
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
	case len(o.Name) > 63 || !utf8.ValidString(o.Name) || strings.IndexByte(o.Name, 0) >= 0:
		return nil, fmt.Errorf("eventlog: follow: %w: Name must be valid UTF-8 without NUL, at most 63 bytes", ErrInvalidFilter)
	case from.Seq < 0 || from.AfterSeq < 0:
		return nil, fmt.Errorf("eventlog: follow: %w: position %s has a negative seq", ErrInvalidFilter, from)
	case from.Snapshot != "" && l.backend != Postgres:
		return nil, fmt.Errorf("eventlog: follow: %w: position %s holds a PostgreSQL snapshot, but this log is on %s: take the position from this log",
			ErrInvalidFilter, from, l.backend)
	}
	var xmax uint64
	if from.Snapshot != "" {
		var err error
		if _, xmax, err = parseSnapshot(from.Snapshot); err != nil {
			return nil, fmt.Errorf("eventlog: follow: %w: position %s: %w", ErrInvalidFilter, from, err)
		}
	}
	if o.PageSize == 0 {
		o.PageSize = DefaultPageSize
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	where, args, err := o.Filter.where(l.backend)
	if err != nil {
		return nil, err
	}
	f := &Follower{log: l, pos: from, pageSize: o.PageSize, interval: o.PollInterval, snapXmax: xmax,
		filterSQL: andRest(where), filterArgs: args, name: o.Name, filter: o.Filter}
	f.moveTo(from.TxID, from.Seq) // a saved position may already be past its snapshot
	if l.backend == Postgres && where != "" {
		// A filtered page is a window: the next PageSize events after the
		// cursor in (tx_id, seq) order, each marked whether it matches,
		// and only the matching ones' payloads sent. The window walks the
		// (tx_id, seq) index whatever the planner knows: with the filter
		// in the WHERE clause, a table without statistics (after a bulk
		// load or a restore, autovacuum behind) gets planned onto the
		// kind or host index, or a sequential scan, and every page then
		// reads and sorts every matching event after the cursor. The
		// cursor moves to the window's end, matches or not, so a
		// follower of a rare kind is linear in the log it passes.
		unindexed, _, _ := o.Filter.whereUnindexed(l.backend)
		f.windowed = true
		f.pageQuery = l.db.Rebind(`SELECT tx_text, hit, seq, ts, kind, host_id, rollout_id, CASE WHEN hit THEN payload END AS payload, event_id FROM (
SELECT tx_id, tx_id::text AS tx_text, COALESCE(` + unindexed[len(" WHERE "):] + `, FALSE) AS hit, ` + eventColumns + ` FROM event_log
WHERE (tx_id, seq) > (?::xid8, ?) AND tx_id < ?::xid8
  AND (seq > ? OR NOT pg_visible_in_snapshot(tx_id, ?::pg_snapshot))
ORDER BY tx_id, seq LIMIT ?) AS w ORDER BY tx_id, seq`)
	} else if l.backend == Postgres {
		// The (tx_id, seq) index serves the row comparison and the order.
		// The text copy of tx_id needs a name of its own: ORDER BY tx_id
		// would otherwise sort by the output column, as text.
		//
		// The floor applies only to events visible in the start snapshot:
		// those committed before the start. pg_visible_in_snapshot is
		// strict, so without a snapshot (NULL) the OR leaves the plain
		// floor of positions saved before snapshots were recorded.
		f.pageQuery = l.db.Rebind(`SELECT tx_id::text AS tx_text, ` + eventColumns + ` FROM event_log
WHERE (tx_id, seq) > (?::xid8, ?) AND tx_id < ?::xid8
  AND (seq > ? OR NOT pg_visible_in_snapshot(tx_id, ?::pg_snapshot))` + f.filterSQL + `
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

// moveTo moves the cursor to (tx, seq). The start's floor and snapshot
// stay until the cursor reaches the snapshot's xmax: every transaction
// from there on began after the start, so all of its events are delivered
// and neither the floor nor the snapshot can exclude anything any more.
func (f *Follower) moveTo(tx uint64, seq int64) {
	f.pos.TxID, f.pos.Seq = tx, seq
	switch {
	case f.snapXmax != 0 && tx >= f.snapXmax:
		f.pos.AfterSeq, f.pos.Snapshot, f.snapXmax = 0, "", 0
	case f.log.backend != Postgres && f.pos.AfterSeq <= seq:
		// On SQLite the cursor is a seq: past the floor, the floor says
		// nothing more.
		f.pos.AfterSeq = 0
	}
}

// followPage is one poll's result.
type followPage struct {
	events []Event
	txIDs  []uint64
	// lastTx and lastSeq are the last event the page read, delivered or
	// (in a window) not matching; scanned counts those read.
	lastTx  uint64
	lastSeq int64
	scanned int
	// caughtUp reports a short page: every event below the horizon has
	// been read, so the cursor may jump to (nextTx, nextSeq).
	caughtUp bool
	nextTx   uint64
	nextSeq  int64
}

// moveAfter moves the cursor past everything p read.
func (f *Follower) moveAfter(p followPage) {
	if p.scanned > 0 {
		f.moveTo(p.lastTx, p.lastSeq)
	}
	if p.caughtUp {
		f.moveTo(p.nextTx, p.nextSeq)
	}
	f.caughtUp = p.caughtUp
}

// CaughtUp reports whether the last Poll, PollTx or DrainTx read
// everything there was to read then: Poll can return fewer events than
// PageSize, even none, while more are readable — when the filter skips
// most of a page — so "fewer than a page" does not say it.
func (f *Follower) CaughtUp() bool { return f.caughtUp }

// Poll reads the events that became readable after the cursor, at most
// PageSize of them, and moves the cursor past them. It returns an empty
// slice when there is nothing new (yet), and, with a filter on
// PostgreSQL, also when a whole page of events passed it by: CaughtUp
// tells the two apart. Poll never waits; Events loops over it.
func (f *Follower) Poll(ctx context.Context) ([]Event, error) {
	return f.pollAndMove(ctx, f.log.db)
}

func (f *Follower) pollAndMove(ctx context.Context, q sqlx.QueryerContext) ([]Event, error) {
	p, err := f.pollOn(ctx, q, false)
	if err != nil {
		return nil, err
	}
	f.moveAfter(p)
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
		f.delivered.Store(max(f.pos.Seq, f.pos.AfterSeq))
		stop, err := f.observe()
		if err != nil {
			yield(Event{}, err)
			return
		}
		defer stop()
		for {
			p, err := f.poll(ctx)
			if err != nil {
				if ctx.Err() == nil {
					yield(Event{}, err)
				}
				return
			}
			for i, ev := range p.events {
				f.moveTo(p.txIDs[i], ev.Seq)
				f.delivered.Store(ev.Seq)
				if !yield(ev, nil) {
					return
				}
			}
			f.moveAfter(p)
			if !p.caughtUp {
				if ctx.Err() != nil {
					return
				}
				continue // a full page: more is readable now
			}
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

// PollTx is Poll inside the caller's transaction, so that a consumer can
// read the next events and write what it derives from them in one
// transaction. On PostgreSQL tx must be READ COMMITTED, so that the page
// sees every transaction below the horizon it reads first. The cursor
// moves as with Poll: when tx rolls back, discard the Follower (or
// resume from the position saved before).
func (f *Follower) PollTx(ctx context.Context, tx *sqlx.Tx) ([]Event, error) {
	return f.pollAndMove(ctx, tx)
}

// DrainTx reads, inside tx, every event after the cursor that tx can
// see, in commit order, a page at a time, and moves the cursor past each
// page as it is yielded. Unlike Poll it does not wait for the horizon:
// it is for a caller that knows no transaction still running can append
// an event the follower wants — for example one holding, in tx, a lock
// that every such append takes before it inserts, as a projection's
// exclusive lock is. With that guarantee the events yielded and those
// delivered before are every event to deliver up to now, once each;
// without it, an event committed later below the cursor would be
// skipped. On PostgreSQL tx should be READ COMMITTED, so that each page
// sees every commit before it.
func (f *Follower) DrainTx(ctx context.Context, tx *sqlx.Tx) iter.Seq2[[]Event, error] {
	return func(yield func([]Event, error) bool) {
		for {
			p, err := f.pollOn(ctx, tx, true)
			if err != nil {
				yield(nil, err)
				return
			}
			p.caughtUp = false // drained to its last event, not to a horizon
			f.moveAfter(p)
			f.caughtUp = p.scanned < f.pageSize
			if len(p.events) > 0 && !yield(p.events, nil) {
				return
			}
			if f.caughtUp {
				return
			}
		}
	}
}

// noHorizon is the largest xid8: as a horizon, it lets every visible
// transaction through.
const noHorizon = "18446744073709551615"

func (f *Follower) poll(ctx context.Context) (followPage, error) {
	return f.pollOn(ctx, f.log.db, false)
}

// pollOn reads one page on q. With drain it reads past the horizon, up to
// everything q sees, and the cursor does not jump beyond the last event.
func (f *Follower) pollOn(ctx context.Context, q sqlx.QueryerContext, drain bool) (followPage, error) {
	var p followPage
	if err := ctx.Err(); err != nil {
		return p, err
	}
	l := f.log
	pos := f.pos
	var args []any
	if l.backend == Postgres && drain {
		var snapshot any
		if pos.Snapshot != "" {
			snapshot = pos.Snapshot
		}
		args = append(args, strconv.FormatUint(pos.TxID, 10), pos.Seq, noHorizon, pos.AfterSeq, snapshot)
		p.nextTx, p.nextSeq = pos.TxID, pos.Seq
	} else if l.backend == Postgres {
		// The horizon is read first, in its own statement: every
		// transaction below it had finished by then, so the page query,
		// which starts later, sees all of their events.
		var horizon string
		if err := q.QueryRowxContext(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&horizon); err != nil {
			return p, fmt.Errorf("eventlog: follow: read the horizon: %w", err)
		}
		h, err := strconv.ParseUint(horizon, 10, 64)
		if err != nil {
			return p, fmt.Errorf("eventlog: follow: horizon %q: %w", horizon, err)
		}
		var snapshot any // NULL: no start snapshot
		if pos.Snapshot != "" {
			snapshot = pos.Snapshot
		}
		args = append(args, strconv.FormatUint(pos.TxID, 10), pos.Seq, horizon, pos.AfterSeq, snapshot)
		// Everything below h is read once the page comes back short;
		// (h, 0) sorts before every event of transaction h, since seqs
		// start at 1.
		p.nextTx, p.nextSeq = h, 0
	} else {
		// One writer at a time: every seq up to the current maximum is
		// committed (or gone for good, as AUTOINCREMENT never reuses a
		// committed one).
		var horizon int64
		if err := q.QueryRowxContext(ctx, l.q.lastSeq).Scan(&horizon); err != nil {
			return p, fmt.Errorf("eventlog: follow: read the horizon: %w", err)
		}
		args = append(args, max(pos.Seq, pos.AfterSeq), horizon)
		p.nextSeq = horizon
	}
	if f.windowed {
		args = append(f.filterArgs[:len(f.filterArgs):len(f.filterArgs)], args...) // the select list comes first
	} else {
		args = append(args, f.filterArgs...)
	}
	args = append(args, f.pageSize)
	rows, err := q.QueryxContext(ctx, f.pageQuery, args...)
	if err != nil {
		return p, fmt.Errorf("eventlog: follow: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			ev  Event
			tx  string
			hit = true
		)
		sc := prefixScanner{r: rows, tx: &tx}
		if f.windowed {
			sc.hit = &hit
		}
		if err := scanEvent(sc, &ev); err != nil {
			return p, fmt.Errorf("eventlog: follow: %w", err)
		}
		id, err := strconv.ParseUint(tx, 10, 64)
		if err != nil {
			return p, fmt.Errorf("eventlog: follow: tx_id %q: %w", tx, err)
		}
		p.scanned++
		p.lastTx, p.lastSeq = id, ev.Seq
		if hit {
			p.events = append(p.events, ev)
			p.txIDs = append(p.txIDs, id)
		}
	}
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("eventlog: follow: %w", err)
	}
	p.caughtUp = p.scanned < f.pageSize
	if !p.caughtUp {
		return p, nil
	}
	// The horizon never moves backwards, but a cursor built by hand might
	// be ahead of it: never move the cursor back.
	if cursorLess(p.nextTx, p.nextSeq, pos.TxID, pos.Seq) {
		p.nextTx, p.nextSeq = pos.TxID, pos.Seq
	}
	if p.scanned > 0 && cursorLess(p.nextTx, p.nextSeq, p.lastTx, p.lastSeq) {
		p.nextTx, p.nextSeq = p.lastTx, p.lastSeq
	}
	return p, nil
}

// cursorLess reports whether cursor (atx, aseq) sorts before (btx, bseq).
func cursorLess(atx uint64, aseq int64, btx uint64, bseq int64) bool {
	if atx != btx {
		return atx < btx
	}
	return aseq < bseq
}

// prefixScanner scans a leading tx_id column before the event's columns,
// and after it, when hit is set, whether the event matches the filter.
type prefixScanner struct {
	r   rowScanner
	tx  *string
	hit *bool
}

func (s prefixScanner) Scan(dest ...any) error {
	if s.hit != nil {
		return s.r.Scan(append([]any{s.tx, s.hit}, dest...)...)
	}
	return s.r.Scan(append([]any{s.tx}, dest...)...)
}

// PositionAtHead returns the start position at the head of the log: a
// Follower from it delivers every event that commits after this call —
// including the events of transactions already running now, whatever
// their seqs — and none that committed before it.
//
// On PostgreSQL the position holds the snapshot of the statement that read
// the head (see Position); on SQLite, with one writer at a time, it is the
// last committed seq.
func (l *Log) PositionAtHead(ctx context.Context) (Position, error) {
	return l.positionAtHead(ctx, l.db, false)
}

// PositionAtHeadTx is PositionAtHead inside the caller's transaction, so
// that "before" means exactly what the transaction reads: read the log's
// current state in tx (QueryTx, PagesTx), then follow from the position,
// and every event is seen once, either by the reads or by the follower.
//
// On PostgreSQL tx must be REPEATABLE READ or SERIALIZABLE (every statement
// reads one snapshot; in READ COMMITTED each statement takes its own) and
// must not have written: a transaction's own appends are visible to its
// reads but commit after the position, so they would be seen twice. Use a
// read-only transaction:
//
//	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
//
// Both mistakes are refused with an error wrapping ErrInvalidFilter. On
// SQLite any transaction reads one snapshot.
func (l *Log) PositionAtHeadTx(ctx context.Context, tx *sqlx.Tx) (Position, error) {
	return l.positionAtHead(ctx, tx, true)
}

func (l *Log) positionAtHead(ctx context.Context, q sqlx.QueryerContext, inTx bool) (Position, error) {
	if l.backend != Postgres {
		var head int64
		if err := q.QueryRowxContext(ctx, l.q.lastSeq).Scan(&head); err != nil {
			return Position{}, fmt.Errorf("eventlog: position at head: %w", err)
		}
		return Position{Seq: head}, nil
	}
	// The snapshot and the head come from one statement, so from one
	// snapshot: every event visible in it has seq <= head.
	var (
		snap, isolation string
		head            int64
		written         bool
	)
	err := q.QueryRowxContext(ctx, `SELECT pg_current_snapshot()::text, COALESCE((SELECT max(seq) FROM event_log), 0),
	current_setting('transaction_isolation'), pg_current_xact_id_if_assigned() IS NOT NULL`).Scan(&snap, &head, &isolation, &written)
	if err != nil {
		return Position{}, fmt.Errorf("eventlog: position at head: %w", err)
	}
	if inTx {
		switch {
		case isolation != "repeatable read" && isolation != "serializable":
			return Position{}, fmt.Errorf("eventlog: position at head: %w: the transaction is %s, so its statements do not share the position's snapshot: begin it with sql.LevelRepeatableRead",
				ErrInvalidFilter, strings.ToUpper(isolation))
		case written:
			return Position{}, fmt.Errorf("eventlog: position at head: %w: the transaction has written, and its own appends would be seen twice: take the position in a read-only transaction",
				ErrInvalidFilter)
		}
	}
	return startPosition(snap, "", head)
}

// PositionAfterSeq returns the start position after seq: a Follower from
// it delivers the events with seq > seq that had committed when this is
// called, and every event that commits after — including the events of
// transactions already running now, whatever their seqs. Each once.
//
// A seq beyond the last committed one starts at the head: an event that
// commits later is delivered even if its seq is at most seq, since nothing
// about a seq says when its event commits. PositionAfterSeq(ctx, 0) is the
// zero Position: the whole log.
//
// On PostgreSQL the cursor starts at the oldest transaction that appended,
// or may still append, an event to deliver, and the position keeps seq as
// the floor for the events committed before, with the snapshot that tells
// them apart (see Position); on SQLite, with one writer at a time, it is
// the seq itself (at most the last committed one).
func (l *Log) PositionAfterSeq(ctx context.Context, seq int64) (Position, error) {
	if seq < 0 {
		return Position{}, fmt.Errorf("eventlog: position after seq: %w: seq is %d, must not be negative", ErrInvalidFilter, seq)
	}
	if seq == 0 {
		return Position{}, nil // the whole log: no need to look for where it starts
	}
	if l.backend != Postgres {
		var head int64
		if err := l.db.QueryRowxContext(ctx, l.q.lastSeq).Scan(&head); err != nil {
			return Position{}, fmt.Errorf("eventlog: position after seq %d: %w", seq, err)
		}
		return Position{Seq: min(seq, head)}, nil
	}
	// One statement, so one snapshot: the oldest transaction among the
	// committed events after seq, the head and the snapshot agree.
	var (
		snap, first string
		head        int64
	)
	err := l.db.QueryRowxContext(ctx, l.db.Rebind(`SELECT pg_current_snapshot()::text,
	COALESCE((SELECT min(tx_id) FROM event_log WHERE seq > ?)::text, ''),
	COALESCE((SELECT max(seq) FROM event_log), 0)`), seq).Scan(&snap, &first, &head)
	if err != nil {
		return Position{}, fmt.Errorf("eventlog: position after seq %d: %w", seq, err)
	}
	pos, err := startPosition(snap, first, min(seq, head))
	if err != nil {
		return Position{}, fmt.Errorf("eventlog: position after seq %d: %w", seq, err)
	}
	return pos, nil
}

// startPosition builds a PostgreSQL start position from the snapshot snap
// and, read in the same statement, the floor and first, the oldest tx_id
// among the committed events above the floor ("" for none).
func startPosition(snap, first string, floor int64) (Position, error) {
	xmin, _, err := parseSnapshot(snap)
	if err != nil {
		return Position{}, fmt.Errorf("eventlog: start position: %w", err)
	}
	// Transactions below xmin had all finished: the only events to
	// deliver among them are committed ones above the floor, from first
	// on. The others start at xmin or later.
	start := xmin
	if first != "" {
		tx, err := strconv.ParseUint(first, 10, 64)
		if err != nil {
			return Position{}, fmt.Errorf("eventlog: start position: tx_id %q: %w", first, err)
		}
		start = min(start, tx)
	}
	if floor == 0 {
		// Nothing committed is to be skipped: every event from start on
		// is delivered, and the snapshot has nothing to tell apart.
		return Position{TxID: start}, nil
	}
	return Position{TxID: start, AfterSeq: floor, Snapshot: snap}, nil
}

// parseSnapshot checks a pg_snapshot's text form, "xmin:xmax:xip,…" (as
// PostgreSQL's own input function does: xmin <= every xip < xmax, xips
// ascending), and returns its bounds.
func parseSnapshot(s string) (xmin, xmax uint64, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, 0, fmt.Errorf("snapshot %q is not of the form xmin:xmax:xip,…", s)
	}
	if xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil || xmin == 0 {
		return 0, 0, fmt.Errorf("snapshot %q: xmin is not a positive transaction id", s)
	}
	if xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil || xmax < xmin {
		return 0, 0, fmt.Errorf("snapshot %q: xmax is not a transaction id at or above xmin", s)
	}
	if parts[2] == "" {
		return xmin, xmax, nil
	}
	last := xmin
	for _, x := range strings.Split(parts[2], ",") {
		id, err := strconv.ParseUint(x, 10, 64)
		if err != nil || id < last || id >= xmax {
			return 0, 0, fmt.Errorf("snapshot %q: running transaction %q is not ascending within [xmin, xmax)", s, x)
		}
		last = id
	}
	return xmin, xmax, nil
}

// CheckTxIDs reports, with an error wrapping ErrForeignTxIDs, when pos or
// the log holds a PostgreSQL transaction id above the ones this server has
// handed out so far (pg_snapshot_xmax of a current snapshot, which
// consumes no transaction id). It reads one index entry. On SQLite it
// returns nil: positions there are seqs.
func (l *Log) CheckTxIDs(ctx context.Context, pos Position) error {
	if l.backend != Postgres {
		return nil
	}
	var next, logMax string
	err := l.db.QueryRowxContext(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text,
	COALESCE((SELECT max(tx_id) FROM event_log)::text, '0')`).Scan(&next, &logMax)
	if err != nil {
		return fmt.Errorf("eventlog: check transaction ids: %w", err)
	}
	n, err1 := strconv.ParseUint(next, 10, 64)
	m, err2 := strconv.ParseUint(logMax, 10, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("eventlog: check transaction ids: read %q and %q", next, logMax)
	}
	// pg_resetwal's -e and -x for a next id past m: the 32-bit id rounded
	// up to a multiple of 1048576, so that it starts a fresh segment of
	// the server's transaction status files.
	epoch, xid := (m+1)>>32, ((m+1)&0xffffffff+0xfffff)&^uint64(0xfffff)
	if xid >= 1<<32 {
		epoch, xid = epoch+1, 1<<20
	}
	switch {
	case m > n:
		return fmt.Errorf("eventlog: %w: event_log holds transaction id %d, and this server has handed out ids up to %d only: "+
			"followers would not deliver those events until its ids pass %d. Stop the server and move its next transaction id past it "+
			"(pg_resetwal -e %d -x %d on the stopped server; docs/consumers.md, \"Restored into another cluster\")",
			ErrForeignTxIDs, m, n, m, epoch, xid)
	case pos.TxID > n:
		return fmt.Errorf("eventlog: %w: the position %s is at transaction id %d, and this server has handed out ids up to %d only: "+
			"a follower from it would skip every new event; take a new position by seq (Log.PositionAfterSeq)",
			ErrForeignTxIDs, pos, pos.TxID, n)
	}
	return nil
}
