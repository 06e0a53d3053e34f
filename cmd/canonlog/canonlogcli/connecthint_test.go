package canonlogcli

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
)

// A SQLite database is a file: failing to open one is never a server that
// is not running, and the hint says what to look at instead.
func TestConnectHintSQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	for _, url := range []string{"sqlite:" + filepath.Join(missing, "canonlog.db"), "file:" + filepath.Join(missing, "canonlog.db")} {
		r := runIn(t, "", "--database-url", url, "migrate", "up")
		require.NotEqual(t, 0, r.code)
		require.NotContains(t, r.err, "running", url)
		require.Contains(t, r.err, "the SQLite file's directory exists", url)
		require.Equal(t, 1, strings.Count(strings.TrimSuffix(r.err, "\n"), "\n")+1, "one line: %q", r.err)
		_, err := os.Stat(missing)
		require.ErrorIs(t, err, fs.ErrNotExist, "nothing was created")
	}
}

func TestConnectHint(t *testing.T) {
	t.Parallel()
	// A real SQLITE_BUSY: a second connection that does not wait finds
	// the file locked by the first.
	path := filepath.Join(t.TempDir(), "busy.db")
	holder, err := sqlx.Open("sqlite", "file:"+path)
	require.NoError(t, err)
	defer holder.Close()
	conn, err := holder.Conn(context.Background())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(context.Background(), `BEGIN IMMEDIATE`)
	require.NoError(t, err)
	other, err := sqlx.Open("sqlite", "file:"+path+"?_txlock=immediate")
	require.NoError(t, err)
	defer other.Close()
	_, busy := other.Begin()
	require.Error(t, busy)

	notFound := errors.New("unable to open database file")
	for _, tc := range []struct {
		url  string
		err  error
		want string
	}{
		{"sqlite:" + path, busy, "another process kept the SQLite database locked for longer than the busy timeout"},
		{"file:" + path, busy, "another process kept the SQLite database locked"},
		{"sqlite:" + path, notFound, "the SQLite file's directory exists"},
		{"postgres://127.0.0.1:1/db", notFound, "that the database is running"},
		{"postgresql://127.0.0.1:1/db", busy, "that the database is running"},
	} {
		require.Contains(t, connectHint(tc.url, tc.err), tc.want, "%s: %v", tc.url, tc.err)
	}
}
