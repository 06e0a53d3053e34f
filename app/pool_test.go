package app_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// TestPoolSize: the pool Module opens is capped by Config.MaxOpenConns,
// with DefaultMaxOpenConns on PostgreSQL and OpenDB's own settings on
// SQLite, and keeps at most Config.MaxIdleConns idle; a supplied pool is
// left as the service sized it.
func TestPoolSize(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		// maxOpen starts the module on a fresh database with cfg and
		// returns its pool's cap.
		maxOpen := func(t *testing.T, cfg app.Config) int {
			t.Helper()
			cfg.DatabaseURL = dbtest.New(t, backend).URL
			a, s := setup(t, cfg)
			a.RequireStart()
			t.Cleanup(a.RequireStop)
			return s.DB.Stats().MaxOpenConnections
		}

		t.Run("default", func(t *testing.T) {
			t.Parallel()
			want := app.DefaultMaxOpenConns
			if backend == "sqlite" {
				want = 4 // eventlog.OpenDB's: one writer, readers beside it
			}
			require.Equal(t, want, maxOpen(t, app.Config{}))
		})

		t.Run("configured", func(t *testing.T) {
			t.Parallel()
			require.Equal(t, 7, maxOpen(t, app.Config{MaxOpenConns: 7}))
		})

		t.Run("idle_connections_kept", func(t *testing.T) {
			t.Parallel()
			cfg := app.Config{DatabaseURL: dbtest.New(t, backend).URL, MaxOpenConns: 6, MaxIdleConns: 2}
			a, s := setup(t, cfg)
			a.RequireStart()
			t.Cleanup(a.RequireStop)
			var conns []interface{ Close() error }
			for range 4 {
				c, err := s.DB.Conn(ctx)
				require.NoError(t, err)
				conns = append(conns, c)
			}
			for _, c := range conns {
				require.NoError(t, c.Close())
			}
			require.Equal(t, 2, s.DB.Stats().Idle, "four released, two kept")
		})

		t.Run("supplied_database_left_as_sized", func(t *testing.T) {
			t.Parallel()
			db := dbtest.New(t, backend).Open(t)
			db.SetMaxOpenConns(3)
			a, s := setup(t, app.Config{MaxOpenConns: 9}, app.WithDB(db))
			a.RequireStart()
			t.Cleanup(a.RequireStop)
			require.Same(t, db, s.DB)
			require.Equal(t, 3, db.Stats().MaxOpenConnections)
		})
	})

	// Every connection to sqlite::memory: is a database of its own.
	t.Run("sqlite_memory_keeps_one_connection", func(t *testing.T) {
		t.Parallel()
		a, s := setup(t, app.Config{DatabaseURL: "sqlite::memory:", MaxOpenConns: 10, MaxIdleConns: 10})
		a.RequireStart()
		t.Cleanup(a.RequireStop)
		require.Equal(t, 1, s.DB.Stats().MaxOpenConnections)
	})
}
