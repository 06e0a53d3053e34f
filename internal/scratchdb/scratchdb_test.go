package scratchdb_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/scratchdb"
)

// prefix is what CI's leftover check looks for.
const prefix = "canonlog_test_scratchdb"

// baseURL returns the URL a set is made next to on backend: the test
// server, or a SQLite file in a directory of the test's own.
func baseURL(t *testing.T, backend string) string {
	t.Helper()
	if backend == "postgres" {
		dbtest.Admin(t) // skips or fails when the server is unreachable
		return dbtest.PostgresURL()
	}
	return "sqlite:" + filepath.Join(t.TempDir(), "canonlog.db")
}

// exists reports whether the scratch database db still exists.
func exists(t *testing.T, backend string, db *scratchdb.DB) bool {
	t.Helper()
	if backend == "sqlite" {
		_, err := os.Stat(db.Name)
		return err == nil
	}
	var n int
	require.NoError(t, dbtest.Admin(t).Get(&n, `SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1`, db.Name))
	return n == 1
}

func TestSet(t *testing.T) {
	t.Parallel()
	for _, backend := range dbtest.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			base := baseURL(t, backend)
			set, err := scratchdb.New(base, &scratchdb.Config{Prefix: prefix})
			require.NoError(t, err)
			t.Cleanup(func() { _ = set.Close() })
			require.Regexp(t, "^"+prefix+"_[0-9a-f]{12}$", set.Name())
			require.NoError(t, set.Ping(ctx))

			// Two databases, each usable and apart from the other.
			var dbs []*scratchdb.DB
			for i := range 2 {
				sdb, err := set.Create(ctx)
				require.NoError(t, err)
				require.True(t, exists(t, backend, sdb))
				db, err := eventlog.OpenDB(ctx, sdb.URL)
				require.NoError(t, err)
				_, err = db.Exec(`CREATE TABLE t (n INTEGER)`)
				require.NoError(t, err, "database %d", i)
				require.NoError(t, db.Close())
				dbs = append(dbs, sdb)
			}
			if backend == "postgres" {
				require.Equal(t, eventlog.Postgres, set.Dialect())
				require.Empty(t, set.Dir())
				require.Equal(t, set.Name()+"_1", dbs[0].Name)
				require.Equal(t, set.Name()+"_2", dbs[1].Name)
			} else {
				require.Equal(t, eventlog.SQLite, set.Dialect())
				// Next to the base file, on its disk.
				require.Equal(t, filepath.Dir(base[len("sqlite:"):]), filepath.Dir(set.Dir()))
				require.Equal(t, set.Dir(), filepath.Dir(dbs[0].Name))
			}

			// Drop removes one at once; again is a no-op; Close removes
			// the rest.
			require.NoError(t, dbs[0].Drop())
			require.False(t, exists(t, backend, dbs[0]))
			require.NoError(t, dbs[0].Drop())
			require.True(t, exists(t, backend, dbs[1]))
			require.NoError(t, set.Close())
			require.False(t, exists(t, backend, dbs[1]))
			require.NoError(t, set.Close())
			if backend == "sqlite" {
				_, err := os.Stat(set.Dir())
				require.ErrorIs(t, err, os.ErrNotExist)
			}
			_, err = set.Create(ctx)
			require.Error(t, err, "Create after Close")
		})
	}
}

// A Create that fails (here: its context is already cancelled) leaves
// nothing behind once the set is closed.
func TestCreateFails(t *testing.T) {
	t.Parallel()
	dbtest.Admin(t)
	set, err := scratchdb.New(dbtest.PostgresURL(), &scratchdb.Config{Prefix: prefix})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = set.Create(ctx)
	require.Error(t, err)
	require.NoError(t, set.Close())
	var n int
	require.NoError(t, dbtest.Admin(t).Get(&n, `SELECT COUNT(*) FROM pg_namespace WHERE starts_with(nspname, $1)`, set.Name()))
	require.Zero(t, n)
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		url    string
		prefix string
	}{
		"unknown scheme":     {"mysql://localhost/db", ""},
		"malformed URL":      {"postgres://u:p@h:port/db", ""},
		"uppercase prefix":   {"sqlite::memory:", "Canonlog"},
		"quote in prefix":    {"sqlite::memory:", `canonlog"x`},
		"leading digit":      {"sqlite::memory:", "1canonlog"},
		"prefix too long":    {"sqlite::memory:", "canonlog_" + strings.Repeat("a", 40)},
		"missing parent dir": {"sqlite:/nonexistent/dir/canonlog.db", ""},
	} {
		_, err := scratchdb.New(tc.url, &scratchdb.Config{Prefix: tc.prefix})
		require.Error(t, err, name)
		require.NotContains(t, err.Error(), ":p@", "%s: the password is redacted", name)
	}
}

func TestNewSQLiteDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, base := range []string{"sqlite::memory:", "file:x.db?mode=memory", "sqlite:/nonexistent/canonlog.db"} {
		set, err := scratchdb.New(base, &scratchdb.Config{Prefix: prefix, Dir: dir})
		require.NoError(t, err, base)
		require.Equal(t, dir, filepath.Dir(set.Dir()), base)
		require.Regexp(t, regexp.MustCompile(`^canonlog-test-scratchdb-[0-9a-f]{12}-`), filepath.Base(set.Dir()))
		require.NoError(t, set.Close())
	}
	set, err := scratchdb.New("sqlite::memory:", nil)
	require.NoError(t, err)
	require.Equal(t, filepath.Clean(os.TempDir()), filepath.Dir(set.Dir()))
	require.NoError(t, set.Close())
}

func TestSchemaURL(t *testing.T) {
	t.Parallel()
	for schema, want := range map[string]string{
		"canonlog_test_1a": "canonlog_test_1a",
		"Mixed":            `"Mixed"`,
		`we"ird name`:      `"we""ird name"`,
	} {
		got, err := scratchdb.SchemaURL("postgres://u@h/db?sslmode=disable&search_path=other", schema)
		require.NoError(t, err)
		u, err := url.Parse(got)
		require.NoError(t, err)
		require.Equal(t, want, u.Query().Get("search_path"), schema)
		require.Equal(t, "disable", u.Query().Get("sslmode"))
	}
}

// A mixed-case schema is created, reached through its URL and dropped.
func TestSchemaURLQuoted(t *testing.T) {
	t.Parallel()
	admin := dbtest.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	schema := dbtest.NewName() + "_Mixed Case"
	_, err := admin.ExecContext(ctx, `CREATE SCHEMA "`+schema+`"`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(`DROP SCHEMA "` + schema + `" CASCADE`) })
	u, err := scratchdb.SchemaURL(dbtest.PostgresURL(), schema)
	require.NoError(t, err)
	db, err := eventlog.OpenDB(ctx, u)
	require.NoError(t, err)
	defer db.Close()
	var got string
	require.NoError(t, db.GetContext(ctx, &got, `SELECT current_schema()`))
	require.Equal(t, schema, got)
}
