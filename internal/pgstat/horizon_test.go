package pgstat_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/pgcluster"
	"github.com/canonlog/canonlog/internal/pgstat"
)

// TestReadHorizon runs on a cluster of its own: on the shared test
// server other tests' transactions come and go, and any of them may hold
// the horizon.
func TestReadHorizon(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := pgcluster.Start(t)
	db, err := eventlog.OpenDB(ctx, c.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })

	// The server's own work (autovacuum's ANALYZE) may hold it briefly.
	nothingHeld := func() bool {
		_, ok, err := pgstat.ReadHorizon(ctx, db)
		return err == nil && !ok
	}
	t.Run("none in progress", func(t *testing.T) {
		require.Eventually(t, nothingHeld, time.Minute, 10*time.Millisecond)
	})

	t.Run("a transaction held open", func(t *testing.T) {
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		var (
			xid uint64
			pid int
		)
		// Only a transaction that took an id holds the horizon.
		require.NoError(t, tx.QueryRowxContext(ctx, `SELECT pg_current_xact_id()::text::numeric, pg_backend_pid()`).Scan(&xid, &pid))

		var first pgstat.Horizon
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			h, ok, err := pgstat.ReadHorizon(ctx, db)
			require.NoError(c, err)
			require.True(c, ok, "a transaction is held open")
			require.LessOrEqual(c, h.TxID, xid)
			first = h
			require.Equal(c, xid, h.TxID)
		}, time.Minute, 10*time.Millisecond)
		require.Equal(t, pid, first.PID)
		require.Equal(t, "idle in transaction", first.State)
		require.Equal(t, "postgres", first.Database)
		require.False(t, first.Started.IsZero())
		require.Positive(t, first.Age)

		time.Sleep(5 * time.Millisecond)
		age, ok, err := pgstat.HorizonAge(ctx, db)
		require.NoError(t, err)
		require.True(t, ok)
		require.Greater(t, age, first.Age, "the same transaction holds it, older now")

		require.NoError(t, tx.Rollback())
		require.Eventually(t, nothingHeld, time.Minute, 10*time.Millisecond)
	})

	t.Run("a read-only transaction holds nothing", func(t *testing.T) {
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		_, err = tx.ExecContext(ctx, `SELECT count(*) FROM pg_class`)
		require.NoError(t, err)
		require.Eventually(t, nothingHeld, time.Minute, 10*time.Millisecond)
	})
}
