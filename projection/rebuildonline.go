package projection

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"modernc.org/sqlite"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
	"github.com/canonlog/canonlog/internal/pglock"
)

// Phase names a step of a rebuild, as Progress reports it.
type Phase string

// The phases of a rebuild. An offline rebuild has one, PhaseReplay; an
// online rebuild goes through PhaseBuild, PhaseCatchUp and PhaseSwap.
const (
	// PhaseReplay is the offline rebuild's replay, under the projection's
	// exclusive lock.
	PhaseReplay Phase = "replay"
	// PhaseBuild replays the events committed before the rebuild began
	// into a copy of the projection's tables, beside the live ones.
	PhaseBuild Phase = "build"
	// PhaseCatchUp applies to the copy the events committed since.
	PhaseCatchUp Phase = "catch-up"
	// PhaseSwap takes the projection's exclusive lock, applies the last
	// events and puts the copy in place of the live tables.
	PhaseSwap Phase = "swap"
)

// Online rebuild tuning.
const (
	// catchUpRounds bounds the catch-up rounds before the swap: a log
	// appended to faster than the rebuild applies never lets the delta
	// shrink, and the swap then takes whatever is left.
	catchUpRounds = 10
	// catchUpShort is a round short enough that the swap, which applies
	// about as much as one more round would, holds the lock about as
	// long.
	catchUpShort = 50 * time.Millisecond
	// catchUpRoundMax bounds a round that does not catch up: appends
	// arrive faster than the rebuild applies them.
	catchUpRoundMax = 5 * time.Second
	// swapLockTimeout bounds each wait for a lock in the swap (the
	// projection's own lock, and the live tables' locks, which readers
	// hold while they query them). A swap that times out rolls back and
	// is tried again after another catch-up round, so a long query on the
	// view delays the swap without making every append queue behind it.
	swapLockTimeout = 2 * time.Second
	// swapAttempts bounds those tries.
	swapAttempts = 5
	// foreignKeyLockTimeout bounds each wait to add a foreign key to the
	// copy: appends of every kind queue behind it.
	foreignKeyLockTimeout = 100 * time.Millisecond
	// foreignKeyRetry is the pause between those tries.
	foreignKeyRetry = 200 * time.Millisecond
	// dropLockTimeout, dropRetry and dropAttempts bound the waits of
	// dropRebuildSchemas in a rebuild (Migrate tries once): every append
	// and read of the log queues behind them.
	dropLockTimeout = 100 * time.Millisecond
	dropRetry       = 200 * time.Millisecond
	dropAttempts    = 50
)

// rebuildLock names the session lock an online rebuild holds on
// PostgreSQL from start to end: a second rebuild of the projection waits
// for it, and Status tells a running rebuild's shadow schema from one a
// killed rebuild left behind.
func rebuildLock(name string) string { return "canonlog:rebuild:" + name }

// shadowSchema names the schema in which an online rebuild of projection
// builds its tables on PostgreSQL, beside the live schema. It begins with
// the live schema's name when that fits, so that whoever looks at the
// server sees whose it is.
func shadowSchema(schema, projection string) string {
	return rebuildSchema(schema, "rebuild", projection)
}

// retiredSchema names the schema to which the swap moves the old tables,
// dropped right after.
func retiredSchema(schema, projection string) string {
	return rebuildSchema(schema, "retired", projection)
}

func rebuildSchema(schema, role, projection string) string {
	const maxIdent = 63
	if s := schema + "__" + role + "_" + projection; len(s) <= maxIdent {
		return s
	}
	sum := sha256.Sum256([]byte(schema + "." + projection))
	h := hex.EncodeToString(sum[:8])
	if s := schema + "__" + role + "_" + h; len(s) <= maxIdent {
		return s
	}
	return "canonlog_" + role + "_" + h
}

// onlineRebuildBlocker tells why e cannot be rebuilt online on d: "" when
// it can. Online rebuilds need the projection's tables (Tabler), named
// unqualified, so that its SQL writes the copy when the copy's schema
// comes first; and a pool that can lend a connection while others work.
func onlineRebuildBlocker(log *eventlog.Log, e *registered) ([]string, string) {
	tables, ok := onlineTables(e)
	switch {
	case !ok:
		return nil, "it does not list its tables by unqualified names (Tabler)"
	case log.DB().Stats().MaxOpenConnections == 1:
		return nil, "the database pool holds one connection"
	}
	return tables, ""
}

// rebuildOnline rebuilds e beside its live tables while appends go on,
// then swaps the new tables in (docs/projections.md, "Online rebuilds").
// It returns errOffline wrapped with a reason when a table of e has
// something the copy cannot carry over; the caller then rebuilds
// offline.
func rebuildOnline(ctx context.Context, log *eventlog.Log, d eventlog.Backend, e *registered, tables []string, o RebuildOptions) (RebuildResult, error) {
	// SQLite's online rebuild never reads ahead (sqliteBuilder.build).
	res := RebuildResult{Name: e.name, Version: e.p.Version(), Rows: -1, Online: true, Gentle: o.Gentle || d != eventlog.Postgres}
	conn, err := liveConn(ctx, log.DB())
	if err != nil {
		return res, err
	}
	// The connection's search path (PostgreSQL) or temporary tables
	// (SQLite) are the rebuild's: it never goes back to the pool.
	defer func() {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		_ = conn.Close()
	}()
	var b builder
	if d == eventlog.Postgres {
		b = &pgBuilder{db: log.DB(), conn: conn, e: e, tables: tables, gentle: o.Gentle}
	} else {
		b = &sqliteBuilder{conn: conn, e: e, tables: tables}
	}
	if err := b.prepare(ctx); err != nil {
		return res, err
	}
	defer b.cleanup()
	if pb, ok := b.(*pgBuilder); ok {
		res.UncheckedKeys = pb.uncheckedKeys
	}

	var total int64
	if o.Progress != nil {
		if total, err = log.Count(ctx, e.filter()); err != nil {
			return res, fmt.Errorf("projection %s: %w", e.name, err)
		}
	}
	var (
		lastPhase Phase
		lastWrite time.Time
	)
	report := func(phase Phase, round int) {
		// Status reads it from the database: write it when the phase
		// changes, and once a second at most within one. Written first,
		// so that Status shows at least the phase that Progress reports.
		if phase != lastPhase || time.Since(lastWrite) >= time.Second {
			b.progress(ctx, phase, res.Events, max(total, res.Events))
			lastPhase, lastWrite = phase, time.Now()
		}
		if o.Progress != nil {
			o.Progress(Progress{Projection: e.name, Phase: phase, Round: round, Done: res.Events, Total: max(total, res.Events)})
		}
	}
	// The build is reported before its start position is taken, once the
	// copy is ready: on PostgreSQL preparing it takes a lock on event_log
	// (its foreign keys) that waits for every append in flight, so this
	// is the first moment an append can be held open across the start.
	// What commits before the position is built, the rest caught up.
	report(PhaseBuild, 0)
	start, err := log.PositionAtHead(ctx)
	if err != nil {
		return res, err
	}

	// Build: the events committed before start, read page by page without
	// a transaction held open, each page written in a short transaction.
	opts := e.readOptions(o.BatchSize)
	opts.Before = &start
	if err := b.build(ctx, log, opts, func(n int) {
		res.Events += int64(n)
		report(PhaseBuild, 0)
	}); err != nil {
		return res, err
	}

	// A new table has no statistics until something analyzes it, and
	// the views' readers (a gate's paged queries) are planned from them:
	// analyze the copy now, once it holds nearly every row. The catch-up
	// then takes in what was appended meanwhile.
	if err := b.finishBuild(ctx); err != nil {
		return res, fmt.Errorf("projection %s: %w", e.name, err)
	}

	// Catch up: the events committed since start, in commit order. Each
	// round reads up to the followers' horizon. Once a round is short (it
	// found little to do) or stops shrinking, what is left is for the
	// swap.
	// Its pages are at least the default size, whatever BatchSize says:
	// each is a transaction, and the catch-up must outpace the appends.
	pageSize := max(o.BatchSize, eventlog.DefaultPageSize)
	f, err := log.NewFollower(start, &eventlog.FollowOptions{Filter: e.filter(), PageSize: pageSize})
	if err != nil {
		return res, err
	}
	// round runs one round: it applies what the follower reads until it
	// has caught up with the horizon, or for catchUpRoundMax at most. It
	// reports whether another round is worth it: one that caught up but
	// took long leaves less for the next. One that did not catch up means
	// appends arrive faster than the rebuild applies them; the swap then
	// applies the rest, while appends wait.
	round := func() (bool, error) {
		res.CatchUpRounds++
		report(PhaseCatchUp, res.CatchUpRounds)
		began := time.Now()
		caughtUp := false
		for !caughtUp && time.Since(began) < catchUpRoundMax {
			// Read and apply in one transaction on the rebuild's
			// connection: no other connection is needed, and a failure
			// fails the rebuild, follower and all.
			var page []eventlog.Event
			if err := b.inTx(ctx, func(tx *sqlx.Tx) error {
				var err error
				if page, err = f.PollTx(ctx, tx); err != nil || len(page) == 0 {
					return err
				}
				return e.apply(ctx, tx, page)
			}); err != nil {
				return false, err
			}
			if len(page) > 0 {
				res.Events += int64(len(page))
				res.CatchUpEvents += int64(len(page))
				report(PhaseCatchUp, res.CatchUpRounds)
			}
			caughtUp = f.CaughtUp()
		}
		return caughtUp && time.Since(began) > catchUpShort && res.CatchUpRounds < catchUpRounds, nil
	}
	for {
		again, err := round()
		if err != nil {
			return res, fmt.Errorf("projection %s: catch up: %w", e.name, err)
		}
		if !again {
			break
		}
	}

	// Swap: under the exclusive lock no append of e's kinds is in flight,
	// so what the follower drains now is every event left.
	for attempt := 1; ; attempt++ {
		report(PhaseSwap, res.CatchUpRounds)
		err = b.swap(ctx, log, d, f, &res)
		if err == nil {
			break
		}
		if !isLockTimeout(err) || attempt == swapAttempts || ctx.Err() != nil {
			return res, fmt.Errorf("projection %s: swap: %w", e.name, err)
		}
		if _, err := round(); err != nil {
			return res, fmt.Errorf("projection %s: catch up: %w", e.name, err)
		}
	}
	return res, nil
}

// isLockTimeout reports a PostgreSQL lock_timeout (55P03), or a deadlock
// (40P01) that the server broke by failing the swap: both leave the
// swap to be tried again.
func isLockTimeout(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && (pe.Code == "55P03" || pe.Code == "40P01")
}

// pipeline reads pages and prepares each (Pipeliner.PrepareBatch, when e
// has it) on another goroutine, and calls write for each page in order
// with a function that writes it in a transaction. With readAhead the
// next page is read and prepared while the previous one is written;
// without it, only once that write has returned (RebuildOptions.Gentle).
func pipeline(ctx context.Context, e *registered, readAhead bool, pages func(func([]eventlog.Event, error) bool), write func(page []eventlog.Event, apply func(*sqlx.Tx) error) error) error {
	type item struct {
		page []eventlog.Event
		b    PreparedBatch
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	items := make(chan item, 1)
	written := make(chan struct{})
	pl, _ := e.p.(Pipeliner)
	go func() {
		defer close(items)
		for page, err := range pages {
			it := item{page: page, err: err}
			if err != nil {
				it.err = fmt.Errorf("projection %s: read log: %w", e.name, err)
			} else if pl != nil {
				if it.b, it.err = pl.PrepareBatch(page); it.err != nil {
					it.err = e.applyError(page, 0, it.err)
				}
			}
			select {
			case items <- it:
			case <-ctx.Done():
				return
			}
			if it.err != nil {
				return
			}
			if !readAhead {
				select {
				case <-written:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	for it := range items {
		if it.err != nil {
			return it.err
		}
		apply := func(tx *sqlx.Tx) error { return e.apply(ctx, tx, it.page) }
		if pl != nil {
			apply = func(tx *sqlx.Tx) error {
				if it.b == nil {
					return nil
				}
				if err := it.b.WriteTx(ctx, tx); err != nil {
					return e.applyError(it.page, 0, err)
				}
				return nil
			}
		}
		if err := write(it.page, apply); err != nil {
			return err
		}
		if !readAhead {
			select {
			case written <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return ctx.Err()
}

// builder is the backend-specific half of an online rebuild.
type builder interface {
	// prepare creates the empty copy of the projection's tables.
	prepare(ctx context.Context) error
	// build applies to the copy the events opts selects, calling done
	// with the number of events after each page.
	build(ctx context.Context, log *eventlog.Log, opts *eventlog.ReadOptions, done func(int)) error
	// inTx runs fn in a short transaction that writes the copy.
	inTx(ctx context.Context, fn func(*sqlx.Tx) error) error
	// progress records how far the rebuild is, for Status; best effort.
	progress(ctx context.Context, phase Phase, done, total int64)
	// finishBuild runs once the build is done: it gathers the planner's
	// statistics on the copy, so the tables swapped in do not start
	// without them, and checks the foreign keys the build did not have
	// the server check (pgBuilder.uncheckedKeys).
	finishBuild(ctx context.Context) error
	// swap drains f into the copy under the projection's exclusive lock
	// and puts the copy in place of the live tables, with the checkpoint,
	// in one transaction.
	swap(ctx context.Context, log *eventlog.Log, d eventlog.Backend, f *eventlog.Follower, res *RebuildResult) error
	// cleanup removes what is left of the copy after a failure.
	cleanup()
}

// drainAndCheckpoint is the common part of a swap, inside tx holding
// the projection's exclusive lock: apply what the follower has left and
// write the checkpoint at the log's last seq.
func drainAndCheckpoint(ctx context.Context, log *eventlog.Log, tx *sqlx.Tx, e *registered, f *eventlog.Follower, res *RebuildResult, check func(*sqlx.Tx) error) error {
	for page, err := range f.DrainTx(ctx, tx) {
		if err != nil {
			return err
		}
		if err := e.apply(ctx, tx, page); err != nil {
			return err
		}
		res.Events += int64(len(page))
		res.SwapEvents += int64(len(page))
	}
	if err := check(tx); err != nil {
		return err
	}
	seq, err := log.LastSeqTx(ctx, tx)
	if err != nil {
		return err
	}
	res.Seq = seq
	return nil
}

// pgBuilder builds the copy in a shadow schema that comes first in the
// rebuild connection's search path.
type pgBuilder struct {
	db     *sqlx.DB // the pool, for cleaning up after the connection is lost
	conn   *sqlx.Conn
	e      *registered
	tables []string
	live   string // the live schema (current_schema())
	shadow string
	// uncheckedKeys: the role may set session_replication_role, and the
	// build writes the copy without PostgreSQL checking its foreign keys
	// row by row (see uncheckedKeysAllowed); finishBuild checks them
	// after, with one query each. built: the build is over, and the
	// catch-up's transactions are checked row by row again.
	uncheckedKeys, built bool
	gentle               bool // RebuildOptions.Gentle
}

// uncheckedKeysAllowed reports whether the rebuild's role may set
// session_replication_role (a superuser, or on PostgreSQL 15 and later a
// role granted SET on it). The build's transactions then set it to
// replica, which turns off the triggers that check foreign keys, as
// pg_restore and logical replication do. The server's check costs a
// lookup and a row lock on the referenced row (for probe_failures, on
// event_log) for every row written: most of the server's work in a
// build. finishBuild checks each key once over the whole copy instead,
// and the rows written after the build are checked by the server again,
// so the keys stay declared, valid and true. The setting is tried on the
// session and reset at once: a role without the privilege gets the build
// checked row by row.
//
// A key with a referential action (ON DELETE or ON UPDATE CASCADE, SET
// NULL, SET DEFAULT) is carried out by those same triggers: a copy with
// one is built with them on.
func (b *pgBuilder) uncheckedKeysAllowed(ctx context.Context) (bool, error) {
	tables := make([]string, len(b.tables))
	for i, t := range b.tables {
		tables[i] = quoteIdent(b.shadow) + "." + quoteIdent(t)
	}
	var actions bool
	if err := b.conn.GetContext(ctx, &actions, `SELECT EXISTS (SELECT FROM pg_constraint WHERE contype = 'f'
AND (conrelid = ANY($1::regclass[]) OR confrelid = ANY($1::regclass[])) AND (confdeltype NOT IN ('a', 'r') OR confupdtype NOT IN ('a', 'r')))`,
		pq.Array(tables)); err != nil {
		return false, err
	}
	if actions {
		return false, nil
	}
	_, err := b.conn.ExecContext(ctx, `SET session_replication_role = replica`)
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "42501" { // insufficient_privilege
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := b.conn.ExecContext(ctx, `RESET session_replication_role`); err != nil {
		return false, err
	}
	return true, nil
}

func (b *pgBuilder) prepare(ctx context.Context) error {
	var path string
	if err := b.conn.QueryRowxContext(ctx, `SELECT current_schema(), current_setting('search_path')`).Scan(&b.live, &path); err != nil {
		return err
	}
	if b.live == "" {
		return errors.New("no current schema: the search path names no schema that exists")
	}
	if reason, err := b.blocker(ctx); err != nil {
		return err
	} else if reason != "" {
		return &offlineError{reason: reason}
	}
	// Wait for a rebuild of the same projection running elsewhere: its
	// shadow schema is the same.
	if _, err := b.conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+pglock.KeyExpr("$1::text")+`)`, rebuildLock(b.e.name)); err != nil {
		return fmt.Errorf("take the rebuild lock: %w", err)
	}
	b.shadow = shadowSchema(b.live, b.e.name)
	sh := quoteIdent(b.shadow)
	if err := dropRebuildSchemas(ctx, b.conn, b.live, b.e.name, dropAttempts); err != nil { // a killed rebuild's
		return err
	}
	stmts := []string{
		`CREATE SCHEMA ` + sh,
		`COMMENT ON SCHEMA ` + sh + ` IS ` + pq.QuoteLiteral("canonlog: online rebuild of projection "+b.e.name+" of schema "+b.live),
		`CREATE TABLE ` + sh + `.canonlog_rebuild (phase text NOT NULL, done bigint NOT NULL, total bigint NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO ` + sh + `.canonlog_rebuild (phase, done, total) VALUES ('build', 0, 0)`,
	}
	for _, s := range stmts {
		if _, err := b.conn.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create shadow schema %s: %w", b.shadow, err)
		}
	}
	lv := quoteIdent(b.live)
	var fks []string
	// Tables first, then their keys and indexes under the live names
	// (names are per schema), then foreign keys, which may point at each
	// other's copies.
	for _, t := range b.tables {
		if _, err := b.conn.ExecContext(ctx, `CREATE TABLE `+sh+`.`+quoteIdent(t)+` (LIKE `+lv+`.`+quoteIdent(t)+` INCLUDING ALL EXCLUDING INDEXES)`); err != nil {
			return fmt.Errorf("copy table %s: %w", t, err)
		}
	}
	for _, t := range b.tables {
		var cons []struct {
			Name string `db:"conname"`
			Type string `db:"contype"`
			Def  string `db:"def"`
		}
		if err := b.conn.SelectContext(ctx, &cons, `SELECT conname, contype::text, pg_get_constraintdef(oid) AS def FROM pg_constraint
WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x', 'f') ORDER BY contype, conname`, lv+"."+quoteIdent(t)); err != nil {
			return err
		}
		for _, c := range cons {
			stmt := `ALTER TABLE ` + sh + `.` + quoteIdent(t) + ` ADD CONSTRAINT ` + quoteIdent(c.Name) + ` ` + c.Def
			if c.Type == "f" {
				fks = append(fks, stmt)
				continue
			}
			if _, err := b.conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("copy constraint %s of %s: %w", c.Name, t, err)
			}
		}
		var idx []string
		if err := b.conn.SelectContext(ctx, &idx, `SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
WHERE i.indrelid = $1::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)
ORDER BY i.indexrelid`, lv+"."+quoteIdent(t)); err != nil {
			return err
		}
		for _, def := range idx {
			m := indexDefRE.FindStringSubmatch(def)
			if m == nil {
				return &offlineError{reason: fmt.Sprintf("index definition %q of table %s is not of a form the copy can repeat", def, t)}
			}
			if _, err := b.conn.ExecContext(ctx, m[1]+sh+`.`+quoteIdent(t)+m[3]); err != nil {
				return fmt.Errorf("copy index of %s: %w", t, err)
			}
		}
	}
	// The projection's SQL resolves its unqualified names in the shadow
	// schema first; the log and everything else stay where they are. The
	// shadow's writes need not wait for the disk: a server that crashes
	// loses the rebuild anyway. The swap commits synchronously.
	if _, err := b.conn.ExecContext(ctx, `SET search_path TO `+sh+`, `+path); err != nil {
		return err
	}
	if _, err := b.conn.ExecContext(ctx, `SET synchronous_commit = off`); err != nil {
		return err
	}
	for _, stmt := range fks {
		if err := b.addForeignKey(ctx, stmt); err != nil {
			return fmt.Errorf("copy foreign key: %w", err)
		}
	}
	var err error
	if b.uncheckedKeys, err = b.uncheckedKeysAllowed(ctx); err != nil {
		return fmt.Errorf("session_replication_role: %w", err)
	}
	return nil
}

// addForeignKey runs stmt, which adds a foreign key to the empty copy:
// checking no row, it is quick, but it needs a lock on the table the key
// references that waits for every transaction writing that table — for
// event_log, every append in flight — and holds back every one that
// comes after. So it waits foreignKeyLockTimeout at most, and is tried
// again foreignKeyRetry later, until ctx ends: a transaction that writes
// event_log and stays open delays the rebuild's start, never the appends.
//
// The key is in place from the start, and the build checks it row by
// row unless the role may turn the checks off (uncheckedKeysAllowed).
// Added after the build instead (NOT VALID, then VALIDATE), it would
// cost a third of the build's writes less for probe_failures, but
// VALIDATE holds a transaction id for its whole scan of the copy (0.7 s
// for 600,000 rows here), and with it every follower's horizon:
// `tail -f` would stall for as long.
func (b *pgBuilder) addForeignKey(ctx context.Context, stmt string) error {
	for {
		err := withConnTx(ctx, b.conn, eventlog.Postgres, func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, foreignKeyLockTimeout.Milliseconds())); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, stmt)
			return err
		})
		if !isLockTimeout(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(foreignKeyRetry):
		}
	}
}

// indexDefRE splits pg_get_indexdef's "CREATE [UNIQUE] INDEX name ON
// table USING …" around the table's name.
var indexDefRE = regexp.MustCompile(`^(CREATE (?:UNIQUE )?INDEX (?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+") ON )(\S+)( USING .*)$`)

// blocker tells what about the live tables a swap could not carry over,
// or would break: "" when nothing.
func (b *pgBuilder) blocker(ctx context.Context) (string, error) {
	lv := quoteIdent(b.live)
	var regs []string
	for _, t := range b.tables {
		regs = append(regs, lv+"."+quoteIdent(t))
	}
	var reasons []string
	err := b.conn.SelectContext(ctx, &reasons, `WITH t AS (SELECT c.oid, c.relname, c.relkind, c.relrowsecurity FROM pg_class c WHERE c.oid = ANY($1::regclass[]))
SELECT format('table %s is partitioned', relname) FROM t WHERE relkind <> 'r'
UNION ALL SELECT format('table %s has row-level security', relname) FROM t WHERE relrowsecurity
UNION ALL SELECT format('table %s takes part in inheritance', t.relname) FROM t JOIN pg_inherits i ON i.inhrelid = t.oid OR i.inhparent = t.oid
UNION ALL SELECT format('table %s has trigger %s', t.relname, g.tgname) FROM t JOIN pg_trigger g ON g.tgrelid = t.oid AND NOT g.tgisinternal
UNION ALL SELECT format('table %s is referenced by a foreign key of %s', t.relname, c.conrelid::regclass) FROM t JOIN pg_constraint c ON c.confrelid = t.oid AND c.contype = 'f' AND c.conrelid <> ALL($1::regclass[])
UNION ALL SELECT format('view %s depends on table %s', r.ev_class::regclass, t.relname) FROM t JOIN pg_depend d ON d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass JOIN pg_rewrite r ON r.oid = d.objid AND r.ev_class <> t.oid
UNION ALL SELECT format('column %s.%s takes its default from a sequence (serial): use an identity column', t.relname, a.attname) FROM t JOIN pg_attrdef ad ON ad.adrelid = t.oid JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ad.adnum WHERE pg_get_expr(ad.adbin, ad.adrelid) LIKE 'nextval(%'
UNION ALL SELECT format('table %s has column privileges', t.relname) FROM t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attacl IS NOT NULL
UNION ALL SELECT format('role %s may not create schemas in database %s (GRANT CREATE ON DATABASE)', current_user, current_database()) WHERE NOT has_database_privilege(current_database(), 'CREATE')
UNION ALL SELECT format('role %s does not own table %s (it belongs to %s)', current_user, t.relname, pg_get_userbyid(c.relowner)) FROM t JOIN pg_class c ON c.oid = t.oid WHERE NOT pg_has_role(current_user, c.relowner, 'MEMBER')
LIMIT 1`, pq.Array(regs))
	if err != nil {
		return "", fmt.Errorf("inspect the live tables: %w", err)
	}
	if len(reasons) > 0 {
		return reasons[0], nil
	}
	return "", nil
}

// build reads pages on the pool and prepares each while the one before
// is written on the rebuild's connection.
func (b *pgBuilder) build(ctx context.Context, log *eventlog.Log, opts *eventlog.ReadOptions, done func(int)) error {
	return pipeline(ctx, b.e, !b.gentle, log.Pages(ctx, 0, opts), func(page []eventlog.Event, write func(*sqlx.Tx) error) error {
		if err := b.inTx(ctx, write); err != nil {
			return err
		}
		done(len(page))
		return nil
	})
}

func (b *pgBuilder) inTx(ctx context.Context, fn func(*sqlx.Tx) error) error {
	tx, err := b.conn.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if b.uncheckedKeys && !b.built {
		if _, err := tx.ExecContext(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
			return err
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := b.checkWrites(ctx, tx); err != nil {
		return err
	}
	return tx.Commit()
}

// checkWrites fails when tx has written a table outside the shadow
// schema: the projection's SQL named a live table (schema-qualified, or
// one it does not list in Tables), which the rebuild would then change
// under the appends' feet. It reads the relation locks tx holds: INSERT,
// UPDATE, DELETE and MERGE take ROW EXCLUSIVE on their table, DDL and
// TRUNCATE stronger locks, and a transaction keeps them to its end, so
// they name every table it wrote (or meant to: a statement that matched
// no row counts too), temporary tables and the system catalogs (which
// creating a temporary table writes) aside. Reading them takes well
// under a millisecond. The per-table statistics of
// pg_stat_xact_user_tables, read for this before and after every page,
// scan pg_class and pg_index on each call — 5 to 20 ms on a server whose
// catalogs held many schemas — and made an online rebuild take about a
// quarter longer (docs/performance.md, "Rebuilds and verify under
// load").
func (b *pgBuilder) checkWrites(ctx context.Context, tx *sqlx.Tx) error {
	return pgWritesOutside(ctx, tx, b.shadow, b.e.name, "rebuilding online")
}

// pgWritesOutside fails when tx has written a table that is neither
// temporary nor in schema allowed ("": none) — see checkWrites — naming
// projection and what it was doing.
func pgWritesOutside(ctx context.Context, tx *sqlx.Tx, allowed, projection, doing string) error {
	var written []string
	if err := tx.SelectContext(ctx, &written, `SELECT DISTINCT n.nspname || '.' || c.relname FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
  AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't' AND n.nspname <> $1
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'`, allowed); err != nil {
		return fmt.Errorf("check what %s wrote: %w", doing, err)
	}
	if len(written) > 0 {
		slices.Sort(written)
		return fmt.Errorf("%w: projection %s wrote %s while %s: its SQL must name only the tables it lists in Tables(), unqualified",
			ErrInvalidProjection, projection, strings.Join(written, ", "), doing)
	}
	return nil
}

func (b *pgBuilder) progress(ctx context.Context, phase Phase, done, total int64) {
	if b.shadow == "" {
		return
	}
	_, _ = b.conn.ExecContext(ctx, `UPDATE `+quoteIdent(b.shadow)+`.canonlog_rebuild SET phase = $1, done = $2, total = $3, updated_at = now()`, string(phase), done, total)
}

// analyze runs ANALYZE on the copy's tables: a sample of each (at most
// 300 times the statistics target in rows), in well under a second for a
// million rows. It locks the copy only.
func (b *pgBuilder) finishBuild(ctx context.Context) error {
	tables := make([]string, len(b.tables))
	for i, t := range b.tables {
		tables[i] = quoteIdent(b.shadow) + "." + quoteIdent(t)
	}
	if _, err := b.conn.ExecContext(ctx, `ANALYZE `+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("analyze the copy: %w", err)
	}
	if !b.uncheckedKeys || b.built {
		return nil
	}
	b.built = true // the catch-up's writes are checked by the server
	return b.checkForeignKeys(ctx, tables)
}

// checkForeignKeys checks every foreign key of the copy's tables, which
// the build wrote without the server checking them, with one query each:
// a row whose key columns are all set and match no row of the table it
// references fails the rebuild, as the server's check would have. Each
// query reads the copy once and looks each key up in the referenced
// table's unique index (the server's own check does the same, one row at
// a time, and locks each referenced row); it is read-only, so it holds
// back no follower. The plan is fixed to index lookups whatever the
// planner knows of the tables: without statistics a join could read the
// referenced table once per row.
func (b *pgBuilder) checkForeignKeys(ctx context.Context, tables []string) error {
	var fks []struct {
		Name    string         `db:"conname"`
		Child   string         `db:"child"`
		Parent  string         `db:"parent"`
		Match   string         `db:"confmatchtype"`
		Cols    pq.StringArray `db:"cols"`
		RefCols pq.StringArray `db:"refcols"`
	}
	if err := b.conn.SelectContext(ctx, &fks, `SELECT c.conname, c.confmatchtype::text,
  format('%I.%I', cn.nspname, cc.relname) AS child, format('%I.%I', pn.nspname, pc.relname) AS parent,
  ARRAY(SELECT quote_ident(a.attname) FROM unnest(c.conkey) WITH ORDINALITY AS k(n, i)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,
  ARRAY(SELECT quote_ident(a.attname) FROM unnest(c.confkey) WITH ORDINALITY AS k(n, i)
        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS refcols
FROM pg_constraint c
JOIN pg_class cc ON cc.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE c.contype = 'f' AND c.conrelid = ANY($1::regclass[])
ORDER BY c.conrelid, c.conname`, pq.Array(tables)); err != nil {
		return fmt.Errorf("read the copy's foreign keys: %w", err)
	}
	for _, fk := range fks {
		var set, match, shown []string
		for i, col := range fk.Cols {
			set = append(set, "c."+col+" IS NOT NULL")
			match = append(match, "r."+fk.RefCols[i]+" = c."+col)
			shown = append(shown, "c."+col)
		}
		where := strings.Join(set, " AND ")
		if fk.Match == "f" { // MATCH FULL: a key partly set matches nothing
			where = "(" + strings.Join(set, " OR ") + ")"
		}
		// One query string, one implicit transaction: SET LOCAL ends
		// with it.
		query := `SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL enable_seqscan = off;
SELECT ROW(` + strings.Join(shown, ", ") + `)::text FROM ` + fk.Child + ` c WHERE ` + where + `
AND NOT EXISTS (SELECT FROM ` + fk.Parent + ` r WHERE ` + strings.Join(match, " AND ") + `) LIMIT 1`
		var bad string
		err := b.conn.QueryRowxContext(ctx, query).Scan(&bad)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("check foreign key %s of the copy: %w", fk.Name, err)
		default:
			return fmt.Errorf("the copy breaks foreign key %s: key (%s)=%s of %s is not present in %s",
				fk.Name, strings.Join(fk.Cols, ", "), bad, fk.Child, fk.Parent)
		}
	}
	return nil
}

func (b *pgBuilder) swap(ctx context.Context, log *eventlog.Log, d eventlog.Backend, f *eventlog.Follower, res *RebuildResult) error {
	tx, err := b.conn.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, swapLockTimeout.Milliseconds())); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
		return err
	}
	// The session's current schema is the shadow: name the live one.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+pglock.KeyExprIn("$1::text", "$2::text")+`)`, b.live, pglock.ProjectionLock(b.e.name)); err != nil {
		return fmt.Errorf("take the exclusive lock: %w", err)
	}
	locked := time.Now()
	if err := drainAndCheckpoint(ctx, log, tx, b.e, f, res, func(tx *sqlx.Tx) error { return b.checkWrites(ctx, tx) }); err != nil {
		return err
	}
	sh, lv := quoteIdent(b.shadow), quoteIdent(b.live)
	live := make([]string, len(b.tables))
	for i, t := range b.tables {
		live[i] = lv + "." + quoteIdent(t)
	}
	// Lock the live tables, then make sure they are still what the copy
	// was made from: a migration that altered them while the rebuild ran
	// would otherwise be undone by the swap.
	if _, err := tx.ExecContext(ctx, `LOCK TABLE `+strings.Join(live, ", ")+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("lock the live tables: %w", err)
	}
	for i, t := range b.tables {
		var liveShape, copyShape string
		for _, x := range []struct {
			table string
			shape *string
		}{{live[i], &liveShape}, {sh + "." + quoteIdent(t), &copyShape}} {
			if err := tx.GetContext(ctx, x.shape, `SELECT
  COALESCE((SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY attnum)
    FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped), '') || '; ' ||
  COALESCE((SELECT string_agg(c.relname, ', ' ORDER BY c.relname) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass), '')`, x.table); err != nil {
				return fmt.Errorf("compare %s with its copy: %w", t, err)
			}
		}
		if liveShape != copyShape {
			return fmt.Errorf("%w: table %s changed while the rebuild ran (a migration?): it is now (%s), the copy was made as (%s); rebuild again",
				ErrViewChanged, t, liveShape, copyShape)
		}
	}
	for i, t := range b.tables {
		// The live table's storage parameters (autovacuum settings,
		// fillfactor, …), set by hand or by a migration since, before
		// its owner changes.
		var options []string
		if err := tx.SelectContext(ctx, &options, `SELECT unnest(reloptions) FROM pg_class WHERE oid = $1::regclass`, live[i]); err != nil {
			return fmt.Errorf("read the storage parameters of %s: %w", t, err)
		}
		if len(options) > 0 {
			if _, err := tx.ExecContext(ctx, `ALTER TABLE `+sh+`.`+quoteIdent(t)+` SET (`+strings.Join(options, ", ")+`)`); err != nil {
				return fmt.Errorf("carry the storage parameters of %s over: %w", t, err)
			}
		}
		// The live table's owner and privileges, as they are now.
		var grants []string
		if err := tx.SelectContext(ctx, &grants, `SELECT format('ALTER TABLE %s OWNER TO %I', $2::text, pg_get_userbyid(c.relowner))
FROM pg_class c WHERE c.oid = $1::regclass AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
UNION ALL
SELECT format('GRANT %s ON %s TO %s%s', a.privilege_type, $2::text,
  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
  CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = $1::regclass AND a.grantee <> c.relowner`, live[i], sh+"."+quoteIdent(t)); err != nil {
			return fmt.Errorf("read the privileges of %s: %w", t, err)
		}
		for _, g := range grants {
			if _, err := tx.ExecContext(ctx, g); err != nil {
				return fmt.Errorf("carry the privileges of %s over: %w", t, err)
			}
		}
	}
	// The old tables move aside, not dropped: dropping a table with a
	// foreign key to event_log locks event_log against every append, and
	// appends waiting for this transaction's projection lock hold their
	// own lock on event_log, so that would deadlock. Moving takes locks
	// on the projection's own tables only. They are dropped after commit.
	old := quoteIdent(retiredSchema(b.live, b.e.name))
	if _, err := tx.ExecContext(ctx, `CREATE SCHEMA `+old); err != nil {
		return fmt.Errorf("create a schema for the old tables: %w", err)
	}
	for i, t := range b.tables {
		if _, err := tx.ExecContext(ctx, `ALTER TABLE `+live[i]+` SET SCHEMA `+old); err != nil {
			return fmt.Errorf("move the old table %s out: %w", t, err)
		}
	}
	for _, t := range b.tables {
		if _, err := tx.ExecContext(ctx, `ALTER TABLE `+sh+`.`+quoteIdent(t)+` SET SCHEMA `+lv); err != nil {
			return fmt.Errorf("move the new table %s in: %w", t, err)
		}
	}
	if err := writeCheckpoint(ctx, tx, b.e, checkpoint{Version: res.Version, Seq: res.Seq, At: log.Clock().Now()}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	res.LockHeld = time.Since(locked)
	return nil // cleanup drops the old tables with the schemas
}

func (b *pgBuilder) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if b.shadow == "" {
		return // the rebuild lock is taken, and the shadow named, together
	}
	// After a swap: the emptied shadow schema and the old tables. After
	// a failure: the shadow's tables. Best effort: whatever stays is
	// reported by Status and dropped by the next rebuild or Migrate.
	if err := dropRebuildSchemas(ctx, b.conn, b.live, b.e.name, dropAttempts); err != nil {
		b.dropFromPool(ctx)
		return
	}
	// The session's current schema is the shadow: name the live one, as
	// prepare's current schema was.
	_, _ = b.conn.ExecContext(ctx, `SELECT pg_advisory_unlock(`+pglock.KeyExprIn("$1::text", "$2::text")+`)`, b.live, rebuildLock(b.e.name))
}

// dropFromPool drops the shadow and retired schemas on a connection of
// the pool, when the rebuild's own connection is gone: lib/pq discards a
// connection whose statement was cancelled, so a rebuild whose context
// ends would otherwise leave its copy behind. The rebuild lock went with
// the connection; the drop takes it again (for its transaction), so that
// it never drops the copy of another rebuild of the projection that took
// the lock meanwhile — that one dropped these leftovers itself and is
// still running, and the wait for it gives up.
func (b *pgBuilder) dropFromPool(ctx context.Context) {
	// Each attempt is a transaction of its own, so that the rebuild lock
	// is not held between attempts. The drop waits for every transaction
	// on event_log, among them the rebuild's own page reads on the pool,
	// which a cancelled rebuild stops in their own time.
	for attempt := 1; attempt <= dropAttempts; attempt++ {
		locked := false // the rebuild lock is taken: a lock timeout now is the drop's, worth another attempt
		err := dbutil.WithTx(ctx, b.db, nil, func(tx *sqlx.Tx) error {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, swapLockTimeout.Milliseconds())); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+pglock.KeyExprIn("$1::text", "$2::text")+`)`, b.live, rebuildLock(b.e.name)); err != nil {
				return err
			}
			locked = true
			_, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d; `, dropLockTimeout.Milliseconds())+dropRebuildSchemasSQL(b.live, b.e.name))
			return err
		})
		if err == nil || !locked || !isLockTimeout(err) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(dropRetry):
		}
	}
}

// dropRebuildSchemas drops the shadow and retired schemas of projection
// in the live schema, on conn, outside any transaction. Dropping a table
// with a foreign key to event_log takes event_log's strongest lock: it
// waits for every transaction reading or writing the log, and holds back
// every one that comes after it, appends included — for as long as a
// long reader of the log (a verify's snapshot, a long query) runs. So
// each drop waits at most dropLockTimeout for its locks, and is tried
// again dropRetry later, attempts times at most; then it fails with
// the lock timeout (55P03), and the leftovers stay for Status to report
// and the next rebuild or Migrate to drop.
func dropRebuildSchemas(ctx context.Context, conn *sqlx.Conn, live, projection string, attempts int) error {
	for attempt := 1; ; attempt++ {
		// One simple query is one transaction: SET LOCAL holds for the
		// drops.
		_, err := conn.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d; `, dropLockTimeout.Milliseconds())+dropRebuildSchemasSQL(live, projection))
		if err == nil || !isLockTimeout(err) || attempt >= attempts {
			if err != nil {
				return fmt.Errorf("drop the schemas of a rebuild of %s: %w", projection, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(dropRetry):
		}
	}
}

// dropRebuildSchemasSQL is the statement that drops the shadow and
// retired schemas of projection in the live schema.
func dropRebuildSchemasSQL(live, projection string) string {
	var stmts []string
	for _, s := range []string{shadowSchema(live, projection), retiredSchema(live, projection)} {
		stmts = append(stmts, `DROP SCHEMA IF EXISTS `+pq.QuoteIdentifier(s)+` CASCADE`)
	}
	return strings.Join(stmts, "; ")
}

// sqliteBuilder builds the copy as temporary tables of the rebuild's
// connection, which SQLite resolves before the live tables of the same
// names. Writing them takes no lock on the database file, so the build
// and catch-up never hold up writers; the swap copies the rows into the
// live tables in one write transaction.
type sqliteBuilder struct {
	conn   *sqlx.Conn
	e      *registered
	tables []string
	guard  tempOnly
}

// tempOnly refuses, on a SQLite connection it is registered on as the
// authorizer, every write to a database other than temp: a projection
// whose SQL names a live table (main.t, or a table it does not list)
// would otherwise write it while its private copy is being derived.
type tempOnly struct {
	// mainWrites lets the connection write the main database, as only
	// an online rebuild's swap may; refused is the first table of the
	// main database a statement tried to write before.
	mainWrites atomic.Bool
	refused    atomic.Pointer[string]
}

// register makes g conn's authorizer; refuse, when the driver cannot
// have one, is the error to return.
func (g *tempOnly) register(conn *sqlx.Conn, refuse func(driver any) error) error {
	return conn.Raw(func(dc any) error {
		r, ok := dc.(sqlite.AuthorizerRegisterer)
		if !ok {
			return refuse(dc)
		}
		return r.RegisterAuthorizer(g.authorize)
	})
}

func (g *tempOnly) authorize(action sqlite.AuthorizerActionCode, table, _, database, _ string) sqlite.AuthorizerReturnCode {
	switch action {
	case sqlite.AuthInsert, sqlite.AuthUpdate, sqlite.AuthDelete:
		if database != "temp" && !g.mainWrites.Load() {
			name := database + "." + table
			g.refused.CompareAndSwap(nil, &name)
			return sqlite.AuthorizerDeny
		}
	}
	return sqlite.AuthorizerOK
}

// check fails when a statement of projection tried to write the main
// database while doing (say, "rebuilding online"): whatever error it
// caused, this is the one to report.
func (g *tempOnly) check(projection, doing string) error {
	if t := g.refused.Load(); t != nil {
		return fmt.Errorf("%w: projection %s wrote %s while %s: its SQL must name only the tables it lists in Tables(), unqualified",
			ErrInvalidProjection, projection, *t, doing)
	}
	return nil
}

func (b *sqliteBuilder) prepare(ctx context.Context) error {
	for _, t := range b.tables {
		if err := createTempCopy(ctx, b.conn, b.conn, eventlog.SQLite, "main", t); err != nil {
			return fmt.Errorf("create a private copy of %s: %w", t, err)
		}
	}
	// A projection whose SQL names a live table (main.t, or a table it
	// does not list) would write it while rebuilding, and the swap would
	// then install the copy over it and report success: the connection
	// refuses such statements instead (PostgreSQL checks the same with
	// writesOutside).
	return b.guard.register(b.conn, func(dc any) error {
		return &offlineError{reason: fmt.Sprintf("the SQLite driver (%T) cannot refuse writes to the live tables", dc)}
	})
}

// checkWrites fails when a statement of the projection tried to write
// the main database.
func (b *sqliteBuilder) checkWrites() error { return b.guard.check(b.e.name, "rebuilding online") }

// build reads each page and writes it in one short transaction on the
// rebuild's connection: reading the main database and writing the
// temporary one, it takes no write lock, and it needs no other
// connection of the pool, which writers use.
func (b *sqliteBuilder) build(ctx context.Context, log *eventlog.Log, opts *eventlog.ReadOptions, done func(int)) error {
	var after int64
	for {
		var page []eventlog.Event
		err := b.inTx(ctx, func(tx *sqlx.Tx) error {
			for p, err := range log.PagesTx(ctx, tx, after, opts) {
				if err != nil {
					return fmt.Errorf("projection %s: read log: %w", b.e.name, err)
				}
				page = p
				break
			}
			if len(page) == 0 {
				return nil
			}
			return b.e.apply(ctx, tx, page)
		})
		if err != nil || len(page) == 0 {
			return err
		}
		after = page[len(page)-1].Seq
		done(len(page))
	}
}

func (b *sqliteBuilder) inTx(ctx context.Context, fn func(*sqlx.Tx) error) error {
	err := withConnTx(ctx, b.conn, eventlog.SQLite, fn)
	if werr := b.checkWrites(); werr != nil {
		return werr
	}
	return err
}

func (b *sqliteBuilder) progress(context.Context, Phase, int64, int64) {}

// analyze does nothing: the swap copies the rows into the live tables,
// which keep their statistics (sqlite_stat1 names tables and indexes).
func (b *sqliteBuilder) finishBuild(context.Context) error { return nil }

func (b *sqliteBuilder) swap(ctx context.Context, log *eventlog.Log, d eventlog.Backend, f *eventlog.Follower, res *RebuildResult) error {
	tx, err := b.conn.BeginTxx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	locked := time.Now()
	if err := drainAndCheckpoint(ctx, log, tx, b.e, f, res, func(*sqlx.Tx) error { return b.checkWrites() }); err != nil {
		if werr := b.checkWrites(); werr != nil {
			return werr
		}
		return err
	}
	b.guard.mainWrites.Store(true)
	defer b.guard.mainWrites.Store(false)
	for _, t := range b.tables {
		// A migration that altered the table while the rebuild ran would
		// make the copy's rows land in the wrong columns.
		var liveShape, copyShape string
		for _, x := range []struct {
			schema string
			shape  *string
		}{{"main", &liveShape}, {"temp", &copyShape}} {
			if err := tx.GetContext(ctx, x.shape, `SELECT COALESCE(group_concat(name || ' ' || type || CASE WHEN "notnull" THEN ' not null' ELSE '' END, ', '), '')
FROM (SELECT * FROM pragma_table_info(?, ?) ORDER BY cid)`, t, x.schema); err != nil {
				return fmt.Errorf("compare %s with its copy: %w", t, err)
			}
		}
		if liveShape != copyShape {
			return fmt.Errorf("%w: table %s changed while the rebuild ran (a migration?): it is now (%s), the copy was made as (%s); rebuild again",
				ErrViewChanged, t, liveShape, copyShape)
		}
		q := quoteIdent(t)
		if _, err := tx.ExecContext(ctx, `DELETE FROM main.`+q); err != nil {
			return fmt.Errorf("empty %s: %w", t, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO main.`+q+` SELECT * FROM temp.`+q); err != nil {
			return fmt.Errorf("fill %s: %w", t, err)
		}
	}
	if err := writeCheckpoint(ctx, tx, b.e, checkpoint{Version: res.Version, Seq: res.Seq, At: log.Clock().Now()}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	res.LockHeld = time.Since(locked)
	return nil
}

func (b *sqliteBuilder) cleanup() {} // the temporary tables go with the connection

// offlineError says why a projection cannot be rebuilt online.
type offlineError struct{ reason string }

func (e *offlineError) Error() string { return "cannot rebuild online: " + e.reason }
