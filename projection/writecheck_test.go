package projection_test

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

// leakyView is testView that also counts its events in a table it does
// not list in Tables(): an online rebuild, which copies only the listed
// tables, would write the live one.
type leakyView struct{ testView }

func (v *leakyView) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	return v.ApplyBatch(ctx, tx, []eventlog.Event{ev})
}

func (v *leakyView) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	if err := v.testView.ApplyBatch(ctx, tx, events); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE leak_count SET n = n + ?`), len(events))
	return err
}

func (v *leakyView) Migrations() migrations.Set {
	files := v.testView.Migrations().Postgres.(fstest.MapFS)
	files["00002_leak_count.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE leak_count (n BIGINT NOT NULL);\nINSERT INTO leak_count VALUES (0);\n-- +goose Down\nDROP TABLE leak_count;\n")}
	return migrations.Set{Postgres: files, SQLite: files}
}

// stagingView is testView that stages each batch in a temporary table of
// its own first: the rebuild's own writes, which the check lets through.
type stagingView struct{ testView }

func (v *stagingView) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	return v.ApplyBatch(ctx, tx, []eventlog.Event{ev})
}

func (v *stagingView) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	for _, q := range []string{`CREATE TEMPORARY TABLE IF NOT EXISTS staging (n BIGINT)`, `DELETE FROM staging`} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO staging VALUES (?)`), len(events)); err != nil {
		return err
	}
	return v.testView.ApplyBatch(ctx, tx, events)
}

// An online rebuild whose projection writes a table outside the copy
// fails before that write commits, on PostgreSQL, where the copy lives
// in a schema of its own: the live table and view stay as they were.
func TestOnlineRebuildRefusesWritesOutsideTheCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbtest.Run(t, func(t *testing.T, backend string) {
		if backend != "postgres" {
			t.Skip("on SQLite the copy is temporary tables of the rebuild's connection; the check is PostgreSQL's")
		}
		log, reg, db := setup(t, backend, &leakyView{})
		for range 5 {
			_, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "h1", `{}`))
			require.NoError(t, err)
		}
		require.Equal(t, 5, count(t, db, "test_view"))
		var n int
		require.NoError(t, db.Get(&n, `SELECT n FROM leak_count`))
		require.Equal(t, 5, n)

		_, err := projection.Rebuild(ctx, log, reg, nil)
		require.ErrorIs(t, err, projection.ErrInvalidProjection)
		require.ErrorContains(t, err, "leak_count")
		require.NoError(t, db.Get(&n, `SELECT n FROM leak_count`))
		require.Equal(t, 5, n, "the write outside the copy was rolled back")
		require.Equal(t, 5, count(t, db, "test_view"))

		// Offline, the projection writes its live tables anyway.
		res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Offline: true})
		require.NoError(t, err)
		require.False(t, res[0].Online)

		// A temporary table of the rebuild's own (creating it writes the
		// system catalogs) is no write outside the copy.
		log, reg, db = setup(t, backend, &stagingView{})
		for range 5 {
			_, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "h1", `{}`))
			require.NoError(t, err)
		}
		res, err = projection.Rebuild(ctx, log, reg, nil)
		require.NoError(t, err)
		require.True(t, res[0].Online, res[0].OfflineReason)
		require.Equal(t, 5, count(t, db, "test_view"))
	})
}

// An online verify whose projection writes a table outside its private
// copy fails with ErrInvalidProjection and changes nothing live: SQLite
// refuses the write, PostgreSQL rolls back the page that made it. A
// temporary table of the projection's own is no such write.
func TestVerifyRefusesWritesOutsideTheCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbtest.Run(t, func(t *testing.T, backend string) {
		log, reg, db := setup(t, backend, &leakyView{})
		for range 5 {
			_, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "h1", `{}`))
			require.NoError(t, err)
		}
		var n int
		require.NoError(t, db.Get(&n, `SELECT n FROM leak_count`))
		require.Equal(t, 5, n)

		_, err := projection.Verify(ctx, log, reg, nil)
		require.ErrorIs(t, err, projection.ErrInvalidProjection)
		require.ErrorContains(t, err, "leak_count")
		require.ErrorContains(t, err, "while verifying")
		require.NoError(t, db.Get(&n, `SELECT n FROM leak_count`))
		require.Equal(t, 5, n, "the verify wrote nothing live")
		require.Equal(t, 5, count(t, db, "test_view"))

		log, reg, _ = setup(t, backend, &stagingView{})
		for range 5 {
			_, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "h1", `{}`))
			require.NoError(t, err)
		}
		res, err := projection.Verify(ctx, log, reg, nil)
		require.NoError(t, err)
		require.True(t, res[0].Equal, "%+v", res[0])
	})
}
