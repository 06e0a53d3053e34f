package eventlog

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/canonlog/canonlog/internal/dbutil"
)

// Result is the outcome of appending one entry.
type Result struct {
	// Event is the stored event: for a new entry, as just written (seq
	// assigned, timestamp as stored); for a duplicate, the event stored when
	// its event id first landed.
	Event Event
	// Duplicate reports that the entry's event id was already stored, so
	// nothing was written and no projection ran.
	Duplicate bool
}

// Append appends one entry in a transaction of its own, together with the
// hook's writes. See AppendTx for the rules.
func (l *Log) Append(ctx context.Context, e Entry) (Result, error) {
	res, err := l.appendOwn(ctx, opSingle, []Entry{e}, nil)
	if err != nil {
		return Result{}, err
	}
	return res[0], nil
}

// AppendBatch appends entries in one transaction: all of them and the
// hook's writes commit together, or nothing does. On PostgreSQL the rows
// go in with one COPY. See AppendTx for the rules.
func (l *Log) AppendBatch(ctx context.Context, entries []Entry) ([]Result, error) {
	return l.appendOwn(ctx, opBatch, entries, nil)
}

// appendOwn appends entries in a transaction of their own, under cond
// when it is not nil, as operation op of the log's telemetry, and wakes
// the followers of the kinds it stored.
func (l *Log) appendOwn(ctx context.Context, op string, entries []Entry, cond *Condition) ([]Result, error) {
	if l.tel == nil {
		return l.appendAndWake(ctx, entries, cond)
	}
	return l.observed(ctx, op, len(entries), func(ctx context.Context) ([]Result, error) {
		return l.appendAndWake(ctx, entries, cond)
	})
}

// appendAndWake appends entries in a transaction of their own and wakes
// the followers of the kinds it stored.
func (l *Log) appendAndWake(ctx context.Context, entries []Entry, cond *Condition) ([]Result, error) {
	res, err := l.appendBatch(ctx, entries, cond)
	if kinds := appendedKinds(res); err == nil && len(kinds) > 0 {
		l.wake.appended(kinds)
	}
	return res, err
}

// appendedKinds returns the kinds of the events res stored, nil when it
// stored none.
func appendedKinds(res []Result) []Kind {
	var kinds []Kind
	for _, r := range res {
		if !r.Duplicate && !slices.Contains(kinds, r.Event.Kind) {
			kinds = append(kinds, r.Event.Kind)
		}
	}
	return kinds
}

// appendBatch appends entries in a transaction of its own, under cond
// when it is not nil.
func (l *Log) appendBatch(ctx context.Context, entries []Entry, cond *Condition) ([]Result, error) {
	prepared, err := l.prepare(entries)
	if err != nil || len(prepared) == 0 {
		return nil, err
	}
	// Prepare the insert before the transaction takes a connection: with a
	// one-connection pool (sqlite::memory:) preparing inside it would wait
	// for itself.
	locks := l.sharedLocks(prepared)
	autocommit := l.autocommitShape(prepared, locks)
	switch {
	case autocommit && cond != nil && prepared[0].EventID != "" && l.q.conditionalOne != "" && !l.conditionalOneOff.Load():
		return l.appendConditionalOne(ctx, cond, prepared[0])
	case autocommit && cond == nil && prepared[0].EventID == "":
		return l.appendTwoMessages(ctx, prepared[0])
	}
	autocommit = autocommit && cond == nil
	queries := l.insertQueries(len(prepared), len(locks))
	if cond != nil && l.q.condition != "" {
		queries = append(queries, l.q.condition)
	}
	for _, query := range queries {
		if _, err := l.stmt(ctx, query); err != nil {
			if query == l.q.condition {
				return nil, conditionFunctionError(err)
			}
			return nil, fmt.Errorf("eventlog: append: %w", err)
		}
	}
	if autocommit {
		return l.appendOneStatement(ctx, prepared[0])
	}
	return l.appendInTx(ctx, prepared, locks, cond)
}

// appendInTx appends prepared entries in a transaction of its own, under
// cond when it is not nil (in READ COMMITTED: see conditionTxOptions).
func (l *Log) appendInTx(ctx context.Context, prepared []preparedEntry, locks []string, cond *Condition) ([]Result, error) {
	var opts *sql.TxOptions
	if cond != nil {
		opts = l.conditionTxOptions()
	}
	var res []Result
	err := dbutil.WithTx(ctx, l.db, opts, func(tx *sqlx.Tx) error {
		var err error
		res, err = l.appendPrepared(ctx, tx, prepared, locks, true, cond)
		return err
	})
	if err != nil {
		return nil, outcomeError(err)
	}
	return res, nil
}

// hookWants reports whether the hook is to see events: there is one, and
// unless it is a SelectiveHook, it consumes at least one of them.
func (l *Log) hookWants(events []Event) bool {
	if l.hook == nil {
		return false
	}
	sh, ok := l.hook.(SelectiveHook)
	return !ok || slices.ContainsFunc(events, func(ev Event) bool { return sh.Consumes(ev.Kind) })
}

// autocommitShape reports whether an append of entries needs no
// transaction of database/sql's: on PostgreSQL, a single entry, with
// SerializeAppends off, of a kind the hook does not consume (no hook, or a
// SelectiveHook that does not want it) and that takes no shared lock.
//
// With an event id it then runs as one autocommitted INSERT
// (appendOneStatement): one round trip instead of three (BEGIN, INSERT,
// COMMIT). The event id is what makes that safe. database/sql sends a
// statement again, on another connection, when the driver reports the
// first one bad, and lib/pq does so also when the server closed the
// connection after receiving the statement (io.EOF), which may have
// committed it. A transaction's statement is never sent again; an
// autocommitted one is, and without an event id it could store the event
// twice. With one, the second attempt finds the first's event and reports
// it as a duplicate, at its seq.
//
// Without an event id it runs as two messages on one connection
// (appendTwoMessages): two round trips.
func (l *Log) autocommitShape(entries []preparedEntry, locks []string) bool {
	if l.backend != Postgres || len(entries) != 1 || l.serialize || len(locks) > 0 {
		return false
	}
	if l.hook == nil {
		return true
	}
	sh, ok := l.hook.(SelectiveHook)
	return ok && !sh.Consumes(entries[0].Kind)
}

// appendOneStatement appends e, which has an event id, with one
// autocommitted INSERT (see autocommitShape). A duplicate event id costs a second statement, which
// reads the stored event.
func (l *Log) appendOneStatement(ctx context.Context, e preparedEntry) ([]Result, error) {
	st, err := l.stmt(ctx, l.q.insertOne)
	if err != nil {
		return nil, fmt.Errorf("eventlog: append: %w", err)
	}
	var seq int64
	err = st.QueryRowxContext(ctx, FormatTime(e.TS), string(e.Kind), e.HostID, e.RolloutID, string(e.Payload), e.EventID).Scan(&seq)
	switch {
	case err == nil:
		return []Result{{Event: Event{Seq: seq, Kind: e.Kind, TS: e.TS, HostID: e.HostID,
			RolloutID: e.RolloutID, Payload: e.Payload, EventID: e.EventID}}}, nil
	case errors.Is(err, sql.ErrNoRows):
		// ON CONFLICT skipped it: the event id is stored.
		results := make([]Result, 1)
		if err := l.resolveDuplicates(ctx, l.db, []preparedEntry{e}, []int64{0}, []int{0}, results); err != nil {
			return nil, err
		}
		return results, nil
	}
	return nil, autocommitError(err)
}

// appendTwoMessages appends e, which has no event id, in two round trips
// on one connection (see autocommitShape): "BEGIN; SELECT <locks>; INSERT
// … RETURNING seq" with e's values quoted in (a message with parameters
// may hold one statement), then COMMIT. The first message commits nothing:
// when its connection fails, the server rolls it back with the connection,
// so it is sent again on another one, as database/sql sends a BEGIN again;
// on PostgreSQL's refusal the connection is closed, not returned to the
// pool inside a failed transaction. Only a COMMIT whose answer was lost
// leaves the outcome unknown, as in any transaction.
func (l *Log) appendTwoMessages(ctx context.Context, e preparedEntry) ([]Result, error) {
	var msg strings.Builder
	msg.WriteString("BEGIN;\n")
	skip := 0 // result sets before the insert's
	if l.dimensionLocks {
		// The dimension locks in insertOne's order, before the insert
		// draws the row's seq. The server parses and plans this message
		// on every call, and a statement of their own costs it less than
		// insertOne's subquery and INSERT … SELECT (docs/performance.md,
		// "Against the peers").
		var locks []string
		for _, d := range []struct{ dim, value string }{{"host", e.HostID}, {"kind", string(e.Kind)}, {"rollout", e.RolloutID}} {
			if d.value != "" {
				locks = append(locks, dimLockShared(pq.QuoteLiteral(d.value), d.dim))
			}
		}
		msg.WriteString("SELECT " + strings.Join(locks, ", ") + ";\n")
		skip = 1
	}
	msg.WriteString("INSERT INTO event_log (ts, kind, host_id, rollout_id, payload) VALUES (")
	msg.WriteString(pq.QuoteLiteral(FormatTime(e.TS)) + "::timestamptz, " + pq.QuoteLiteral(string(e.Kind)) + "::text, ")
	for _, v := range []string{e.HostID, e.RolloutID} {
		if v == "" {
			msg.WriteString("NULL, ")
		} else {
			msg.WriteString(pq.QuoteLiteral(v) + "::text, ")
		}
	}
	msg.WriteString(pq.QuoteLiteral(string(e.Payload)) + "::json) RETURNING seq")
	// As database/sql tries a statement: twice on any connection, then on
	// a new one.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		conn, err := l.db.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("eventlog: append: %w: %w", dbutil.ErrBegin, err)
		}
		seq, err := queryLastSeq(ctx, conn, msg.String(), skip)
		if err != nil {
			dbutil.Discard(conn)
			if errors.Is(err, driver.ErrBadConn) && attempt < attempts {
				continue
			}
			return nil, fmt.Errorf("eventlog: append: %w", err)
		}
		if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
			dbutil.Discard(conn)
			return nil, outcomeError(&dbutil.CommitError{Err: err})
		}
		_ = conn.Close() // committed: the event is stored
		return []Result{{Event: Event{Seq: seq, Kind: e.Kind, TS: e.TS, HostID: e.HostID,
			RolloutID: e.RolloutID, Payload: e.Payload}}}, nil
	}
}

// queryLastSeq sends query, a message of several statements, on conn,
// and returns the seq in the one row of its result set after the first
// skip ones, whose rows it discards.
func queryLastSeq(ctx context.Context, conn *sql.Conn, query string, skip int) (int64, error) {
	rows, err := conn.QueryContext(ctx, query)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	for range skip {
		for rows.Next() {
		}
		if !rows.NextResultSet() {
			if err := rows.Err(); err != nil {
				return 0, err
			}
			return 0, errors.New("the insert returned no result")
		}
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, err
		}
		return 0, sql.ErrNoRows
	}
	var seq int64
	if err := rows.Scan(&seq); err != nil {
		return 0, err
	}
	return seq, rows.Close()
}

// autocommitError says what a caller must know of a failed autocommitted
// append: when its answer was lost with the connection, the statement,
// its own transaction, may have committed, as a lost COMMIT may have.
// The server's refusal, a bad connection (database/sql's word for one
// that failed before the statement was sent, which it retried) and a
// failed dial leave no doubt.
func autocommitError(err error) error {
	var (
		pqErr *pq.Error
		opErr *net.OpError
	)
	unsent := errors.As(err, &pqErr) || errors.Is(err, driver.ErrBadConn) || (errors.As(err, &opErr) && opErr.Op == "dial")
	if !unsent && Retryable(err) {
		return fmt.Errorf("eventlog: append: autocommitted insert: %w (the append may have committed: retry with the same event ids)", err)
	}
	return fmt.Errorf("eventlog: append: %w", err)
}

// outcomeError names a failed BEGIN or COMMIT as an append's, and says
// what a caller must know of a COMMIT whose answer was lost: the events may
// be stored, so only a retry with the same event ids is safe.
func outcomeError(err error) error {
	var ce *dbutil.CommitError
	switch {
	case errors.As(err, &ce) && Retryable(err):
		return fmt.Errorf("eventlog: append: %w (the append may have committed: retry with the same event ids)", err)
	case errors.As(err, &ce), errors.Is(err, dbutil.ErrBegin):
		return fmt.Errorf("eventlog: append: %w", err)
	}
	return err
}

// AppendTx appends entries inside the caller's transaction tx, so that they
// commit (or roll back) together with the caller's own writes. The hook runs
// in tx too.
//
// Every entry is validated before anything is written: a malformed entry
// fails the whole call with an *EntryError and writes nothing. Entries get
// increasing seqs in the order given. An entry whose EventID is already
// stored (or appears earlier in the same call) is a duplicate: its Result
// carries the stored event and Duplicate=true, nothing is written for it and
// the hook does not see it. If the duplicate's kind, host, rollout, payload,
// or explicitly set TS differ from the stored event's, the call fails with a
// *ConflictError instead.
//
// On error tx may hold part of the work: roll it back. After committing
// tx, call WakeFollowers so that consumers waiting for wake-ups read the
// new events at once rather than at their next poll.
func (l *Log) AppendTx(ctx context.Context, tx *sqlx.Tx, entries ...Entry) ([]Result, error) {
	return l.appendTx(ctx, tx, entries, nil)
}

// appendTx appends entries in tx, under cond when it is not nil, as
// operation tx of the log's telemetry.
func (l *Log) appendTx(ctx context.Context, tx *sqlx.Tx, entries []Entry, cond *Condition) ([]Result, error) {
	if l.tel == nil {
		return l.appendInCallerTx(ctx, tx, entries, cond)
	}
	return l.observed(ctx, opTx, len(entries), func(ctx context.Context) ([]Result, error) {
		return l.appendInCallerTx(ctx, tx, entries, cond)
	})
}

// appendInCallerTx validates entries and appends them in the caller's tx.
func (l *Log) appendInCallerTx(ctx context.Context, tx *sqlx.Tx, entries []Entry, cond *Condition) ([]Result, error) {
	prepared, err := l.prepare(entries)
	if err != nil || len(prepared) == 0 {
		return nil, err
	}
	return l.appendPrepared(ctx, tx, prepared, l.sharedLocks(prepared), false, cond)
}

// preparedEntry is a validated entry as it will be stored.
type preparedEntry struct {
	Entry
	explicitTS bool
}

func (l *Log) prepare(entries []Entry) ([]preparedEntry, error) {
	out := make([]preparedEntry, len(entries))
	for i, e := range entries {
		p, err := e.prepare(i, l.clock, l.maxPayload)
		if err != nil {
			return nil, err
		}
		out[i] = preparedEntry{Entry: p, explicitTS: !e.TS.IsZero()}
	}
	return out, nil
}

// appendPrepared appends validated entries in tx, taking locks (the hook's
// shared locks, from sharedLocks) in the insert. ownTx says that tx is
// the append's own, with nothing written before it. A non-nil cond is
// checked first (checkCondition).
func (l *Log) appendPrepared(ctx context.Context, tx *sqlx.Tx, entries []preparedEntry, locks []string, ownTx bool, cond *Condition) ([]Result, error) {
	if l.serialize && l.q.serialize != "" {
		if _, err := tx.ExecContext(ctx, l.q.serialize); err != nil {
			return nil, fmt.Errorf("eventlog: take the append lock: %w", err)
		}
	}
	if cond != nil {
		res, err := l.checkCondition(ctx, tx, cond, entries)
		if err != nil || res != nil {
			return res, err
		}
	}
	seqs, err := l.insert(ctx, tx, entries, locks, ownTx)
	if err != nil {
		return nil, fmt.Errorf("eventlog: append: %w", err)
	}
	results := make([]Result, len(entries))
	var dupIdx []int
	fresh := make([]Event, 0, len(entries))
	for i, e := range entries {
		if seqs[i] == 0 {
			dupIdx = append(dupIdx, i)
			continue
		}
		ev := Event{Seq: seqs[i], Kind: e.Kind, TS: e.TS, HostID: e.HostID,
			RolloutID: e.RolloutID, Payload: e.Payload, EventID: e.EventID}
		results[i] = Result{Event: ev}
		fresh = append(fresh, ev)
	}
	if len(dupIdx) > 0 {
		if err := l.resolveDuplicates(ctx, tx, entries, seqs, dupIdx, results); err != nil {
			return nil, err
		}
	}
	if len(fresh) > 0 && l.hookWants(fresh) {
		if err := l.hook.AfterAppend(ctx, tx, fresh); err != nil {
			return nil, err
		}
	}
	return results, nil
}

// insertQueries returns the statements that insert n entries taking
// nLocks shared locks: all of them but the COPY, which cannot be prepared
// ahead, and the ON CONFLICT fallback, rarely needed.
func (l *Log) insertQueries(n, nLocks int) []string {
	switch {
	case l.backend != Postgres:
		return []string{l.q.insertOne}
	case n > 1:
		return []string{l.q.lockAppend, l.q.copiedSeqs}
	default:
		return []string{l.q.insertOneLocked(nLocks)}
	}
}

// sharedLocks returns the advisory locks a LockingHook needs for entries,
// on PostgreSQL; nil otherwise.
func (l *Log) sharedLocks(entries []preparedEntry) []string {
	lh, ok := l.hook.(LockingHook)
	if !ok || l.backend != Postgres {
		return nil
	}
	kinds := make([]Kind, 0, 1)
	for _, e := range entries {
		if !slices.Contains(kinds, e.Kind) {
			kinds = append(kinds, e.Kind)
		}
	}
	return lh.SharedLocks(kinds)
}

// txStmt returns query as a statement of tx: the log's prepared statement
// when Append or AppendBatch already prepared it, else one prepared on tx
// alone (never on the pool, whose connections tx may hold all of).
func (l *Log) txStmt(ctx context.Context, tx *sqlx.Tx, query string) (*sqlx.Stmt, error) {
	l.stmtMu.Lock()
	s, ok := l.stmts[query]
	l.stmtMu.Unlock()
	if ok {
		return tx.StmtxContext(ctx, s), nil
	}
	return tx.PreparexContext(ctx, query)
}

// insert writes entries and returns, per entry, its new seq or 0 when its
// event id was already taken.
func (l *Log) insert(ctx context.Context, tx *sqlx.Tx, entries []preparedEntry, locks []string, ownTx bool) ([]int64, error) {
	seqs := make([]int64, len(entries))
	if l.backend == Postgres && len(entries) > 1 {
		return seqs, l.insertBatchPostgres(ctx, tx, entries, locks, seqs, ownTx)
	}
	st, err := l.txStmt(ctx, tx, l.insertQueries(len(entries), len(locks))[0])
	if err != nil {
		return nil, err
	}
	// Releases a statement prepared on tx alone at once (a long AppendTx
	// loop would otherwise keep one per call until commit); for the log's
	// own prepared statement it only drops tx's binding.
	defer st.Close()
	// Only PostgreSQL single inserts carry locks (one column each).
	dest := make([]any, 1+len(locks))
	for i := 1; i < len(dest); i++ {
		dest[i] = new(sql.RawBytes)
	}
	for i, e := range entries {
		args := []any{FormatTime(e.TS), string(e.Kind), e.HostID, e.RolloutID, string(e.Payload), e.EventID}
		for _, name := range locks {
			args = append(args, name)
		}
		rows, err := st.QueryContext(ctx, args...)
		if err == nil {
			if rows.Next() {
				dest[0] = &seqs[i]
				err = rows.Scan(dest...)
			}
			if cerr := rows.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = rows.Err()
			}
		}
		if err != nil {
			if e.EventID != "" && storedEventIDRefused(err) {
				continue // a duplicate: seqs[i] stays 0
			}
			return nil, err
		}
	}
	return seqs, nil
}

// insertBatchPostgres writes a batch with COPY, PostgreSQL's fastest way
// in: it takes the hook's shared locks, copies the rows (the database
// assigns their seqs: the schema refuses explicit ones) and reads back the
// seqs they got. COPY cannot skip a duplicate event id, so a batch carrying
// event ids runs under a savepoint, and on a unique violation it rolls back
// to it and inserts with the ON CONFLICT statement instead (leaving a gap in
// seqs, as any rollback does).
func (l *Log) insertBatchPostgres(ctx context.Context, tx *sqlx.Tx, entries []preparedEntry, locks []string, seqs []int64, ownTx bool) error {
	// The dimension locks and the hook's shared locks, before the COPY,
	// as the single insert takes them in its own statement: a conditional
	// append or a rebuild holding one exclusively keeps the batch out
	// until it is done.
	var names []string
	var excl []bool
	if l.dimensionLocks {
		names, excl = appendLocks(entries, nil, nil)
	}
	if len(names) > 0 || len(locks) > 0 {
		if err := l.takeLocks(ctx, tx, names, excl, locks); err != nil {
			return err
		}
	}
	withIDs := slices.ContainsFunc(entries, func(e preparedEntry) bool { return e.EventID != "" })
	if withIDs {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT canonlog_copy`); err != nil {
			return err
		}
	}
	// In a transaction of its own the COPY's rows are the only ones of
	// the transaction, and the read-back costs them alone with no floor:
	// the extra round trip is for AppendTx, whose caller may have
	// written many rows before (see copiedSeqs).
	var floor int64
	if !ownTx {
		if err := tx.QueryRowxContext(ctx, l.q.seqFloor).Scan(&floor); err != nil {
			return err
		}
	}
	err := copyEntries(ctx, tx, entries)
	var pqErr *pq.Error
	switch {
	case err == nil:
		if withIDs {
			if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT canonlog_copy`); err != nil {
				return err
			}
		}
		return l.copiedSeqs(ctx, tx, floor, seqs)
	case withIDs && errors.As(err, &pqErr) && pqErr.Code == "23505":
		// The locks were taken before the savepoint, so they are still held.
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT canonlog_copy`); err != nil {
			return err
		}
		return l.insertBatchOnConflict(ctx, tx, entries, seqs)
	default:
		return err
	}
}

// copyEntries COPYs entries into event_log; the database assigns seq and
// tx_id.
func copyEntries(ctx context.Context, tx *sqlx.Tx, entries []preparedEntry) error {
	st, err := tx.PrepareContext(ctx, `COPY event_log (ts, kind, host_id, rollout_id, payload, event_id) FROM STDIN`)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, err := st.ExecContext(ctx, FormatTime(e.TS), string(e.Kind),
			nullIfEmpty(e.HostID), nullIfEmpty(e.RolloutID), string(e.Payload), nullIfEmpty(e.EventID)); err != nil {
			_ = st.Close()
			return err
		}
	}
	if _, err := st.ExecContext(ctx); err != nil {
		_ = st.Close()
		return err
	}
	return st.Close()
}

// copiedSeqs fills seqs with the seqs a COPY of len(seqs) rows just got, in
// the rows' order. floor is the sequence's last value read before the
// COPY: every seq the COPY drew is above it, unless the sequence hands
// out cached values (ALTER SEQUENCE … CACHE n, n > 1), which can be lower
// than another session's; the read is then repeated without the floor.
func (l *Log) copiedSeqs(ctx context.Context, tx *sqlx.Tx, floor int64, seqs []int64) error {
	st, err := l.txStmt(ctx, tx, l.q.copiedSeqs)
	if err != nil {
		return err
	}
	defer st.Close()
	var got []int64
	if err := st.SelectContext(ctx, &got, floor, len(seqs)); err != nil {
		return err
	}
	if len(got) != len(seqs) && floor > 0 {
		got = got[:0]
		if err := st.SelectContext(ctx, &got, 0, len(seqs)); err != nil {
			return err
		}
	}
	if len(got) != len(seqs) {
		return fmt.Errorf("copied %d rows but found %d of them", len(seqs), len(got))
	}
	for i, seq := range got {
		seqs[len(seqs)-1-i] = seq
	}
	return nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// insertBatchOnConflict inserts a batch with one statement that skips
// event ids already stored (or repeated within the batch). The statement
// returns the inserted rows in seq order, which is the entries' order (see
// queriesFor); an entry was inserted when it has no event id, or when it is
// the first in the batch with its event id and that id came back.
func (l *Log) insertBatchOnConflict(ctx context.Context, tx *sqlx.Tx, entries []preparedEntry, seqs []int64) error {
	st, err := l.txStmt(ctx, tx, l.q.insertBatch)
	if err != nil {
		return err
	}
	defer st.Close()
	n := len(entries)
	ts, kinds, hosts, rollouts, payloads, ids := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, e := range entries {
		ts[i], kinds[i], hosts[i], rollouts[i], payloads[i], ids[i] = FormatTime(e.TS), string(e.Kind), e.HostID, e.RolloutID, string(e.Payload), e.EventID
	}
	rows, err := st.QueryContext(ctx,
		pq.StringArray(ts), pq.StringArray(kinds), pq.StringArray(hosts),
		pq.StringArray(rollouts), pq.StringArray(payloads), pq.StringArray(ids))
	if err != nil {
		return err
	}
	defer rows.Close()
	type inserted struct {
		seq     int64
		eventID string
	}
	var got []inserted
	landed := make(map[string]bool)
	for rows.Next() {
		var r inserted
		if err := rows.Scan(&r.seq, &r.eventID); err != nil {
			return err
		}
		got = append(got, r)
		if r.eventID != "" {
			landed[r.eventID] = true
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	next := 0
	for i, e := range entries {
		if e.EventID != "" {
			if !landed[e.EventID] {
				continue // stored before, or earlier in this batch
			}
			landed[e.EventID] = false
		}
		// Guards the ordering argument in queriesFor: never hand out seqs
		// that disagree with the entries' order.
		if next >= len(got) || got[next].eventID != e.EventID {
			return fmt.Errorf("batch insert returned rows out of entry order")
		}
		seqs[i] = got[next].seq
		next++
	}
	if next != len(got) {
		return fmt.Errorf("batch insert returned %d rows for %d inserted entries", len(got), next)
	}
	return nil
}

// resolveDuplicates fills results[i] for every entry i in dupIdx with the
// stored event owning its event id, or fails when the content differs.
// seqs are the seqs this call inserted (0 for the duplicates).
func (l *Log) resolveDuplicates(ctx context.Context, q sqlx.QueryerContext, entries []preparedEntry, seqs []int64, dupIdx []int, results []Result) error {
	ids := make([]string, 0, len(dupIdx))
	for _, i := range dupIdx {
		ids = append(ids, entries[i].EventID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	query, args, err := sqlx.In(`SELECT `+eventColumns+` FROM event_log WHERE event_id IN (?)`, ids)
	if err != nil {
		return fmt.Errorf("eventlog: look up duplicates: %w", err)
	}
	rows, err := q.QueryxContext(ctx, l.db.Rebind(query), args...)
	if err != nil {
		return fmt.Errorf("eventlog: look up duplicates: %w", err)
	}
	stored := make(map[string]Event, len(ids))
	for rows.Next() {
		var ev Event
		if err := scanEvent(rows, &ev); err != nil {
			rows.Close()
			return fmt.Errorf("eventlog: look up duplicates: %w", err)
		}
		stored[ev.EventID] = ev
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("eventlog: look up duplicates: %w", err)
	}
	for _, i := range dupIdx {
		e := entries[i]
		ev, ok := stored[e.EventID]
		if !ok {
			// ON CONFLICT saw a row this transaction cannot read: only
			// possible under REPEATABLE READ or SERIALIZABLE.
			return fmt.Errorf("eventlog: entry %d: event id %q is held by a transaction this one cannot see; retry the append", i, e.EventID)
		}
		if same, field := sameContent(ev, e.Entry, e.explicitTS); !same {
			if j := slices.Index(seqs, ev.Seq); j >= 0 {
				// The owner is an earlier entry of this call, which this
				// error fails as a whole: its seq is never stored, and on
				// SQLite the next append takes it. Name the entry instead.
				return &ConflictError{Index: i, EventID: e.EventID, OtherIndex: j, Field: field}
			}
			return &ConflictError{Index: i, EventID: e.EventID, Seq: ev.Seq, Field: field}
		}
		results[i] = Result{Event: ev, Duplicate: true}
	}
	return nil
}

// sqliteStoredEventID is the message of the SQLite trigger
// event_log_no_overwrite (migrations/sqlite/00003_event_log_no_overwrite.sql)
// for an insert of a stored event id.
const sqliteStoredEventID = "event_log is append-only: INSERT over a stored event_id refused"

// storedEventIDRefused reports whether err is SQLite's insert trigger
// refusing a stored event id. The trigger refuses it before ON CONFLICT
// DO NOTHING can skip the row, so that INSERT OR REPLACE cannot overwrite
// an event; for an append it means what a skipped row would: a duplicate.
// The refusal aborts only the statement, not the transaction. Asking the
// database instead (INSERT … SELECT … WHERE NOT EXISTS) made SQLite batch
// appends about 8% slower than reading the refusal: an INSERT whose SELECT
// reads its own table goes through a temporary table.
func storedEventIDRefused(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_TRIGGER &&
		strings.Contains(se.Error(), sqliteStoredEventID)
}
