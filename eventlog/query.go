package eventlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
)

// Query limits.
const (
	// DefaultQueryLimit is the number of events Query returns when
	// Filter.Limit is 0.
	DefaultQueryLimit = 100
	// MaxQueryLimit is the largest Filter.Limit Query accepts. Read more
	// with the AfterSeq cursor, or stream with Events.
	MaxQueryLimit = 10000
)

// Filter selects events for Query, Count and TailStart. Zero fields do not
// filter. Conditions
// combine with AND.
type Filter struct {
	HostID    string
	RolloutID string
	// Kinds keeps events of any of these kinds.
	Kinds []Kind
	// AfterSeq keeps events with seq > AfterSeq: the cursor for paging. Pass
	// the last seq of one page to get the next.
	AfterSeq int64
	// Since keeps events with TS >= Since; Until keeps TS < Until.
	Since, Until time.Time
	// PayloadContains keeps events whose payload, as stored, contains at
	// least one of these strings, byte for byte (case and escapes count:
	// "\u0066ail" does not contain "fail"). The database tests it on the
	// payload's text without parsing the JSON, so it is a cheap way to
	// leave out events that cannot matter before they are read: a
	// projection declares its markers with projection.PayloadMarker, and
	// its rebuilds and verifies then read only the events that carry one.
	// Each string is 1 to MaxPayloadMarkerBytes bytes of UTF-8 without a
	// NUL; at most MaxPayloadMarkers of them. No index serves it: it
	// narrows what the other conditions select.
	PayloadContains []string
	// Limit is the most events returned: 0 means DefaultQueryLimit; more
	// than MaxQueryLimit is an error.
	Limit int
}

// Bounds of Filter.PayloadContains.
const (
	MaxPayloadMarkers     = 16
	MaxPayloadMarkerBytes = 256
)

// Validate checks f's conditions as Query, Count, TailStart, Pages, Events
// and NewFollower (and their Tx twins) do before anything reaches the database, the same on both
// backends: a negative AfterSeq; a HostID or RolloutID that no entry can
// hold (not UTF-8, a NUL, over 512 bytes: the rules of Entry.Validate); a
// malformed kind; a Since or Until outside years 0001-9999 (after moving
// it to UTC); an Until not after Since. The error is a *FilterError naming
// the field; it wraps ErrInvalidFilter (and ErrInvalidKind for a kind).
// Limit is checked by each method, whose ranges differ.
func (f Filter) Validate() error {
	fail := func(field string, err error) error { return &FilterError{Field: field, Err: err} }
	if f.AfterSeq < 0 {
		return fail("AfterSeq", fmt.Errorf("%d, must not be negative", f.AfterSeq))
	}
	if err := checkID(f.HostID); err != nil {
		return fail("HostID", err)
	}
	if err := checkID(f.RolloutID); err != nil {
		return fail("RolloutID", err)
	}
	for _, k := range f.Kinds {
		if err := k.Validate(); err != nil {
			return fail("Kinds", err)
		}
	}
	if len(f.PayloadContains) > MaxPayloadMarkers {
		return fail("PayloadContains", fmt.Errorf("%d strings, at most %d allowed", len(f.PayloadContains), MaxPayloadMarkers))
	}
	for i, m := range f.PayloadContains {
		if err := checkMarker(m); err != nil {
			return fail(fmt.Sprintf("PayloadContains[%d]", i), err)
		}
	}
	for _, t := range []struct {
		field string
		ts    time.Time
	}{{"Since", f.Since}, {"Until", f.Until}} {
		if t.ts.IsZero() {
			continue
		}
		if err := checkTS(NormalizeTime(t.ts)); err != nil {
			return fail(t.field, err)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return fail("Until", fmt.Errorf("%s is not after Since (%s)",
			f.Until.Format(time.RFC3339Nano), f.Since.Format(time.RFC3339Nano)))
	}
	return nil
}

// checkMarker says why m cannot be one of Filter.PayloadContains.
func checkMarker(m string) error {
	switch {
	case m == "":
		return errors.New("empty: it would keep every event")
	case len(m) > MaxPayloadMarkerBytes:
		return fmt.Errorf("%d bytes, at most %d allowed", len(m), MaxPayloadMarkerBytes)
	case !utf8.ValidString(m):
		return errors.New("not valid UTF-8")
	case strings.IndexByte(m, 0) >= 0:
		return errors.New("contains a NUL byte")
	}
	return nil
}

// where validates the filter and renders its conditions for backend b
// with ? placeholders.
func (f Filter) where(b Backend) (string, []any, error) {
	return f.render(b, func(col string) string { return col })
}

// whereUnindexed is where with host_id, rollout_id and kind compared as
// expressions that no index matches, for a reader that walks another
// index in order and must not be planned onto these (see
// Follower.pageQuery).
func (f Filter) whereUnindexed(b Backend) (string, []any, error) {
	return f.render(b, func(col string) string { return "(" + col + " || '')" })
}

func (f Filter) render(b Backend, col func(string) string) (string, []any, error) {
	if err := f.Validate(); err != nil {
		return "", nil, err
	}
	var (
		conds []string
		args  []any
	)
	if f.AfterSeq > 0 {
		conds, args = append(conds, "seq > ?"), append(args, f.AfterSeq)
	}
	if f.HostID != "" {
		conds, args = append(conds, col("host_id")+" = ?"), append(args, f.HostID)
	}
	if f.RolloutID != "" {
		conds, args = append(conds, col("rollout_id")+" = ?"), append(args, f.RolloutID)
	}
	switch len(f.Kinds) {
	case 0:
	case 1:
		// A single kind stays an equality so the (kind, seq) index serves it
		// in seq order.
		conds, args = append(conds, col("kind")+" = ?"), append(args, string(f.Kinds[0]))
	default:
		marks := make([]string, len(f.Kinds))
		for i, k := range f.Kinds {
			marks[i] = "?"
			args = append(args, string(k))
		}
		conds = append(conds, col("kind")+" IN ("+strings.Join(marks, ", ")+")")
	}
	if len(f.PayloadContains) > 0 {
		// The payload's stored text, not parsed: a json column's text is
		// the appended bytes (a no-op cast), SQLite's a TEXT column.
		contains := "instr(payload, ?) > 0"
		if b == Postgres {
			contains = "strpos(payload::text, ?) > 0"
		}
		ors := make([]string, len(f.PayloadContains))
		for i, m := range f.PayloadContains {
			ors[i] = contains
			args = append(args, m)
		}
		conds = append(conds, "("+strings.Join(ors, " OR ")+")")
	}
	if !f.Since.IsZero() {
		conds, args = append(conds, "ts >= ?"), append(args, FormatTime(f.Since))
	}
	if !f.Until.IsZero() {
		conds, args = append(conds, "ts < ?"), append(args, FormatTime(f.Until))
	}
	if len(conds) == 0 {
		return "", nil, nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args, nil
}

// LastSeq returns the highest seq in the log, or 0 when it is empty.
func (l *Log) LastSeq(ctx context.Context) (int64, error) {
	return l.lastSeq(ctx, l.db)
}

// LastSeqTx is LastSeq inside the caller's transaction: it sees what the
// transaction's snapshot (or, in READ COMMITTED, the statement's) sees,
// including the transaction's own appends.
func (l *Log) LastSeqTx(ctx context.Context, tx *sqlx.Tx) (int64, error) {
	return l.lastSeq(ctx, tx)
}

func (l *Log) lastSeq(ctx context.Context, q sqlx.QueryerContext) (int64, error) {
	var seq int64
	if err := q.QueryRowxContext(ctx, l.q.lastSeq).Scan(&seq); err != nil {
		return 0, fmt.Errorf("eventlog: last seq: %w", err)
	}
	return seq, nil
}

// Count returns the number of events matching f. f.Limit must be 0: Count
// counts every match. It reads every match (through the index that serves
// the filter, or the whole table for an empty filter), so its cost grows
// with the count; it is meant for reports and progress, not for every
// request.
func (l *Log) Count(ctx context.Context, f Filter) (int64, error) {
	return l.count(ctx, l.db, f)
}

// CountTx is Count inside the caller's transaction.
func (l *Log) CountTx(ctx context.Context, tx *sqlx.Tx, f Filter) (int64, error) {
	return l.count(ctx, tx, f)
}

func (l *Log) count(ctx context.Context, q sqlx.QueryerContext, f Filter) (int64, error) {
	if f.Limit != 0 {
		return 0, fmt.Errorf("eventlog: count: %w: Limit is %d, must be 0: Count counts every match",
			ErrInvalidFilter, f.Limit)
	}
	where, args, err := f.where(l.backend)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := q.QueryRowxContext(ctx, l.db.Rebind(`SELECT COUNT(*) FROM event_log`+where), args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("eventlog: count events: %w", err)
	}
	return n, nil
}

// TailStart returns the seq after which the last n events matching f
// begin: Query (or Pages) with it as Filter.AfterSeq, and the same
// conditions, to read those n events. When n or fewer events match, it
// returns f.AfterSeq (0 for no cursor): every match is among the last n.
// n must not be negative and f.Limit must be 0.
//
// It walks the seq-ordered index that serves f backwards from the head
// (the primary key for an empty filter), skipping n matches, so its cost
// grows with n, not with the length of the log.
func (l *Log) TailStart(ctx context.Context, f Filter, n int) (int64, error) {
	return l.tailStart(ctx, l.db, f, n)
}

// TailStartTx is TailStart inside the caller's transaction. In a
// REPEATABLE READ transaction, QueryTx from the seq it returns reads
// exactly the n events it counted back over, however many appends commit
// meanwhile.
func (l *Log) TailStartTx(ctx context.Context, tx *sqlx.Tx, f Filter, n int) (int64, error) {
	return l.tailStart(ctx, tx, f, n)
}

func (l *Log) tailStart(ctx context.Context, q sqlx.QueryerContext, f Filter, n int) (int64, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("eventlog: tail start: %w: n is %d, must not be negative", ErrInvalidFilter, n)
	case f.Limit != 0:
		return 0, fmt.Errorf("eventlog: tail start: %w: Limit is %d, must be 0: n says how many events", ErrInvalidFilter, f.Limit)
	}
	where, args, err := f.where(l.backend)
	if err != nil {
		return 0, err
	}
	// The (n+1)-th last match is the one the last n come after.
	query := l.db.Rebind(`SELECT seq FROM event_log` + where + ` ORDER BY seq DESC LIMIT 1 OFFSET ?`)
	var seq int64
	switch err := q.QueryRowxContext(ctx, query, append(args, n)...).Scan(&seq); {
	case errors.Is(err, sql.ErrNoRows):
		return f.AfterSeq, nil
	case err != nil:
		return 0, fmt.Errorf("eventlog: find the last %d events: %w", n, err)
	}
	return seq, nil
}

// LagAge returns how long ago the first event matching f (after
// f.AfterSeq, the position of a reader) was stamped, by its TS: how far
// in time that reader is behind. 0 when no event matches. f.Limit must
// be 0. It reads one event through the index that serves f.
func (l *Log) LagAge(ctx context.Context, f Filter) (time.Duration, error) {
	if f.Limit != 0 {
		return 0, fmt.Errorf("eventlog: lag age: %w: Limit is %d, must be 0", ErrInvalidFilter, f.Limit)
	}
	f.Limit = 1
	first, err := l.Query(ctx, f)
	if err != nil || len(first) == 0 {
		return 0, err
	}
	return max(0, time.Since(first[0].TS)), nil
}

// Get returns the event with seq, or an error wrapping ErrNotFound.
func (l *Log) Get(ctx context.Context, seq int64) (Event, error) {
	var ev Event
	err := scanEvent(l.db.QueryRowxContext(ctx, l.q.get, seq), &ev)
	if errors.Is(err, sql.ErrNoRows) {
		return Event{}, fmt.Errorf("eventlog: get event %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("eventlog: get event %d: %w", seq, err)
	}
	return ev, nil
}

// Query returns the events matching f, in seq order, at most f.Limit of
// them. Queries by host, rollout or a single kind read an index that is
// already in seq order; see docs/architecture.md.
func (l *Log) Query(ctx context.Context, f Filter) ([]Event, error) {
	return l.query(ctx, l.db, f)
}

// QueryTx is Query inside the caller's transaction.
func (l *Log) QueryTx(ctx context.Context, tx *sqlx.Tx, f Filter) ([]Event, error) {
	return l.query(ctx, tx, f)
}

func (l *Log) query(ctx context.Context, q sqlx.QueryerContext, f Filter) ([]Event, error) {
	switch {
	case f.Limit < 0 || f.Limit > MaxQueryLimit:
		return nil, fmt.Errorf("eventlog: %w: Limit is %d, must be between 0 (default %d) and %d",
			ErrInvalidFilter, f.Limit, DefaultQueryLimit, MaxQueryLimit)
	case f.Limit == 0:
		f.Limit = DefaultQueryLimit
	}
	where, args, err := f.where(l.backend)
	if err != nil {
		return nil, err
	}
	query := l.db.Rebind(`SELECT ` + eventColumns + ` FROM event_log` + where + ` ORDER BY seq LIMIT ?`)
	events, _, err := readEvents(ctx, q, query, append(args, f.Limit), f.Limit, 0)
	return events, err
}

// readEvents runs query and scans its events. With maxBytes > 0 it stops
// once the payloads read reach maxBytes (after at least one event) and
// reports truncated; the rest of the result is discarded unread into
// memory.
func readEvents(ctx context.Context, q sqlx.QueryerContext, query string, args []any, capHint, maxBytes int) (events []Event, truncated bool, err error) {
	rows, err := q.QueryxContext(ctx, query, args...)
	if err != nil {
		return nil, false, fmt.Errorf("eventlog: query: %w", err)
	}
	defer rows.Close()
	events = make([]Event, 0, capHint)
	size := 0
	for rows.Next() {
		var ev Event
		if err := scanEvent(rows, &ev); err != nil {
			return nil, false, fmt.Errorf("eventlog: query: %w", err)
		}
		events = append(events, ev)
		if size += len(ev.Payload); maxBytes > 0 && size >= maxBytes {
			truncated = true
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("eventlog: query: %w", err)
	}
	return events, truncated, nil
}
