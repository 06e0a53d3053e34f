package main

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
		} {
			r := runIn(t, "", "--database-url", url, "status")
			require.Equal(t, 1, r.code)
			check(t, r)
		}
	})

	t.Run("Working", func(t *testing.T) {
		t.Parallel()
		dbtest.Admin(t)
		b := dbtest.New(t, "postgres")
		url := withPassword(t, b.URL, testPassword)
		for _, args := range [][]string{{"migrate", "up"}, {"demo", "--hosts", "3", "--progress", "lines"}, {"status"}, {"status", "-o", "json"}, {"verify"}, {"rebuild", "--all"}} {
			r := runIn(t, "", append([]string{"--database-url", url}, args...)...)
			require.Equal(t, 0, r.code, "%v: %s", args, r.err)
			check(t, r)
		}
		r := runIn(t, "", "--database-url", url, "status")
		require.Contains(t, r.out, "xxxxx@", "the URL is shown, its password hidden")
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
