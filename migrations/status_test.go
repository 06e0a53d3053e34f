package migrations_test

import (
	"context"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
)

// readOnly opens a pool on b's database on which every write fails: a
// SQLite file opened with mode=ro, a PostgreSQL session whose transactions
// are read-only. An operation that works on it wrote nothing.
func readOnly(t *testing.T, b dbtest.Backend) *sqlx.DB {
	t.Helper()
	ro := b
	if b.Name == "postgres" {
		ro.URL += "&default_transaction_read_only=on"
	} else {
		ro.URL += "?mode=ro"
	}
	db := ro.Open(t)
	_, err := db.Exec(`CREATE TABLE write_probe (x INTEGER)`)
	require.Error(t, err, "the read-only pool refuses writes")
	return db
}

// versionTables lists the goose version tables of db.
func versionTables(t *testing.T, db *sqlx.DB) []string {
	t.Helper()
	var out []string
	for _, name := range leftovers(t, db) {
		if name == migrations.CoreTable || strings.HasPrefix(name, migrations.CoreTable+"_") {
			out = append(out, name)
		}
	}
	return out
}

func TestStatusReadsOnly(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		files := coreFiles(t, backend)

		t.Run("EmptyDatabaseCreatesNothing", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, backend)
			db := b.Open(t)
			sts, err := migrations.Status(ctx, db, demoSet())
			require.NoError(t, err)
			requireStatus(t, sts[:len(files)], "core", files, false)
			requireStatus(t, sts[len(files):], "demo", demoFiles, false)
			require.False(t, tableExists(t, db, migrations.CoreTable))
			require.False(t, tableExists(t, db, "canonlog_migrations_demo"))
			require.Empty(t, leftovers(t, db))
			if backend == "sqlite" {
				_, err := os.Stat(sqlitePath(b) + migrations.LockFileSuffix)
				require.ErrorIs(t, err, fs.ErrNotExist, "status takes no migration lock, so creates no lock file")
			}

			// The same on a connection that cannot write at all.
			ro := readOnly(t, b)
			sts, err = migrations.Status(ctx, ro, demoSet())
			require.NoError(t, err)
			requireStatus(t, sts[:len(files)], "core", files, false)
			m, err := migrations.New(ro, demoSet())
			require.NoError(t, err)
			sts, err = m.Status(ctx)
			require.NoError(t, err)
			requireStatus(t, sts, "demo", demoFiles, false)
		})

		t.Run("AfterUp", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, backend)
			db := b.Open(t)
			before := time.Now().Add(-time.Minute)
			_, err := migrations.Up(ctx, db, demoSet())
			require.NoError(t, err)

			ro := readOnly(t, b)
			sts, err := migrations.Status(ctx, ro, demoSet())
			require.NoError(t, err)
			requireStatus(t, sts[:len(files)], "core", files, true)
			requireStatus(t, sts[len(files):], "demo", demoFiles, true)
			for _, st := range sts {
				require.WithinRange(t, st.AppliedAt, before, time.Now().Add(time.Minute), "%+v", st)
			}

			// One set rolled back: its version table stays behind with
			// nothing applied; core is untouched.
			m, err := migrations.New(db, demoSet())
			require.NoError(t, err)
			_, err = m.DownTo(ctx, 0)
			require.NoError(t, err)
			sts, err = migrations.Status(ctx, ro, demoSet())
			require.NoError(t, err)
			requireStatus(t, sts[:len(files)], "core", files, true)
			requireStatus(t, sts[len(files):], "demo", demoFiles, false)
		})

		t.Run("HonoursIsApplied", func(t *testing.T) {
			t.Parallel()
			// Older goose versions recorded a rollback as a row with
			// is_applied false rather than deleting the version's rows;
			// the latest row of a version decides.
			db := dbtest.New(t, backend).Migrated(t, demoSet())
			_, err := db.Exec(`INSERT INTO canonlog_migrations_demo (version_id, is_applied) VALUES (2, false)`)
			require.NoError(t, err)
			sts := status(t, db, demoSet())
			demo := sts[len(files):]
			require.True(t, demo[0].Applied, "%+v", demo[0])
			require.False(t, demo[1].Applied, "%+v", demo[1])
			require.True(t, demo[1].AppliedAt.IsZero())

			plan, err := migrations.PlanDown(ctx, db, demoSet())
			require.NoError(t, err)
			require.Equal(t, "demo", plan[0].Set)
			require.Equal(t, int64(1), plan[0].Version, "version 2 is not applied, so not rolled back: %+v", plan)

			// Applied again later: a newer true row wins.
			_, err = db.Exec(`INSERT INTO canonlog_migrations_demo (version_id, is_applied) VALUES (2, true)`)
			require.NoError(t, err)
			requireStatus(t, status(t, db, demoSet())[len(files):], "demo", demoFiles, true)
		})
	})
}

// tprojSet is a projection's set whose table points into event_log, in
// the shape an application's own projection has.
func tprojSet() migrations.Set {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	return migrations.Set{
		Name: "t_proj",
		Postgres: fstest.MapFS{"00001_t_proj.sql": file(`-- +goose Up
CREATE TABLE t_proj (event_log_seq BIGINT REFERENCES event_log (seq));

-- +goose Down
DROP TABLE t_proj;
`)},
		SQLite: fstest.MapFS{"00001_t_proj.sql": file(`-- +goose Up
CREATE TABLE t_proj (event_log_seq BIGINT REFERENCES event_log (seq));

-- +goose Down
DROP TABLE t_proj;
`)},
	}
}

var tprojFiles = []coreFile{{"00001_t_proj.sql", 1}}

func TestInstalledSets(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		b := dbtest.New(t, backend)
		db := b.Open(t)

		sets, err := migrations.InstalledSets(ctx, db)
		require.NoError(t, err)
		require.Empty(t, sets)

		_, err = migrations.Up(ctx, db)
		require.NoError(t, err)
		sets, err = migrations.InstalledSets(ctx, db)
		require.NoError(t, err)
		require.Empty(t, sets, "core is not a set")

		_, err = migrations.Up(ctx, db, tprojSet(), demoSet())
		require.NoError(t, err)
		// Tables that only look like version tables: not a set name, or
		// '_' standing where LIKE would match any character.
		for _, stmt := range []string{
			`CREATE TABLE "canonlog_migrations_Caps" (x INTEGER)`,
			`CREATE TABLE canonlogXmigrations_other (x INTEGER)`,
			`CREATE TABLE canonlog_migrations_ (x INTEGER)`,
		} {
			_, err := db.Exec(stmt)
			require.NoError(t, err, stmt)
		}
		ro := readOnly(t, b)
		sets, err = migrations.InstalledSets(ctx, ro)
		require.NoError(t, err)
		require.Equal(t, []string{"demo", "t_proj"}, sets)

		// A set rolled back entirely keeps its version table, and is
		// still listed.
		m, err := migrations.New(db, demoSet())
		require.NoError(t, err)
		_, err = m.DownTo(ctx, 0)
		require.NoError(t, err)
		sets, err = migrations.InstalledSets(ctx, ro)
		require.NoError(t, err)
		require.Equal(t, []string{"demo", "t_proj"}, sets)
	})
}
