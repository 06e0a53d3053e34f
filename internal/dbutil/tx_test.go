package dbutil_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/dbutil"
)

// WithTx commits what fn wrote; rolls back when fn fails, panics, or ctx
// ended before the commit; and does not begin under an ended ctx.
func TestWithTx(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		db := dbtest.New(t, backend).Open(t)
		_, err := db.Exec(`CREATE TABLE t (n INTEGER PRIMARY KEY)`)
		require.NoError(t, err)
		insert := func(n int) func(*sqlx.Tx) error {
			return func(tx *sqlx.Tx) error {
				_, err := tx.Exec(tx.Rebind(`INSERT INTO t (n) VALUES (?)`), n)
				return err
			}
		}
		count := func() int {
			var c int
			require.NoError(t, db.Get(&c, `SELECT COUNT(*) FROM t`))
			return c
		}
		ctx := context.Background()
		require.NoError(t, dbutil.WithTx(ctx, db, nil, insert(1)))
		require.Equal(t, 1, count())

		boom := errors.New("boom")
		err = dbutil.WithTx(ctx, db, nil, func(tx *sqlx.Tx) error {
			require.NoError(t, insert(2)(tx))
			return boom
		})
		require.ErrorIs(t, err, boom)
		require.Equal(t, 1, count())

		require.Panics(t, func() {
			_ = dbutil.WithTx(ctx, db, nil, func(tx *sqlx.Tx) error {
				require.NoError(t, insert(3)(tx))
				panic("in fn")
			})
		})
		require.Equal(t, 1, count())

		cctx, cancel := context.WithCancel(ctx)
		err = dbutil.WithTx(cctx, db, nil, func(tx *sqlx.Tx) error {
			require.NoError(t, insert(4)(tx))
			cancel() // the caller gives up after the last statement
			return nil
		})
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, 1, count())

		err = dbutil.WithTx(cctx, db, nil, insert(5))
		require.ErrorIs(t, err, dbutil.ErrBegin)
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, 1, count())
	})
}
