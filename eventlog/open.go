package eventlog

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"  // registers the "postgres" driver
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/canonlog/canonlog/internal/dialect"
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
// Every SQLite connection gets foreign_keys=ON, a busy timeout of 10s,
// journal_mode=WAL (files only) and BEGIN IMMEDIATE for transactions, so a
// writer takes the write lock when it begins instead of failing halfway.
//
// The caller owns the returned DB and closes it.
func OpenDB(ctx context.Context, databaseURL string) (*sqlx.DB, error) {
	driver, dsn, memory, err := parseDatabaseURL(databaseURL)
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
	case driver == dialect.DriverSQLite:
		// One writer at a time anyway; a few readers run beside it in WAL mode.
		db.SetMaxOpenConns(4)
		db.SetMaxIdleConns(4)
	default:
		// database/sql keeps only 2 idle connections by default, which makes
		// a service with a few concurrent appenders reconnect constantly.
		db.SetMaxIdleConns(16)
		db.SetConnMaxIdleTime(5 * time.Minute)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("eventlog: connect to %s: %w", redact.URL(databaseURL), redact.Error(err, databaseURL))
	}
	return db, nil
}

func parseDatabaseURL(raw string) (driver, dsn string, memory bool, err error) {
	switch {
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		if _, err := url.Parse(raw); err != nil {
			// *url.Error quotes the whole URL, password included, and its
			// reason may quote a piece of it: keep the reason's words.
			return "", "", false, fmt.Errorf("eventlog: database URL %s is malformed: %s (percent-encode special characters such as @ : / ? # %% in the user name and password)",
				redact.URL(raw), redact.ParseReason(err))
		}
		return dialect.DriverPostgres, raw, false, nil
	case raw == "sqlite::memory:", strings.HasPrefix(raw, "sqlite::memory:?"):
		return dialect.DriverSQLite, sqliteDSN("file::memory:", strings.TrimPrefix(raw, "sqlite::memory:"), true), true, nil
	case strings.HasPrefix(raw, "sqlite:"):
		rest := strings.TrimPrefix(raw, "sqlite:")
		rest = strings.TrimPrefix(rest, "//") // sqlite:///abs/path and sqlite://rel both work
		path, query, _ := strings.Cut(rest, "?")
		if path == "" {
			return "", "", false, fmt.Errorf("eventlog: database URL %q has no file path (use sqlite:PATH, or sqlite::memory: for a private in-memory database)", redact.URL(raw))
		}
		if query != "" {
			query = "?" + query
		}
		return dialect.DriverSQLite, sqliteDSN("file:"+path, query, false), false, nil
	case strings.HasPrefix(raw, "file:"):
		path, query, _ := strings.Cut(raw, "?")
		if query != "" {
			query = "?" + query
		}
		memory := strings.Contains(raw, ":memory:") || strings.Contains(query, "mode=memory")
		return dialect.DriverSQLite, sqliteDSN(path, query, memory), memory, nil
	case raw == "":
		return "", "", false, fmt.Errorf("eventlog: empty database URL (use postgres://…, sqlite:PATH or sqlite::memory:)")
	default:
		return "", "", false, fmt.Errorf("eventlog: database URL %s: unknown scheme: use postgres://…, postgresql://…, sqlite:PATH, sqlite::memory: or file:…", redact.URL(raw))
	}
}

// sqliteDSN appends canonlog's per-connection settings to a SQLite URI,
// followed by the parameters the user gave in query.
func sqliteDSN(path, query string, memory bool) string {
	params := []string{
		"_pragma=foreign_keys(1)",
		fmt.Sprintf("_pragma=busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()),
		"_txlock=immediate",
	}
	if !memory {
		params = append(params, "_pragma=journal_mode(WAL)")
	}
	user := strings.TrimPrefix(query, "?")
	if user != "" {
		params = append(params, user)
	}
	return path + "?" + strings.Join(params, "&")
}
