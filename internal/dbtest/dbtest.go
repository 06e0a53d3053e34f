// Package dbtest gives every storage test a fresh database on each backend.
//
// Run runs a test once per backend, in parallel subtests named "sqlite" and
// "postgres". SQLite databases are files in the test's temporary directory,
// which the testing package removes. PostgreSQL databases are schemas of
// their own (internal/scratchdb, named canonlog_test_…) on the server named
// by TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), dropped when
// the test ends. When PostgreSQL is unreachable its subtests skip with a
// one-line reason — unless CANONLOG_REQUIRE_POSTGRES=1, where they fail.
package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/scratchdb"
	"github.com/canonlog/canonlog/migrations"
)

// DefaultPostgresURL is used when TEST_DATABASE_URL is not set.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Backend is one fresh database.
type Backend struct {
	Name    string
	Dialect eventlog.Backend
	// URL opens the fresh database (for PostgreSQL it pins search_path to
	// the test's schema); open more pools on it with Open.
	URL string
	// Schema is the PostgreSQL schema of the test ("" on SQLite).
	Schema string
}

// Backends lists the backend names every storage test runs on.
var Backends = []string{"sqlite", "postgres"}

// Run runs fn once per backend as parallel subtests named after the
// backend. fn creates the databases it needs with New(t, backend), one per
// subtest, so subtests never share state.
func Run(t *testing.T, fn func(t *testing.T, backend string)) {
	t.Helper()
	for _, name := range Backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if name == "postgres" {
				probe(t) // skip (or fail) early when the server is unreachable
			}
			fn(t, name)
		})
	}
}

// New returns a fresh empty database on the named backend ("sqlite" or
// "postgres"), removed when t ends.
func New(t testing.TB, name string) Backend {
	t.Helper()
	switch name {
	case "sqlite":
		path := filepath.Join(t.TempDir(), "canonlog.db")
		return Backend{Name: name, Dialect: eventlog.SQLite, URL: "sqlite:" + path}
	case "postgres":
		return newPostgres(t)
	default:
		t.Fatalf("dbtest: unknown backend %q", name)
		return Backend{}
	}
}

// MaxConns caps each pool Open and Admin return on PostgreSQL. Many
// tests run at once, and CI may run two copies of the suite side by side,
// on one server with max_connections 100: uncapped pools of concurrent
// writers ran it out of connections (53300). Goroutines beyond the cap
// queue for a connection, as a service's would; a test that needs more
// raises it with SetPoolSize.
const MaxConns = 8

// SetPoolSize lets db open n connections and keep n idle. SetMaxOpenConns
// alone is not enough after Open: database/sql lowered the idle limit to
// MaxConns along with the cap, and a pool with more goroutines than idle
// connections opens and closes connections all along.
func SetPoolSize(db *sqlx.DB, n int) {
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
}

// Open opens a new pool on b's database, closed when t ends.
func (b Backend) Open(t testing.TB) *sqlx.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := eventlog.OpenDB(ctx, b.URL)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	if b.Dialect == eventlog.Postgres {
		db.SetMaxOpenConns(MaxConns)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Migrated opens a new pool on b's database with canonlog's core migrations
// and the given sets applied.
func (b Backend) Migrated(t testing.TB, sets ...migrations.Set) *sqlx.DB {
	t.Helper()
	db := b.Open(t)
	if _, err := migrations.Up(context.Background(), db, sets...); err != nil {
		t.Fatalf("dbtest: migrate: %v", err)
	}
	return db
}

var (
	probeOnce sync.Once
	probeErr  error
)

// PostgresURL returns TEST_DATABASE_URL or DefaultPostgresURL.
func PostgresURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultPostgresURL
}

// RequirePostgres reports whether CANONLOG_REQUIRE_POSTGRES=1 is set.
func RequirePostgres() bool { return os.Getenv("CANONLOG_REQUIRE_POSTGRES") == "1" }

// Admin returns a pool on the PostgreSQL server itself (outside any test
// schema), closed when t ends, or skips/fails t when the server is
// unreachable. The pool connects on first use, so a test that calls Admin
// only to skip early holds no connection.
func Admin(t testing.TB) *sqlx.DB {
	t.Helper()
	probe(t)
	db, err := sqlx.Open("postgres", PostgresURL())
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	db.SetMaxOpenConns(MaxConns)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// probe skips or fails t when the server is unreachable; it connects
// once per process.
func probe(t testing.TB) {
	t.Helper()
	probeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var db *sqlx.DB
		if db, probeErr = eventlog.OpenDB(ctx, PostgresURL()); probeErr == nil {
			_ = db.Close()
		}
	})
	if probeErr != nil {
		if RequirePostgres() {
			t.Fatalf("dbtest: PostgreSQL required (CANONLOG_REQUIRE_POSTGRES=1) but unreachable: %v", probeErr)
		}
		t.Skipf("PostgreSQL unreachable, skipping (set TEST_DATABASE_URL): %v", probeErr)
	}
}

// NewName returns a fresh name for a test schema or role on the shared
// server: canonlog_test_ and 12 random hex digits. CI fails a run that
// leaves such a name behind.
func NewName() string { return scratchdb.NewName(namePrefix) }

// namePrefix begins every schema and role the tests make on the shared
// server: CI's leftover check looks for it.
const namePrefix = "canonlog_test"

// URL returns the test server's URL (PostgresURL) as user (the URL's own
// when user is ""), with search_path pinned to schema.
func URL(user, schema string) (string, error) {
	u, err := url.Parse(PostgresURL())
	if err != nil {
		return "", fmt.Errorf("TEST_DATABASE_URL: %w", err)
	}
	if user != "" {
		u.User = url.User(user)
	}
	return scratchdb.SchemaURL(u.String(), schema)
}

// SessionURL returns b.URL with its PostgreSQL sessions tagged by tag (as
// their application_name), so that WaitSessionsGone can tell when a process
// using it has no session left on the server. On SQLite it is b.URL.
func (b Backend) SessionURL(tag string) string {
	if b.Dialect != eventlog.Postgres {
		return b.URL
	}
	u, err := url.Parse(b.URL)
	if err != nil {
		return b.URL // b.URL came from URL, which parsed it
	}
	q := u.Query()
	q.Set("application_name", tag)
	u.RawQuery = q.Encode()
	return u.String()
}

// WaitSessionsGone waits until the server has no session tagged tag (see
// SessionURL) left. A killed client's session outlives it: its backend
// finishes the statement in hand — a COMMIT included — before it notices
// the client is gone. Only once the backend has exited is the outcome of
// the killed client's work settled, so tests that judge what a killed
// process left must wait for this first. On SQLite it returns at once: a
// killed process's transaction dies with it.
func (b Backend) WaitSessionsGone(t testing.TB, tag string) {
	t.Helper()
	if b.Dialect != eventlog.Postgres {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	probe(t)
	db, err := sqlx.Open("postgres", PostgresURL())
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	defer db.Close()
	var left []string
	for {
		left = left[:0]
		err := db.SelectContext(ctx, &left, `SELECT pid || ' ' || coalesce(state, '') || ': ' || left(query, 60)
FROM pg_stat_activity WHERE application_name = $1`, tag)
		if err == nil && len(left) == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("dbtest: sessions of %s still on the server after 2m: %q (%v)", tag, left, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newPostgres makes the test's schema: a scratch set of one, named
// canonlog_test_<random>_1.
func newPostgres(t testing.TB) Backend {
	t.Helper()
	probe(t)
	set, err := scratchdb.New(PostgresURL(), &scratchdb.Config{Prefix: namePrefix})
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	// Registered before Create, so that a schema whose creation failed
	// halfway is dropped too; it runs after the cleanups of the pools the
	// test opens later.
	t.Cleanup(func() {
		if err := set.Close(); err != nil {
			t.Errorf("dbtest: %v", err)
		}
	})
	db, err := set.Create(context.Background())
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	return Backend{Name: "postgres", Dialect: eventlog.Postgres, URL: db.URL, Schema: db.Name}
}

// CopyRow COPYs one effect event into event_log on PostgreSQL, naming the
// columns cols: "seq, ts, kind, payload" or "ts, kind, payload, tx_id",
// with n as the explicit seq or tx_id. Tests use it to prove the schema
// refuses a position chosen by the writer.
func CopyRow(ctx context.Context, db *sql.DB, cols string, n int64) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	st, err := tx.PrepareContext(ctx, `COPY event_log (`+cols+`) FROM STDIN`)
	if err != nil {
		return err
	}
	defer st.Close()
	args := []any{"2026-05-16T01:00:00Z", "effect", `{}`}
	if strings.HasPrefix(cols, "seq") {
		args = append([]any{n}, args...)
	} else {
		args = append(args, n)
	}
	if _, err := st.ExecContext(ctx, args...); err != nil {
		return err
	}
	if _, err := st.ExecContext(ctx); err != nil {
		return err
	}
	return tx.Commit()
}
