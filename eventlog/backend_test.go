package eventlog_test

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

func TestBackendOf(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		want := map[string]eventlog.Backend{"sqlite": eventlog.SQLite, "postgres": eventlog.Postgres}[backend]
		db := dbtest.New(t, backend).Open(t)

		got, err := eventlog.BackendOf(db)
		require.NoError(t, err)
		require.Equal(t, want, got)
		require.Equal(t, backend, got.String())

		// A projection asks the transaction it is given.
		tx, err := db.BeginTxx(context.Background(), nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		got, err = eventlog.BackendOf(tx)
		require.NoError(t, err)
		require.Equal(t, want, got)

		_, err = eventlog.BackendOf(sqlx.NewDb(db.DB, "mysql"))
		require.ErrorContains(t, err, `unsupported database driver "mysql"`)
	})

	t.Run("Nil", func(t *testing.T) {
		t.Parallel()
		for _, db := range []interface{ DriverName() string }{nil, (*sqlx.DB)(nil), (*sqlx.Tx)(nil)} {
			_, err := eventlog.BackendOf(db)
			require.ErrorContains(t, err, "nil", "%T", db)
		}
	})
	require.Equal(t, "backend(0)", eventlog.Backend(0).String())
}
