package canonlogcli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

const testPassword = "s3cret-pw-42"

// TestPasswordsNeverPrinted: a password in the database URL appears in no
// output, whether the command works or fails.
func TestPasswordsNeverPrinted(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, r result) {
		t.Helper()
		require.NotContains(t, r.out, testPassword)
		require.NotContains(t, r.err, testPassword)
	}

	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		url := "postgres://canon:" + testPassword + "@127.0.0.1:1/app?sslmode=disable&connect_timeout=2"
		for _, args := range [][]string{{"status"}, {"migrate", "up"}, {"demo"}, {"verify"}, {"append", "--kind", "x", "--payload", "{}"}} {
			r := runIn(t, "", append([]string{"--database-url", url}, args...)...)
			require.Equal(t, 1, r.code, "%v", args)
			check(t, r)
			require.Contains(t, r.err, "127.0.0.1:1", "the error says which database")
			require.Contains(t, r.err, "check --database-url")
			require.Equal(t, 1, strings.Count(r.err, "\n"), r.err)
		}
	})

	t.Run("Malformed", func(t *testing.T) {
		t.Parallel()
		for _, url := range []string{
			"postgres://canon:" + testPassword + "%zz@127.0.0.1:5432/app",
			"postgres://canon:" + testPassword + "@127.0.0.1:port/app",
			// An unencoded '/' makes url.Parse read the password as a port.
			"postgres://canon:" + testPassword + "/x@127.0.0.1:5432/app",
		} {
			r := runIn(t, "", "--database-url", url, "status")
			require.Equal(t, 1, r.code)
			check(t, r)
		}
	})

	t.Run("Working", func(t *testing.T) {
		t.Parallel()
		dbtest.Admin(t)
		// lib/pq reads a password from the user part and from a password
		// parameter; the test server trusts and ignores both.
		for name, form := range map[string]struct {
			url  func(raw string) string
			show string // how status shows it
		}{
			"user part": {func(raw string) string { return withPassword(t, raw, testPassword) }, "postgres:xxxxx@"},
			"parameter": {func(raw string) string { return raw + "&password=" + testPassword }, "&password=xxxxx"},
			"both":      {func(raw string) string { return withPassword(t, raw, testPassword) + "&password=" + testPassword }, "&password=xxxxx"},
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				url := form.url(dbtest.New(t, "postgres").URL)
				// Before migrate up: the missing table is named, the URL
				// without its password.
				r := runIn(t, "", "--database-url", url, "status")
				require.Equal(t, 1, r.code)
				require.Contains(t, r.err, "has no table event_log")
				require.Contains(t, r.err, form.show)
				check(t, r)
				for _, args := range [][]string{{"migrate", "up"}, {"migrate", "up", "-o", "json"}, {"migrate", "status"}, {"demo", "--hosts", "3", "--progress", "lines"}, {"status"}, {"status", "-o", "json"}, {"query", "--limit", "3"}, {"verify"}, {"rebuild", "--all"}} {
					r := runIn(t, "", append([]string{"--database-url", url}, args...)...)
					require.Equal(t, 0, r.code, "%v: %s", args, r.err)
					check(t, r)
				}
				for _, args := range [][]string{{"status"}, {"status", "-o", "json"}, {"migrate", "up"}} {
					r := runIn(t, "", append([]string{"--database-url", url}, args...)...)
					require.Contains(t, r.out, form.show, "%v: the URL is shown, its password hidden", args)
				}
			})
		}
	})

	// A URL OpenDB does not take is named in the error, its secrets hidden.
	t.Run("UnknownScheme", func(t *testing.T) {
		t.Parallel()
		for url, show := range map[string]string{
			"host=127.0.0.1 user=canon password=" + testPassword + " dbname=app":     "host=127.0.0.1 user=canon password=xxxxx dbname=app",
			"host=127.0.0.1 user=canon password='" + testPassword + " x' dbname=app": "host=127.0.0.1 user=canon password=xxxxx dbname=app",
			"mysql://canon:" + testPassword + "@127.0.0.1/app":                       "mysql://canon:xxxxx@127.0.0.1/app",
		} {
			for _, args := range [][]string{{"status"}, {"migrate", "up"}} {
				r := runIn(t, "", append([]string{"--database-url", url}, args...)...)
				require.Equal(t, 1, r.code, "%v", args)
				check(t, r)
				require.Contains(t, r.err, "database URL "+show+": unknown scheme")
				require.Equal(t, 1, strings.Count(r.err, "\n"), r.err)
			}
		}
	})
}

// TestDatabaseURLFallback: --database-url, then CANONLOG_DATABASE_URL,
// then DATABASE_URL. Not parallel: it sets environment variables.
func TestDatabaseURLFallback(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	t.Setenv("CANONLOG_DATABASE_URL", "")
	t.Setenv("DATABASE_URL", "sqlite:"+path("a.db"))
	_, errOut, code := runCLI(t, "migrate", "up")
	require.Equal(t, 0, code, errOut)
	require.FileExists(t, path("a.db"))

	t.Setenv("CANONLOG_DATABASE_URL", "sqlite:"+path("b.db"))
	_, errOut, code = runCLI(t, "migrate", "up")
	require.Equal(t, 0, code, errOut)
	require.FileExists(t, path("b.db"))

	_, errOut, code = runCLI(t, "--database-url", "sqlite:"+path("c.db"), "migrate", "up")
	require.Equal(t, 0, code, errOut)
	require.FileExists(t, path("c.db"))

	// A password from the environment is hidden like one from the flag.
	t.Setenv("CANONLOG_DATABASE_URL", "postgres://canon:"+testPassword+"@127.0.0.1:1/app?sslmode=disable&connect_timeout=2")
	out, errOut, code := runCLI(t, "status")
	require.Equal(t, 1, code)
	require.NotContains(t, out+errOut, testPassword)
}
