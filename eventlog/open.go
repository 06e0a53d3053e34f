package eventlog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // registers the "postgres" driver
	"modernc.org/sqlite"  // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/canonlog/canonlog/internal/redact"
)

// DefaultDatabaseURL is the embedded default: a SQLite file in the working
// directory.
const DefaultDatabaseURL = "sqlite:canonlog.db"

// sqliteBusyTimeout is how long a SQLite writer waits for another writer
// (another process, or another pooled connection) before giving up.
const sqliteBusyTimeout = 10 * time.Second

// OpenDB opens and pings the database named by databaseURL:
//
//   - postgres://… or postgresql://… — PostgreSQL through github.com/lib/pq;
//     the URL is passed to lib/pq as is (sslmode, search_path, … work).
//   - sqlite:PATH — a SQLite file (created when missing), through
//     modernc.org/sqlite. PATH may carry driver parameters after '?'.
//   - sqlite::memory: — a private in-memory SQLite database, gone when the
//     returned DB is closed. It has a single connection: do not start a
//     second query on the DB while holding one of its transactions.
//   - file:… — a SQLite URI, passed to modernc.org/sqlite as is.
//
// Every SQLite connection gets a busy timeout of 10s, foreign_keys=ON and
// BEGIN IMMEDIATE for transactions, so a writer takes the write lock when it
// begins instead of failing halfway. A SQLite file is switched to
// journal_mode=WAL (a setting stored in the file) once, here, waiting up to
// the busy timeout for another process that is creating or writing it —
// unless the URL sets a journal mode itself (_pragma=journal_mode(…) or
// _journal_mode=…, e.g. for a file system without the shared memory WAL
// needs), which is then left as given.
//
// The caller owns the returned DB and closes it.
func OpenDB(ctx context.Context, databaseURL string) (*sqlx.DB, error) {
	driver, dsn, memory, userJournal, err := parseDatabaseURL(databaseURL)
	if err != nil {
		return nil, err
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("eventlog: open %s: %w", redact.URL(databaseURL), redact.Error(err, databaseURL))
	}
	switch {
	case memory:
		// Every connection to :memory: is a database of its own: keep exactly
		// one, forever.
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
	case driver == driverSQLite:
		// One writer at a time anyway; a few readers run beside it in WAL mode.
		db.SetMaxOpenConns(4)
		db.SetMaxIdleConns(4)
	default:
		// database/sql keeps only 2 idle connections by default, which makes
		// a service with a few concurrent appenders reconnect constantly.
		db.SetMaxIdleConns(16)
		db.SetConnMaxIdleTime(5 * time.Minute)
	}
	connect := db.PingContext
	if driver == driverSQLite && !memory && !userJournal {
		connect = func(ctx context.Context) error { return enableWAL(ctx, db) }
	}
	if err := connect(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("eventlog: connect to %s: %w", redact.URL(databaseURL), redact.Error(err, databaseURL))
	}
	return db, nil
}

// enableWAL switches the database file to WAL. It is not a per-connection
// DSN pragma because SQLite cannot wait for it: the switch upgrades a read
// transaction to an exclusive lock, and SQLite refuses such an upgrade with
// SQLITE_BUSY at once, without calling the busy handler, while another
// connection holds the write lock (the deadlock rule). Two processes opening
// a new file together therefore failed at connect. Retrying here waits for
// the other writer instead; once the file is in WAL, further connections,
// in this process or any other, find it so and need no lock.
func enableWAL(ctx context.Context, db *sqlx.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(sqliteBusyTimeout)
	pause := time.Millisecond
	for {
		// SQLite answers with the mode in effect and keeps the old one,
		// without an error, where WAL cannot be had (a file opened with
		// mode=ro that is not in WAL yet): that database still reads.
		var mode string
		err := conn.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode)
		if err == nil {
			return nil
		}
		if !isSQLiteBusy(err) || !time.Now().Before(deadline) {
			return fmt.Errorf("switch to WAL: %w", err)
		}
		// Jittered, so that openers that collided do not collide again.
		wait := pause/2 + rand.N(pause)
		pause = min(2*pause, 50*time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("switch to WAL: %w (the file stayed locked: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func isSQLiteBusy(err error) bool {
	var sqliteErr *sqlite.Error
	return errors.As(err, &sqliteErr) && sqliteErr.Code()&0xff == sqlite3.SQLITE_BUSY
}

// parseDatabaseURL returns the driver and its DSN, whether the database is a
// private in-memory SQLite one, and whether the URL sets SQLite's journal
// mode itself.
func parseDatabaseURL(raw string) (driver, dsn string, memory, userJournal bool, err error) {
	switch {
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		if _, err := url.Parse(raw); err != nil {
			// *url.Error quotes the whole URL, password included, and its
			// reason may quote a piece of it: keep the reason's words.
			return "", "", false, false, fmt.Errorf("eventlog: database URL %s is malformed: %s (percent-encode special characters such as @ : / ? # %% in the user name and password)",
				redact.URL(raw), redact.ParseReason(err))
		}
		return driverPostgres, raw, false, false, nil
	case raw == "sqlite::memory:", strings.HasPrefix(raw, "sqlite::memory:?"):
		query := strings.TrimPrefix(raw, "sqlite::memory:")
		return driverSQLite, sqliteDSN("file::memory:", query), true, setsJournalMode(query), nil
	case strings.HasPrefix(raw, "sqlite:"):
		path, query := sqlitePath(raw)
		if path == "" {
			return "", "", false, false, fmt.Errorf("eventlog: database URL %q has no file path (use sqlite:PATH, or sqlite::memory: for a private in-memory database)", redact.URL(raw))
		}
		if query != "" {
			query = "?" + query
		}
		return driverSQLite, sqliteDSN("file:"+path, query), false, setsJournalMode(query), nil
	case strings.HasPrefix(raw, "file:"):
		path, query, _ := strings.Cut(raw, "?")
		if query != "" {
			query = "?" + query
		}
		memory := strings.Contains(raw, ":memory:") || strings.Contains(query, "mode=memory")
		return driverSQLite, sqliteDSN(path, query), memory, setsJournalMode(query), nil
	case raw == "":
		return "", "", false, false, fmt.Errorf("eventlog: empty database URL (use postgres://…, sqlite:PATH or sqlite::memory:)")
	default:
		return "", "", false, false, fmt.Errorf("eventlog: database URL %s: unknown scheme: use postgres://…, postgresql://…, sqlite:PATH, sqlite::memory: or file:…", redact.URL(raw))
	}
}

// SQLiteFile returns the file a sqlite:PATH database URL names (the URLs
// OpenDB creates a file for when it is missing), and false for any other
// URL, sqlite::memory: included. Tools that must not create a database
// check the file first.
func SQLiteFile(databaseURL string) (path string, ok bool) {
	if !strings.HasPrefix(databaseURL, "sqlite:") || strings.HasPrefix(databaseURL, "sqlite::memory:") {
		return "", false
	}
	path, _ = sqlitePath(databaseURL)
	return path, path != ""
}

// sqlitePath splits a sqlite:PATH?QUERY URL; sqlite:///abs/path and
// sqlite://rel both work.
func sqlitePath(raw string) (path, query string) {
	rest := strings.TrimPrefix(strings.TrimPrefix(raw, "sqlite:"), "//")
	path, query, _ = strings.Cut(rest, "?")
	return path, query
}

// sqliteDSN appends canonlog's per-connection settings to a SQLite URI,
// followed by the parameters the user gave in query.
//
// The busy timeout is the driver's _busy_timeout key, which it applies
// before every _pragma whatever the order in the DSN, so that a pragma that
// needs a lock waits for it; a user's _pragma=busy_timeout(…) comes later
// and wins. Journal mode is not set here: see enableWAL.
func sqliteDSN(path, query string) string {
	params := []string{
		fmt.Sprintf("_busy_timeout=%d", sqliteBusyTimeout.Milliseconds()),
		"_pragma=foreign_keys(1)",
		"_txlock=immediate",
	}
	user := strings.TrimPrefix(query, "?")
	if user != "" {
		params = append(params, user)
	}
	return path + "?" + strings.Join(params, "&")
}

// setsJournalMode reports whether a SQLite URL's query ("?…" or "") sets
// the journal mode, through the driver's shorthand keys or a _pragma.
func setsJournalMode(query string) bool {
	q, err := url.ParseQuery(strings.TrimPrefix(query, "?"))
	if err != nil {
		return false // the driver refuses the DSN with its own error
	}
	if q.Has("_journal_mode") || q.Has("_journal") {
		return true
	}
	for _, p := range q["_pragma"] {
		name, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(p)), "(")
		name, _, _ = strings.Cut(name, "=")
		if strings.TrimSpace(name) == "journal_mode" {
			return true
		}
	}
	return false
}

// Environment variables that name the database, read by DatabaseURL.
const (
	// EnvDatabaseURL names the database of every canonlog process: the
	// canonlog command, an operator binary built on canonlogcli, a
	// service using the fx module.
	EnvDatabaseURL = "CANONLOG_DATABASE_URL"
	// EnvDatabaseURLFallback is read when EnvDatabaseURL is unset or
	// empty, so that a canonlog process in a service's environment opens
	// the service's database.
	EnvDatabaseURLFallback = "DATABASE_URL"
)

// DatabaseURL applies the one fallback chain every canonlog process
// follows: explicit when it is not empty, then EnvDatabaseURL, then
// EnvDatabaseURLFallback (read through lookup, such as os.LookupEnv; nil
// reads the process environment; surrounding white space is dropped),
// then def, or DefaultDatabaseURL when def is empty.
func DatabaseURL(explicit string, lookup func(string) (string, bool), def string) string {
	if explicit != "" {
		return explicit
	}
	if lookup == nil {
		lookup = os.LookupEnv
	}
	for _, name := range []string{EnvDatabaseURL, EnvDatabaseURLFallback} {
		if v, _ := lookup(name); strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	if def != "" {
		return def
	}
	return DefaultDatabaseURL
}
