package pgcluster_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/pgcluster"
)

func TestCluster(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var dir string
	t.Run("Lifecycle", func(t *testing.T) {
		c := pgcluster.Start(t)
		dir = c.Dir()
		db, err := eventlog.OpenDB(ctx, c.URL())
		require.NoError(t, err)
		defer db.Close()
		_, err = db.ExecContext(ctx, `CREATE TABLE kept (n int)`)
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, `INSERT INTO kept VALUES (1)`)
		require.NoError(t, err)

		for _, mode := range []pgcluster.Mode{pgcluster.Immediate, pgcluster.Fast} {
			require.NoError(t, c.Restart(mode))
			// The same pool reaches the restarted server; committed rows
			// survived, also the crash.
			var n int
			require.Eventually(t, func() bool { return db.GetContext(ctx, &n, `SELECT n FROM kept`) == nil },
				30*time.Second, 50*time.Millisecond, "pool did not recover after %s restart", mode)
			require.Equal(t, 1, n)
		}

		require.NoError(t, c.Stop(pgcluster.Fast))
		// The pool first finds its idle connections dead, then the
		// server refuses new ones; both are retryable.
		refused := false
		for range 5 {
			err := db.PingContext(ctx)
			require.Error(t, err)
			require.True(t, eventlog.Retryable(err), "a stopped server: %v", err)
			if refused = strings.Contains(err.Error(), "connection refused"); refused {
				break
			}
		}
		require.True(t, refused, "pinging a stopped server never reported the connection refused")
		require.Error(t, c.Stop(pgcluster.Fast), "stopping a stopped cluster")
		require.NoError(t, c.Resume())
		require.NoError(t, db.PingContext(ctx))
	})
	_, err := os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "the cluster directory outlived the test")
}
