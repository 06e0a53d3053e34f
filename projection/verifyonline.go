package projection

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
)

// verifyOnline verifies e without its lock, so appends never wait for it
// (docs/projections.md, "Verifying"):
//
//   - one read-only transaction fixes a snapshot (REPEATABLE READ on
//     PostgreSQL, a deferred read in WAL mode on SQLite); in it the log and
//     every inline view agree, because each append writes both in one
//     transaction. On PostgreSQL it takes no transaction id, so it holds
//     back neither followers nor anything else but vacuum;
//   - on a connection of its own, the projection's tables are created as
//     temporary tables of the same names. Both backends resolve
//     unqualified names in the session's temporary schema first, so the
//     projection's own Apply writes there, untouched;
//   - the log is replayed from that snapshot, one page per short
//     transaction on that connection;
//   - the live tables, read in the snapshot, and the temporary ones are
//     compared row by row, both sorted the same way, and by checksum.
//
// The temporary tables are discarded before the connection goes back to
// the pool, or the connection is closed.
func verifyOnline(ctx context.Context, log *eventlog.Log, d eventlog.Backend, e *registered, tables []string) (VerifyResult, error) {
	res := VerifyResult{Name: e.name}
	db := log.DB()
	// On SQLite a read-only transaction begins deferred: in WAL mode its
	// first read fixes a snapshot, and writers go on.
	snap, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return res, err
	}
	defer func() { _ = snap.Rollback() }()
	schema := "main"
	if d == eventlog.Postgres {
		err = snap.GetContext(ctx, &schema, `SELECT current_schema()`)
	} else {
		_, err = log.LastSeqTx(ctx, snap)
	}
	if err != nil { // that first read took the snapshot
		return res, fmt.Errorf("take a snapshot: %w", err)
	}

	conn, err := liveConn(ctx, db)
	if err != nil {
		return res, err
	}
	defer discardTemp(conn, d)
	// A projection whose SQL names a live table (schema-qualified, or one
	// it does not list) would write it while verifying: on SQLite the
	// connection refuses such writes; on PostgreSQL each page's
	// transaction is checked before it commits, and rolled back.
	var guard tempOnly
	if d != eventlog.Postgres {
		if err := guard.register(conn, func(dc any) error {
			return fmt.Errorf("the SQLite driver (%T) cannot refuse writes to the live tables", dc)
		}); err != nil {
			return res, err
		}
	}
	apply := func(page []eventlog.Event) error {
		err := withConnTx(ctx, conn, d, func(tx *sqlx.Tx) error {
			if err := e.apply(ctx, tx, page); err != nil {
				return err
			}
			if d == eventlog.Postgres {
				return pgWritesOutside(ctx, tx, "", e.name, "verifying")
			}
			return nil
		})
		if werr := guard.check(e.name, "verifying"); werr != nil {
			return werr
		}
		return err
	}

	cols := make([][]string, len(tables))
	for i, t := range tables {
		if cols[i], err = columnsOf(ctx, snap, t); err != nil {
			return res, fmt.Errorf("columns of %s: %w", t, err)
		}
		if err := createTempCopy(ctx, snap, conn, d, schema, t); err != nil {
			return res, fmt.Errorf("create a private copy of %s: %w", t, err)
		}
	}

	for page, err := range log.PagesTx(ctx, snap, 0, e.readOptions(0)) {
		if err != nil {
			return res, fmt.Errorf("read log: %w", err)
		}
		if err := apply(page); err != nil {
			return res, err
		}
		res.Events += int64(len(page))
	}

	res.Equal = true
	if summer, ok := e.p.(Checksummer); ok {
		if res.LiveChecksum, err = summer.Checksum(ctx, snap); err != nil {
			return res, fmt.Errorf("live checksum: %w", err)
		}
		if err := withConnTx(ctx, conn, d, func(tx *sqlx.Tx) (err error) {
			res.FreshChecksum, err = summer.Checksum(ctx, tx)
			return err
		}); err != nil {
			return res, fmt.Errorf("fresh checksum: %w", err)
		}
		res.Equal = res.LiveChecksum == res.FreshChecksum
	}
	for i, t := range tables {
		live := quoteIdent(schema) + "." + quoteIdent(t)
		temp := "temp." + quoteIdent(t)
		if d == eventlog.Postgres {
			temp = "pg_temp." + quoteIdent(t)
		}
		missing, extra, samples, err := mergeDiff(ctx, snap, conn, d, live, temp, t, cols[i], maxSamples-len(res.Samples))
		if err != nil {
			return res, fmt.Errorf("compare %s: %w", t, err)
		}
		res.addDiff(missing, extra, samples)
	}
	return res, nil
}

// liveConn takes a connection of the pool for verifyOnline's own use. A
// connection the server dropped while it sat idle shows only when it is
// used, and database/sql retries a bad connection for a statement on the
// pool but not on a connection taken out of it: so try it first, and take
// another when it is gone. Each dead one is dropped from the pool as it
// is found, so the idle connections bound the attempts.
func liveConn(ctx context.Context, db *sqlx.DB) (*sqlx.Conn, error) {
	attempts := db.Stats().Idle + 2
	for attempt := 1; ; attempt++ {
		conn, err := db.Connx(ctx)
		if err != nil {
			return nil, err
		}
		_, err = conn.ExecContext(ctx, `SELECT 1`)
		if err == nil {
			return conn, nil
		}
		_ = conn.Raw(func(any) error { return driver.ErrBadConn }) // never back to the pool
		_ = conn.Close()
		if attempt >= attempts || !eventlog.Retryable(err) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// onlineTables returns the tables of e when verifyOnline can verify it:
// it lists its tables (Tabler) and names them unqualified, so that its SQL
// resolves them in the session's temporary schema first.
func onlineTables(e *registered) ([]string, bool) {
	t, ok := e.p.(Tabler)
	if !ok {
		return nil, false
	}
	tables := t.Tables()
	for _, name := range tables {
		if strings.Contains(name, ".") {
			return nil, false
		}
	}
	return tables, len(tables) > 0
}

// createTempCopy creates on conn an empty temporary table named like the
// live table t of schema, with its columns, defaults, constraints and
// indexes (its foreign keys too on SQLite, which does not enforce them on
// conn: see discardTemp).
func createTempCopy(ctx context.Context, snap sqlx.QueryerContext, conn *sqlx.Conn, d eventlog.Backend, schema, t string) error {
	if d == eventlog.Postgres {
		live := quoteIdent(schema) + "." + quoteIdent(t)
		_, err := conn.ExecContext(ctx, `CREATE TEMP TABLE `+quoteIdent(t)+` (LIKE `+live+` INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)`)
		return err
	}
	// SQLite keeps each object's CREATE statement, normalized to begin
	// "CREATE TABLE" / "CREATE [UNIQUE] INDEX": the same statements make
	// the copy, in the temp schema.
	var ddl []struct {
		Type string `db:"type"`
		SQL  string `db:"sql"`
	}
	if err := sqlx.SelectContext(ctx, snap, &ddl, `SELECT type, sql FROM main.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type = 'index', name`, t); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
		return err
	}
	for _, o := range ddl {
		stmt, ok := "", false
		switch o.Type {
		case "table":
			stmt, ok = strings.CutPrefix(o.SQL, "CREATE TABLE ")
			stmt = "CREATE TEMP TABLE " + stmt
		case "index":
			rest, unique := strings.CutPrefix(o.SQL, "CREATE UNIQUE INDEX ")
			if !unique {
				rest, ok = strings.CutPrefix(o.SQL, "CREATE INDEX ")
				stmt = "CREATE INDEX temp." + rest
			} else {
				ok, stmt = true, "CREATE UNIQUE INDEX temp."+rest
			}
		default:
			continue // triggers and views stay with the live table
		}
		if !ok {
			return fmt.Errorf("unexpected statement in sqlite_master: %.60s", o.SQL)
		}
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

// withConnTx runs fn in a transaction on conn. On SQLite the transaction
// begins deferred (read-only by canonlog's settings): it writes only the
// temporary tables, which take no lock on the database, so writers never
// wait for it.
func withConnTx(ctx context.Context, conn *sqlx.Conn, d eventlog.Backend, fn func(*sqlx.Tx) error) error {
	tx, err := conn.BeginTxx(ctx, &sql.TxOptions{ReadOnly: d == eventlog.SQLite})
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// discardTemp drops the session's temporary tables and returns conn to
// the pool; when that fails, and always on SQLite (where conn's foreign
// keys were switched off), it closes the connection instead, so that no
// later user of the pool finds tables shadowing the live ones.
func discardTemp(conn *sqlx.Conn, d eventlog.Backend) {
	if d != eventlog.Postgres {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	} else if _, err := conn.ExecContext(context.Background(), `DISCARD TEMP`); err != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = conn.Close()
}

// mergeDiff compares the multiset of rows of live (read in snap) and fresh
// (read on conn), every column as text, by merging the two sorted
// streams.
func mergeDiff(ctx context.Context, snap *sqlx.Tx, conn *sqlx.Conn, d eventlog.Backend, live, fresh, table string, cols []string, sampleLimit int) (missing, extra int64, samples []Sample, err error) {
	collate := ` COLLATE "C"` // byte order, as strings.Compare
	if d != eventlog.Postgres {
		collate = ` COLLATE BINARY`
	}
	casts := make([]string, len(cols))
	order := make([]string, len(cols))
	for i, c := range cols {
		casts[i] = "CAST(" + quoteIdent(c) + " AS TEXT)"
		order[i] = casts[i] + collate + ` NULLS FIRST`
	}
	query := func(from string) string {
		return `SELECT ` + strings.Join(casts, ", ") + ` FROM ` + from + ` ORDER BY ` + strings.Join(order, ", ")
	}
	lrows, err := snap.QueryContext(ctx, query(live))
	if err != nil {
		return 0, 0, nil, err
	}
	defer lrows.Close()
	frows, err := conn.QueryContext(ctx, query(fresh))
	if err != nil {
		return 0, 0, nil, err
	}
	defer frows.Close()

	next := func(rows *sql.Rows) ([]*string, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out := make([]*string, len(cols))
		for i, v := range vals {
			if v.Valid {
				s := v.String
				out[i] = &s
			}
		}
		return out, nil
	}
	sample := func(side string, row []*string) {
		if len(samples) < sampleLimit {
			samples = append(samples, Sample{Table: table, Side: side, Columns: cols, Values: row})
		}
	}
	l, err := next(lrows)
	if err != nil {
		return 0, 0, nil, err
	}
	f, err := next(frows)
	if err != nil {
		return 0, 0, nil, err
	}
	for l != nil || f != nil {
		c := compareRows(l, f)
		switch {
		case c == 0:
			if l, err = next(lrows); err != nil {
				return 0, 0, nil, err
			}
			if f, err = next(frows); err != nil {
				return 0, 0, nil, err
			}
		case c < 0: // only live has it
			extra++
			sample("extra", l)
			if l, err = next(lrows); err != nil {
				return 0, 0, nil, err
			}
		default: // only a fresh derivation has it
			missing++
			sample("missing", f)
			if f, err = next(frows); err != nil {
				return 0, 0, nil, err
			}
		}
	}
	return missing, extra, samples, nil
}

// compareRows orders rows as ORDER BY … COLLATE "C" NULLS FIRST does (byte
// order, NULL first); a nil row (a stream at its end) sorts last.
func compareRows(a, b []*string) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	for i := range a {
		switch x, y := a[i], b[i]; {
		case x == nil && y == nil:
		case x == nil:
			return -1
		case y == nil:
			return 1
		case *x != *y:
			return strings.Compare(*x, *y)
		}
	}
	return 0
}
