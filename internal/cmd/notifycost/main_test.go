package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// Every case appends and is reported, the listener hears the
// notifications, and the scratch database is dropped; SQLite is refused
// and leaves nothing behind.
func TestRun(t *testing.T) {
	t.Parallel()
	b := dbtest.New(t, "postgres") // skips, or fails under CANONLOG_REQUIRE_POSTGRES, without a server
	_ = b
	o := options{clients: 2, rounds: 2, window: 200 * time.Millisecond,
		prefix: "canonlog_test_notifycost", databaseURL: dbtest.PostgresURL()}
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), o, &out))
	for _, clients := range []string{"1", "2"} {
		for _, c := range []string{"none", "in-transaction", "notify"} {
			require.Regexp(t, `CASE clients=`+clients+` `+c+` +appends/s median [1-9]\d* +÷ none: median [\d.]+ \([\d.]+-[\d.]+\)`, out.String())
		}
	}
	n := regexp.MustCompile(`notifications received: (\d+)`).FindStringSubmatch(out.String())
	require.NotNil(t, n, out.String())
	require.NotEqual(t, "0", n[1])
	require.Contains(t, out.String(), "removed the scratch database") // scratchlog's tests check that it is gone
	dir := t.TempDir()
	err := run(context.Background(), options{clients: 1, rounds: 1, window: time.Millisecond,
		prefix: "canonlog_test_notifycost", databaseURL: "sqlite:" + dir + "/x.db"}, &out)
	require.ErrorContains(t, err, "LISTEN/NOTIFY is PostgreSQL's")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "the scratch directory is removed")
}
