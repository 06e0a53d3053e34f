package eventlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/canonlog/canonlog/internal/dbutil"
	"github.com/canonlog/canonlog/internal/pglock"
)

// Condition makes an append conditional: the append fails with a
// *ConditionError, and writes nothing, when an event matching Match has
// a seq greater than AfterSeq. It is the guard of a read–decide–append
// loop: read the events (or a view derived from them) that a decision
// depends on, remember the seq the read was complete up to, and append
// the decision only if nothing relevant was appended since. Read with
// ReadForCondition, which returns the Condition to append with; see
// docs/deciding.md.
//
// On PostgreSQL the check also sees appends that have inserted but not
// yet committed: every append holds a shared lock on each of its events'
// kind, host and rollout until it commits, and a conditional append
// holds the lock of the value its condition selects exclusively while it
// checks and appends (the lock order is in docs/deciding.md). Conditions
// on different hosts, rollouts or kinds therefore never wait for each
// other. On SQLite, which has one writer at a time, the check is a query
// inside the append's write transaction.
type Condition struct {
	// Match selects the events the decision depends on. It must name at
	// least one kind, a host or a rollout; PayloadContains narrows it
	// further. AfterSeq, Limit, Since and Until must be zero: the
	// condition's own AfterSeq bounds it.
	Match Filter
	// AfterSeq is the seq the decision's read was complete up to: an
	// event matching Match with a greater seq fails the append.
	AfterSeq int64
}

// Validate checks c as the conditional appends and ReadForCondition do
// before anything reaches the database. The error wraps
// ErrInvalidCondition (and, for a malformed Match field, the
// *FilterError).
func (c Condition) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("eventlog: %w: %s", ErrInvalidCondition, fmt.Sprintf(format, args...))
	}
	m := c.Match
	switch {
	case c.AfterSeq < 0:
		return fail("AfterSeq is %d, must not be negative", c.AfterSeq)
	case m.AfterSeq != 0:
		return fail("Match.AfterSeq is %d: set Condition.AfterSeq instead", m.AfterSeq)
	case m.Limit != 0:
		return fail("Match.Limit is %d: a condition considers every matching event", m.Limit)
	case !m.Since.IsZero() || !m.Until.IsZero():
		return fail("Match selects by time (Since, Until): a condition selects by kind, host, rollout and payload only")
	case len(m.Kinds) == 0 && m.HostID == "" && m.RolloutID == "":
		return fail("Match names no kind, host or rollout: a condition must select one of them")
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("eventlog: %w: Match: %w", ErrInvalidCondition, err)
	}
	return nil
}

// ConditionError reports a failed append condition: an event matching
// the condition was appended after the seq the decision was taken at.
// Nothing was written. It unwraps to ErrConditionFailed.
type ConditionError struct {
	// Seq is the first event after Condition.AfterSeq that matches
	// Condition.Match.
	Seq       int64
	Condition Condition
}

func (e *ConditionError) Error() string {
	return fmt.Sprintf("eventlog: %v: event %d matches the condition and was appended after seq %d",
		ErrConditionFailed, e.Seq, e.Condition.AfterSeq)
}

func (e *ConditionError) Unwrap() error { return ErrConditionFailed }

// Conditional appends under a Condition: see Log.If.
type Conditional struct {
	l    *Log
	cond Condition
}

// If returns c's appender: its Append, AppendBatch and AppendTx append
// as the Log's do, but only when c holds; otherwise they return a
// *ConditionError (errors.Is ErrConditionFailed) naming the first
// conflicting event, and write nothing and run no hook. A malformed c
// fails every append with ErrInvalidCondition.
//
// Events that carry one of the append's own event ids are not
// conflicts, and an append all of whose entries carry event ids that
// are already stored returns them as duplicates (Duplicate=true, their
// stored seqs) without checking c: a retry after an error that left the
// outcome unknown (Retryable) comes back as the original append's
// result, not as a violation caused by the original itself. Entries
// without event ids have no such retry (see Retryable).
func (l *Log) If(c Condition) *Conditional {
	return &Conditional{l: l, cond: c}
}

// Append appends e if the condition holds. See Log.If and Log.Append.
func (c *Conditional) Append(ctx context.Context, e Entry) (Result, error) {
	if err := c.cond.Validate(); err != nil {
		return Result{}, err
	}
	res, err := c.l.appendOwn(ctx, opSingle, []Entry{e}, &c.cond)
	if err != nil {
		return Result{}, err
	}
	return res[0], nil
}

// AppendBatch appends entries in one transaction if the condition holds.
// See Log.If and Log.AppendBatch.
func (c *Conditional) AppendBatch(ctx context.Context, entries []Entry) ([]Result, error) {
	if err := c.cond.Validate(); err != nil {
		return nil, err
	}
	return c.l.appendOwn(ctx, opBatch, entries, &c.cond)
}

// AppendTx appends entries inside the caller's transaction tx if the
// condition holds. See Log.If and Log.AppendTx. On PostgreSQL the
// condition's lock is held until tx ends; locks that tx took in earlier
// statements are held too, outside canonlog's lock order, so a
// transaction that appends more than once may meet a deadlock, which
// PostgreSQL breaks by failing one transaction (40P01, Retryable).
func (c *Conditional) AppendTx(ctx context.Context, tx *sqlx.Tx, entries ...Entry) ([]Result, error) {
	if err := c.cond.Validate(); err != nil {
		return nil, err
	}
	return c.l.appendTx(ctx, tx, entries, &c.cond)
}

// ReadForCondition runs read in a transaction in which every event
// matching match up to the returned Condition's AfterSeq is committed and
// visible, and none after it matches: what read sees of those events (or
// of views derived from them in the same transaction, such as an inline
// projection) is complete. Append the decision taken on it with
// l.If(cond). read may be nil: the Condition then marks the log's
// present.
//
// On PostgreSQL the transaction first takes the condition's lock
// exclusively, which waits for the appends of matching events that have
// inserted but not committed, and keeps new ones out until read returns:
// keep read short. Reads in READ COMMITTED (the default) see each
// statement's fresh snapshot, taken after the lock. On SQLite the
// transaction holds the write lock (BEGIN IMMEDIATE), so writers wait
// for read too.
//
// match is validated as Condition.Match (ErrInvalidCondition); an error
// from read is returned as is.
func (l *Log) ReadForCondition(ctx context.Context, match Filter, read func(ctx context.Context, tx *sqlx.Tx) error) (Condition, error) {
	c := Condition{Match: match}
	if err := c.Validate(); err != nil {
		return Condition{}, err
	}
	err := dbutil.WithTx(ctx, l.db, l.conditionTxOptions(), func(tx *sqlx.Tx) error {
		if l.backend == Postgres {
			names, excl := conditionLocks(c)
			if err := l.takeLocks(ctx, tx, names, excl, nil); err != nil {
				return fmt.Errorf("eventlog: read for a condition: take the condition's lock: %w", err)
			}
		}
		seq, err := l.lastSeq(ctx, tx)
		if err != nil {
			return err
		}
		c.AfterSeq = seq
		if read != nil {
			return read(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return Condition{}, err
	}
	return c, nil
}

// conditionTxOptions returns the options of the transactions canonlog
// begins for a condition: READ COMMITTED on PostgreSQL, whatever the
// server's default, so that each statement takes a new snapshot and
// sees what committed while the condition waited for its locks.
func (l *Log) conditionTxOptions() *sql.TxOptions {
	if l.backend != Postgres {
		return nil
	}
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}

// errIsolation reports whether err is canonlog_append_condition refusing
// a transaction that is not READ COMMITTED.
func errIsolation(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "0A000" && strings.Contains(pqErr.Message, "READ COMMITTED")
}

// maxValueLocks is the most values of one dimension an append locks one
// by one; an append touching more takes the dimension's wide lock
// instead (pglock.AppendWideLock), so that a large batch does not fill
// PostgreSQL's lock table.
const maxValueLocks = 64

// lockDims are the dimensions appends lock, with each entry's value of it.
var lockDims = []struct {
	name  string
	value func(Entry) string
}{
	{"kind", func(e Entry) string { return string(e.Kind) }},
	{"host", func(e Entry) string { return e.HostID }},
	{"rollout", func(e Entry) string { return e.RolloutID }},
}

// appendLocks adds to names and excl the dimension locks an append of
// entries holds: shared on each kind, host and rollout it carries, or,
// for a dimension with more than maxValueLocks values, exclusive on the
// dimension's wide lock.
func appendLocks(entries []preparedEntry, names []string, excl []bool) ([]string, []bool) {
	for _, d := range lockDims {
		var values []string
		for _, e := range entries {
			if v := d.value(e.Entry); v != "" && !slices.Contains(values, v) {
				values = append(values, v)
				if len(values) > maxValueLocks {
					break
				}
			}
		}
		if len(values) > maxValueLocks {
			names, excl = append(names, pglock.AppendWideLock(d.name)), append(excl, true)
			continue
		}
		for _, v := range values {
			names, excl = append(names, pglock.AppendLock(d.name, v)), append(excl, false)
		}
	}
	return names, excl
}

// conditionLocks returns the locks that keep appends matching c out:
// exclusive on the value of the most selective dimension c names (host,
// then rollout, then each kind), shared on that dimension's wide lock.
func conditionLocks(c Condition) (names []string, excl []bool) {
	m := c.Match
	var dim string
	var values []string
	switch {
	case m.HostID != "":
		dim, values = "host", []string{m.HostID}
	case m.RolloutID != "":
		dim, values = "rollout", []string{m.RolloutID}
	default:
		dim = "kind"
		for _, k := range m.Kinds {
			values = append(values, string(k))
		}
	}
	names, excl = append(names, pglock.AppendWideLock(dim)), append(excl, false)
	for _, v := range values {
		names, excl = append(names, pglock.AppendLock(dim, v)), append(excl, true)
	}
	return names, excl
}

// sortedLocks returns names sorted bytewise and distinct, each exclusive
// when any of its occurrences is: the form canonlog_append_condition
// takes them in.
func sortedLocks(names []string, excl []bool) ([]string, []bool) {
	x := make(map[string]bool, len(names))
	for i, n := range names {
		x[n] = x[n] || excl[i]
	}
	sorted := make([]string, 0, len(x))
	for n := range x {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	flags := make([]bool, len(sorted))
	for i, n := range sorted {
		flags[i] = x[n]
	}
	return sorted, flags
}

// takeLocks takes, in one statement and in canonlog's lock order, the
// dimension locks names (exclusive where excl says so), sorted bytewise
// and without repeats, then the hook's shared locks hookLocks. PostgreSQL
// only.
func (l *Log) takeLocks(ctx context.Context, tx *sqlx.Tx, names []string, excl []bool, hookLocks []string) error {
	names, excl = sortedLocks(names, excl)
	for _, h := range hookLocks {
		names, excl = append(names, h), append(excl, false)
	}
	st, err := l.txStmt(ctx, tx, l.q.lockAppend)
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = st.ExecContext(ctx, pq.StringArray(names), pq.BoolArray(excl))
	return err
}

// conditionArgs returns the arguments of canonlog_append_condition for
// an append of entries under c (see conditionCall).
func conditionArgs(c *Condition, entries []preparedEntry) []any {
	names, excl := conditionLocks(*c)
	names, excl = sortedLocks(appendLocks(entries, names, excl))
	orNull := func(a []string) any {
		if len(a) == 0 {
			return nil
		}
		return pq.StringArray(a)
	}
	var kinds []string
	for _, k := range c.Match.Kinds {
		kinds = append(kinds, string(k))
	}
	return []any{pq.StringArray(names), pq.BoolArray(excl), c.AfterSeq,
		nullIfEmpty(c.Match.HostID), nullIfEmpty(c.Match.RolloutID), orNull(kinds),
		orNull(c.Match.PayloadContains), orNull(ownIDs(entries))}
}

// ownIDs returns the distinct event ids of entries.
func ownIDs(entries []preparedEntry) []string {
	var ids []string
	for _, e := range entries {
		if e.EventID != "" && !slices.Contains(ids, e.EventID) {
			ids = append(ids, e.EventID)
		}
	}
	return ids
}

// checkCondition runs in an append's transaction, before its insert: it
// looks for the first event that breaks c, on PostgreSQL after taking
// the condition's and the entries' dimension locks. It returns the
// results to answer with when the append is a retry of one that already
// landed (see Log.If), else nil.
func (l *Log) checkCondition(ctx context.Context, tx *sqlx.Tx, c *Condition, entries []preparedEntry) ([]Result, error) {
	var conflict int64
	if l.backend == Postgres {
		st, err := l.txStmt(ctx, tx, l.q.condition)
		if err != nil {
			return nil, conditionFunctionError(err)
		}
		err = st.QueryRowxContext(ctx, conditionArgs(c, entries)...).Scan(&conflict)
		_ = st.Close()
		if err != nil {
			return nil, conditionFunctionError(err)
		}
	} else {
		m := c.Match
		m.AfterSeq = c.AfterSeq
		where, args, err := m.where(l.backend)
		if err != nil {
			return nil, err
		}
		ids := ownIDs(entries)
		if len(ids) > 0 {
			where += " AND (event_id IS NULL OR event_id NOT IN (?" + strings.Repeat(", ?", len(ids)-1) + "))"
			for _, id := range ids {
				args = append(args, id)
			}
		}
		var found []int64
		if err := sqlx.SelectContext(ctx, tx, &found, l.db.Rebind(`SELECT seq FROM event_log`+where+` ORDER BY seq LIMIT 1`), args...); err != nil {
			return nil, fmt.Errorf("eventlog: append: check the condition: %w", err)
		}
		if len(found) > 0 {
			conflict = found[0]
		}
	}
	if conflict == 0 {
		return nil, nil
	}
	return l.conditionFailed(ctx, tx, c, entries, conflict)
}

// conditionFailed answers an append under c that found conflict: with
// the stored events when the append is a retry of one that landed, else
// with a *ConditionError.
func (l *Log) conditionFailed(ctx context.Context, q sqlx.QueryerContext, c *Condition, entries []preparedEntry, conflict int64) ([]Result, error) {
	res, err := l.storedAlready(ctx, q, entries, ownIDs(entries))
	if err != nil || res != nil {
		return res, err
	}
	return nil, &ConditionError{Seq: conflict, Condition: *c}
}

// conditionFunctionError names a failed call of canonlog_append_condition,
// and says what to do when the schema predates it.
func conditionFunctionError(err error) error {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "42883" { // undefined_function
		return fmt.Errorf("eventlog: append: check the condition: %w (the database's schema predates conditional appends: run canonlog migrate)", err)
	}
	return fmt.Errorf("eventlog: append: check the condition: %w", err)
}

// appendConditionalOne appends e, which has an event id, under c in one
// autocommitted statement (queries.conditionalOne): the shape of
// appendOneStatement, and safe to send again for the same reason.
func (l *Log) appendConditionalOne(ctx context.Context, c *Condition, e preparedEntry) ([]Result, error) {
	st, err := l.stmt(ctx, l.q.conditionalOne)
	if err != nil {
		return nil, conditionFunctionError(err)
	}
	entries := []preparedEntry{e}
	args := append([]any{FormatTime(e.TS), string(e.Kind), e.HostID, e.RolloutID, string(e.Payload), e.EventID},
		conditionArgs(c, entries)...)
	var conflict, seq int64
	if err := st.QueryRowxContext(ctx, args...).Scan(&conflict, &seq); err != nil {
		var pqErr *pq.Error
		switch {
		case errIsolation(err):
			// The server's default isolation is stronger than READ
			// COMMITTED, so the autocommitted statement runs in one
			// snapshot: append in a transaction that sets it, from now on.
			l.conditionalOneOff.Store(true)
			return l.appendInTx(ctx, entries, nil, c)
		case errors.As(err, &pqErr) && pqErr.Code == "42883":
			return nil, conditionFunctionError(err)
		}
		return nil, autocommitError(err)
	}
	switch {
	case conflict > 0:
		return l.conditionFailed(ctx, l.db, c, entries, conflict)
	case seq == 0:
		// ON CONFLICT skipped it: the event id is stored.
		results := make([]Result, 1)
		if err := l.resolveDuplicates(ctx, l.db, entries, []int64{0}, []int{0}, results); err != nil {
			return nil, err
		}
		return results, nil
	}
	return []Result{{Event: Event{Seq: seq, Kind: e.Kind, TS: e.TS, HostID: e.HostID,
		RolloutID: e.RolloutID, Payload: e.Payload, EventID: e.EventID}}}, nil
}

// storedAlready returns the results of entries as duplicates when every
// one of them carries an event id (ids, distinct) that is already
// stored; nil otherwise.
func (l *Log) storedAlready(ctx context.Context, q sqlx.QueryerContext, entries []preparedEntry, ids []string) ([]Result, error) {
	if len(ids) == 0 || slices.ContainsFunc(entries, func(e preparedEntry) bool { return e.EventID == "" }) {
		return nil, nil
	}
	query, args, err := sqlx.In(`SELECT COUNT(*) FROM event_log WHERE event_id IN (?)`, ids)
	if err != nil {
		return nil, err
	}
	var n int
	if err := q.QueryRowxContext(ctx, l.db.Rebind(query), args...).Scan(&n); err != nil {
		return nil, fmt.Errorf("eventlog: append: look up event ids: %w", err)
	}
	if n != len(ids) {
		return nil, nil
	}
	results := make([]Result, len(entries))
	dupIdx := make([]int, len(entries))
	for i := range dupIdx {
		dupIdx[i] = i
	}
	if err := l.resolveDuplicates(ctx, q, entries, make([]int64, len(entries)), dupIdx, results); err != nil {
		return nil, err
	}
	return results, nil
}
