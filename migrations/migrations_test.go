package migrations_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/probefailures"
)

// dialectDir maps a dbtest backend to its folder of core migrations.
var dialectDir = map[string]string{"postgres": "postgres", "sqlite": "sqlite"}

// coreFile is one core migration as found on disk, which is what the
// package embeds.
type coreFile struct {
	name    string
	version int64
}

// coreFiles lists the core migrations of a backend from disk, in version
// order, so the tests keep working as migrations are added.
func coreFiles(t *testing.T, backend string) []coreFile {
	t.Helper()
	entries, err := os.ReadDir(dialectDir[backend])
	require.NoError(t, err)
	var out []coreFile
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".sql" {
			continue
		}
		v, err := goose.NumericComponent(e.Name())
		require.NoError(t, err, "migration file %s has no goose version prefix", e.Name())
		out = append(out, coreFile{name: e.Name(), version: v})
	}
	require.NotEmpty(t, out, "no core migrations for %s", backend)
	slices.SortFunc(out, func(a, b coreFile) int { return int(a.version - b.version) })
	return out
}

func versionsOf(files []coreFile) []int64 {
	out := make([]int64, len(files))
	for i, f := range files {
		out[i] = f.version
	}
	return out
}

// tableExists reports whether table exists in the test's schema (PostgreSQL)
// or database (SQLite).
func tableExists(t *testing.T, db *sqlx.DB, table string) bool {
	t.Helper()
	var n int
	q := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`
	if db.DriverName() == "postgres" {
		q = `SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?`
	}
	require.NoError(t, db.Get(&n, db.Rebind(q), table))
	return n == 1
}

// pgFunctionExists reports whether a function named name exists in the
// test's schema.
func pgFunctionExists(t *testing.T, db *sqlx.DB, name string) bool {
	t.Helper()
	var n int
	require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = current_schema() AND p.proname = $1`, name))
	return n > 0
}

// leftovers lists what the schema (PostgreSQL) or database (SQLite) holds:
// its tables, and any other object as "type name", sorted; SQLite's own
// tables are left out.
func leftovers(t *testing.T, db *sqlx.DB) []string {
	t.Helper()
	q := `SELECT CASE type WHEN 'table' THEN name ELSE type || ' ' || name END FROM sqlite_master
WHERE name NOT LIKE 'sqlite_%' AND (type <> 'index' OR sql IS NOT NULL)`
	if db.DriverName() == "postgres" {
		// Tables, views and sequences (pg_class) and functions (pg_proc);
		// indexes, triggers and types go with their tables.
		q = `SELECT CASE c.relkind WHEN 'r' THEN c.relname ELSE 'relation ' || c.relname END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f')
  AND NOT (c.relkind = 'S' AND c.relname LIKE 'canonlog_migrations%_id_seq')
UNION ALL
SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = current_schema()`
	}
	var out []string
	require.NoError(t, db.Select(&out, q))
	slices.Sort(out)
	return out
}

// versionRows returns how many rows the goose version table holds per
// version, applied or not.
func versionRows(t *testing.T, db *sqlx.DB, table string) map[int64]int {
	t.Helper()
	rows, err := db.Query(`SELECT version_id, COUNT(*) FROM ` + table + ` GROUP BY version_id`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[int64]int{}
	for rows.Next() {
		var v int64
		var n int
		require.NoError(t, rows.Scan(&v, &n))
		out[v] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// onePerVersion is what versionRows returns after versions were applied
// once each: goose's zero row plus one row per version.
func onePerVersion(versions ...int64) map[int64]int {
	out := map[int64]int{0: 1}
	for _, v := range versions {
		out[v] = 1
	}
	return out
}

func requireStatus(t *testing.T, sts []migrations.MigrationStatus, set string, files []coreFile, applied bool) {
	t.Helper()
	require.Len(t, sts, len(files))
	for i, st := range sts {
		require.Equal(t, set, st.Set)
		require.Equal(t, files[i].version, st.Version)
		require.Equal(t, files[i].name, st.Source)
		require.Equal(t, applied, st.Applied, "applied state of %s", st.Source)
		require.Equal(t, applied, !st.AppliedAt.IsZero(), "AppliedAt of %s: %v", st.Source, st.AppliedAt)
	}
}

func requireResults(t *testing.T, res []migrations.Result, set, direction string, files []coreFile) {
	t.Helper()
	require.Len(t, res, len(files), "results: %+v", res)
	for i, r := range res {
		require.Equal(t, set, r.Set)
		require.Equal(t, direction, r.Direction)
		require.Equal(t, files[i].version, r.Version)
		require.Equal(t, files[i].name, r.Source)
	}
}

func reversed[S ~[]E, E any](s S) S {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func appendOne(t *testing.T, db *sqlx.DB) eventlog.Event {
	t.Helper()
	log, err := eventlog.New(db, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	res, err := log.Append(context.Background(), eventlog.Entry{
		Kind: eventlog.KindRolloutEvent, RolloutID: "r1", Payload: json.RawMessage(`{"state":"started"}`),
	})
	require.NoError(t, err)
	got, err := log.Get(context.Background(), res.Event.Seq)
	require.NoError(t, err)
	require.Equal(t, res.Event, got)
	return res.Event
}

func TestMigrateUp(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Open(t)
		files := coreFiles(t, backend)
		require.False(t, tableExists(t, db, "event_log"))
		require.False(t, tableExists(t, db, migrations.CoreTable))

		res, err := migrations.Up(ctx, db)
		require.NoError(t, err)
		requireResults(t, res, "core", "up", files)
		require.True(t, tableExists(t, db, "event_log"))
		require.True(t, tableExists(t, db, migrations.CoreTable))
		require.Equal(t, "canonlog_migrations", migrations.CoreTable)
		require.Equal(t, onePerVersion(versionsOf(files)...), versionRows(t, db, migrations.CoreTable))

		sts, err := migrations.Status(ctx, db)
		require.NoError(t, err)
		requireStatus(t, sts, "core", files, true)

		// A second Up finds nothing to do and records nothing.
		res, err = migrations.Up(ctx, db)
		require.NoError(t, err)
		require.Empty(t, res)
		require.Equal(t, onePerVersion(versionsOf(files)...), versionRows(t, db, migrations.CoreTable))

		// Nothing but canonlog's own version table: no goose_db_version
		// that would collide with the application's goose history.
		require.False(t, tableExists(t, db, goose.DefaultTablename))
	})
}

func TestMigrationStatusOnEmptyDatabase(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		db := dbtest.New(t, backend).Open(t)
		sts, err := migrations.Status(context.Background(), db)
		require.NoError(t, err)
		requireStatus(t, sts, "core", coreFiles(t, backend), false)
		require.False(t, tableExists(t, db, "event_log"))
		require.False(t, tableExists(t, db, migrations.CoreTable), "status creates no version table")
	})
}

func TestMigrateDown(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Migrated(t)
		files := coreFiles(t, backend)
		appendOne(t, db) // Down drops a table holding events
		if backend == "postgres" {
			require.True(t, pgFunctionExists(t, db, "canonlog_event_log_append_only"))
		}

		res, err := migrations.Down(ctx, db)
		require.NoError(t, err)
		requireResults(t, res, "core", "down", reversed(files))
		require.False(t, tableExists(t, db, "event_log"))
		if backend == "postgres" {
			require.False(t, pgFunctionExists(t, db, "canonlog_event_log_append_only"))
		}
		// Nothing is left behind but the version table.
		require.Equal(t, []string{migrations.CoreTable}, leftovers(t, db))
		sts, err := migrations.Status(ctx, db)
		require.NoError(t, err)
		requireStatus(t, sts, "core", files, false)
		require.Equal(t, onePerVersion(), versionRows(t, db, migrations.CoreTable))

		// Down with nothing applied is a no-op.
		res, err = migrations.Down(ctx, db)
		require.NoError(t, err)
		require.Empty(t, res)

		// Up again gives a working, fresh log.
		res, err = migrations.Up(ctx, db)
		require.NoError(t, err)
		requireResults(t, res, "core", "up", files)
		requireStatus(t, status(t, db), "core", files, true)
		ev := appendOne(t, db)
		require.Equal(t, int64(1), ev.Seq, "the log after Down and Up starts at seq 1 again")
	})
}

// status is migrations.Status, failing t on error.
func status(t *testing.T, db *sqlx.DB, sets ...migrations.Set) []migrations.MigrationStatus {
	t.Helper()
	sts, err := migrations.Status(context.Background(), db, sets...)
	require.NoError(t, err)
	return sts
}

func TestMigratorDownOneStep(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Migrated(t)
		files := coreFiles(t, backend)
		m, err := migrations.New(db, migrations.Core())
		require.NoError(t, err)
		for _, f := range reversed(files) {
			r, err := m.Down(ctx)
			require.NoError(t, err)
			require.NotNil(t, r)
			require.Equal(t, migrations.Result{Set: "core", Version: f.version, Source: f.name, Direction: "down", Duration: r.Duration}, *r)
		}
		r, err := m.Down(ctx)
		require.NoError(t, err)
		require.Nil(t, r, "Down with nothing applied returns a nil result")
		require.False(t, tableExists(t, db, "event_log"))

		res, err := m.Up(ctx)
		require.NoError(t, err)
		requireResults(t, res, "core", "up", files)
		res, err = m.DownTo(ctx, 0)
		require.NoError(t, err)
		requireResults(t, res, "core", "down", reversed(files))
	})
}

// demoSet is a projection's own migration history: a table whose rows point
// at events, and an index added by a second migration.
func demoSet() migrations.Set {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	return migrations.Set{
		Name: "demo",
		Postgres: fstest.MapFS{
			"00001_demo_rows.sql": file(`-- +goose Up
CREATE TABLE demo_rows (
    event_log_seq BIGINT NOT NULL REFERENCES event_log (seq),
    note          TEXT NOT NULL
);

-- +goose Down
DROP TABLE demo_rows;
`),
			"00002_demo_rows_seq_idx.sql": file(`-- +goose Up
CREATE INDEX demo_rows_seq_idx ON demo_rows (event_log_seq);

-- +goose Down
DROP INDEX demo_rows_seq_idx;
`),
		},
		SQLite: fstest.MapFS{
			"00001_demo_rows.sql": file(`-- +goose Up
CREATE TABLE demo_rows (
    event_log_seq INTEGER NOT NULL REFERENCES event_log (seq),
    note          TEXT NOT NULL
);

-- +goose Down
DROP TABLE demo_rows;
`),
			"00002_demo_rows_seq_idx.sql": file(`-- +goose Up
CREATE INDEX demo_rows_seq_idx ON demo_rows (event_log_seq);

-- +goose Down
DROP INDEX demo_rows_seq_idx;
`),
		},
	}
}

var demoFiles = []coreFile{{"00001_demo_rows.sql", 1}, {"00002_demo_rows_seq_idx.sql", 2}}

func TestMigrationSets(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Open(t)
		files := coreFiles(t, backend)
		demo := demoSet()
		require.Equal(t, "canonlog_migrations_demo", demo.Table())
		require.Equal(t, migrations.CoreTable, migrations.Core().Table())

		// Core first, then the set: the set's FOREIGN KEY needs event_log.
		res, err := migrations.Up(ctx, db, demo)
		require.NoError(t, err)
		require.Len(t, res, len(files)+len(demoFiles))
		requireResults(t, res[:len(files)], "core", "up", files)
		requireResults(t, res[len(files):], "demo", "up", demoFiles)

		// Each history in its own version table.
		require.Equal(t, onePerVersion(versionsOf(files)...), versionRows(t, db, migrations.CoreTable))
		require.Equal(t, onePerVersion(1, 2), versionRows(t, db, "canonlog_migrations_demo"))

		sts, err := migrations.Status(ctx, db, demo)
		require.NoError(t, err)
		require.Len(t, sts, len(files)+len(demoFiles))
		requireStatus(t, sts[:len(files)], "core", files, true)
		requireStatus(t, sts[len(files):], "demo", demoFiles, true)

		// The foreign key is real (SQLite enforces it too).
		ev := appendOne(t, db)
		_, err = db.Exec(db.Rebind(`INSERT INTO demo_rows (event_log_seq, note) VALUES (?, 'ok')`), ev.Seq)
		require.NoError(t, err)
		_, err = db.Exec(db.Rebind(`INSERT INTO demo_rows (event_log_seq, note) VALUES (?, 'dangling')`), ev.Seq+1000)
		require.Error(t, err, "a row pointing at no event must be refused")

		// Removing core alone is refused while the set is applied: its
		// rows point into event_log. Nothing is rolled back.
		before := stateOf(t, db)
		_, err = migrations.Down(ctx, db)
		require.ErrorIs(t, err, migrations.ErrUnknownSets)
		require.ErrorContains(t, err, "demo")
		require.Equal(t, before, stateOf(t, db))

		// Down removes the set before core.
		res, err = migrations.Down(ctx, db, demo)
		require.NoError(t, err)
		require.Len(t, res, len(files)+len(demoFiles))
		requireResults(t, res[:len(demoFiles)], "demo", "down", reversed(demoFiles))
		requireResults(t, res[len(demoFiles):], "core", "down", reversed(files))
		require.Equal(t, []string{migrations.CoreTable, "canonlog_migrations_demo"}, leftovers(t, db))
		sts, err = migrations.Status(ctx, db, demo)
		require.NoError(t, err)
		requireStatus(t, sts[:len(files)], "core", files, false)
		requireStatus(t, sts[len(files):], "demo", demoFiles, false)
	})
}

func TestMigrationsBadInput(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Open(t)

		t.Run("SetName", func(t *testing.T) {
			for _, name := range []string{"Bad-Name", "Demo", "1demo", "_demo", "demo-rows", "demo rows", "demo;drop", "démo"} {
				_, err := migrations.New(db, migrations.Set{Name: name, Postgres: demoSet().Postgres, SQLite: demoSet().SQLite})
				require.Error(t, err, "set name %q", name)
				require.ErrorContains(t, err, fmt.Sprintf("%q", name))
			}
			_, err := migrations.New(db, demoSet())
			require.NoError(t, err)

			// Only Core() may go without a name: an unnamed set would write
			// into canonlog's own version history.
			_, err = migrations.New(db, migrations.Set{Postgres: demoSet().Postgres, SQLite: demoSet().SQLite})
			require.ErrorContains(t, err, "only Core() has no name")
		})

		t.Run("BadSetValidatedBeforeAnythingRuns", func(t *testing.T) {
			fresh := dbtest.New(t, backend).Open(t)
			_, err := migrations.Up(ctx, fresh, migrations.Set{Name: "Bad-Name", Postgres: demoSet().Postgres, SQLite: demoSet().SQLite})
			require.Error(t, err)
			var n int
			require.NoError(t, fresh.Get(&n, `SELECT COUNT(*) FROM `+map[string]string{
				"postgres": `information_schema.tables WHERE table_schema = current_schema() AND table_name = 'event_log'`,
				"sqlite":   `sqlite_master WHERE name = 'event_log'`}[backend]))
			require.Zero(t, n, "core was not applied")
		})

		t.Run("NoFilesForDialect", func(t *testing.T) {
			set := demoSet()
			other := "sqlite"
			if backend == "postgres" {
				set.Postgres = nil
			} else {
				set.SQLite, other = nil, "postgres"
			}
			_, err := migrations.New(db, set)
			require.Error(t, err)
			require.ErrorContains(t, err, "demo")
			require.ErrorContains(t, err, backend)
			require.NotContains(t, err.Error(), other)
		})

		t.Run("EmptyFolder", func(t *testing.T) {
			set := migrations.Set{Name: "demo", Postgres: fstest.MapFS{}, SQLite: fstest.MapFS{}}
			_, err := migrations.New(db, set)
			require.ErrorIs(t, err, goose.ErrNoMigrations)
			require.ErrorContains(t, err, "demo")
		})

		t.Run("MalformedFileAppliesNothing", func(t *testing.T) {
			_, err := migrations.Up(ctx, db)
			require.NoError(t, err)
			broken := fstest.MapFS{"00001_broken.sql": {Data: []byte("CREATE TABLE broken_rows (x INTEGER);\n")}}
			set := migrations.Set{Name: "broken", Postgres: broken, SQLite: broken}
			_, err = migrations.Up(ctx, db, set)
			require.Error(t, err)
			require.ErrorContains(t, err, "broken")
			require.False(t, tableExists(t, db, "broken_rows"))
			require.Equal(t, onePerVersion(), versionRows(t, db, "canonlog_migrations_broken"))
		})
	})
}

// The migration files are plain goose files: the stock goose command line
// tool (a thin wrapper over goose's package-level API) reads them, and its
// history in the same version table is the one canonlog reads.
func TestMigrationFilesGooseCLI(t *testing.T) {
	t.Parallel()

	versions := map[string][]int64{}
	for backend, dir := range dialectDir {
		files := coreFiles(t, backend)
		versions[backend] = versionsOf(files)
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(dir, f.name))
			require.NoError(t, err)
			var up, down int
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				switch strings.TrimSpace(sc.Text()) {
				case "-- +goose Up":
					up++
				case "-- +goose Down":
					down++
				}
			}
			require.NoError(t, sc.Err())
			require.Equal(t, 1, up, "%s/%s: -- +goose Up annotations", dir, f.name)
			require.Equal(t, 1, down, "%s/%s: -- +goose Down annotations", dir, f.name)
			require.Less(t, bytes.Index(data, []byte("-- +goose Up")), bytes.Index(data, []byte("-- +goose Down")), "%s/%s", dir, f.name)
		}
	}
	require.Equal(t, versions["postgres"], versions["sqlite"], "every core migration exists for both dialects")

	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Open(t)
		files := coreFiles(t, backend)
		dir := dialectDir[backend]
		gooseDialect := map[string]string{"postgres": "postgres", "sqlite": "sqlite3"}[backend]

		// The equivalent of
		//   goose -dir migrations/<dir> -table canonlog_migrations <dialect> <url> up
		gooseCLI(t, gooseDialect, func() {
			collected, err := goose.CollectMigrations(dir, 0, goose.MaxVersion)
			require.NoError(t, err)
			require.Len(t, collected, len(files))
			for i, m := range collected {
				require.Equal(t, files[i].version, m.Version)
			}
			require.NoError(t, goose.UpContext(ctx, db.DB, dir))
		})
		require.True(t, tableExists(t, db, "event_log"))
		requireStatus(t, status(t, db), "core", files, true)
		res, err := migrations.Up(ctx, db)
		require.NoError(t, err)
		require.Empty(t, res, "canonlog sees the CLI's history as its own")
		appendOne(t, db)

		//   goose … down-to 0
		gooseCLI(t, gooseDialect, func() {
			require.NoError(t, goose.DownToContext(ctx, db.DB, dir, 0))
		})
		require.False(t, tableExists(t, db, "event_log"))
		if backend == "postgres" {
			require.False(t, pgFunctionExists(t, db, "canonlog_event_log_append_only"))
		}
		requireStatus(t, status(t, db), "core", files, false)
	})
}

// gooseGlobals guards goose's package-level configuration, which the CLI
// path uses and canonlog's Provider never touches.
var gooseGlobals sync.Mutex

func gooseCLI(t *testing.T, dialect string, fn func()) {
	t.Helper()
	gooseGlobals.Lock()
	defer gooseGlobals.Unlock()
	goose.SetBaseFS(nil) // the working directory: this package's folder
	goose.SetLogger(goose.NopLogger())
	goose.SetTableName(migrations.CoreTable)
	require.NoError(t, goose.SetDialect(dialect))
	defer goose.SetTableName(goose.DefaultTablename)
	fn()
}

// migrationLockKey is the documented key of the core set's migration lock,
// written out independently of migrations/lock.go.
const migrationLockKey = `hashtextextended('canonlog:migrate:' || current_schema() || ':' || 'canonlog_migrations', 0)`

// holdLock takes the core migration lock of b's schema in a session of its
// own and returns that session's backend pid and a function releasing it.
func holdLock(t *testing.T, b dbtest.Backend) (pid int, release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := b.Open(t).Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+migrationLockKey+`)`)
	require.NoError(t, err)
	var once sync.Once
	return pid, func() {
		once.Do(func() {
			var released bool
			require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock(`+migrationLockKey+`)`).Scan(&released))
			require.True(t, released)
		})
	}
}

type upResult struct {
	res []migrations.Result
	err error
}

func upAsync(ctx context.Context, db *sqlx.DB, sets ...migrations.Set) <-chan upResult {
	done := make(chan upResult, 1)
	go func() {
		res, err := migrations.Up(ctx, db, sets...)
		done <- upResult{res, err}
	}()
	return done
}

// waitBlockedBy waits until some session waits for a lock held by
// holderPid. It fails if done delivers first: the migration did not wait.
func waitBlockedBy(t *testing.T, db *sqlx.DB, holderPid int, done <-chan upResult) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		require.NoError(t, db.Get(&waiting, `SELECT COUNT(*) FROM pg_stat_activity
WHERE $1 = ANY(pg_blocking_pids(pid)) AND wait_event_type = 'Lock' AND wait_event = 'advisory'`, holderPid))
		if waiting == 1 {
			return
		}
		select {
		case r := <-done:
			t.Fatalf("Up returned while the migration lock was held by another session: %+v, %v", r.res, r.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session started waiting for the migration lock held by pid %d", holderPid)
		}
	}
}

func receive(t *testing.T, done <-chan upResult) upResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(60 * time.Second):
		t.Fatal("Up did not return")
		return upResult{}
	}
}

// lockIsFree reports whether the core migration lock of db's schema can be
// taken right now (and releases it again).
func lockIsFree(t *testing.T, db *sqlx.DB) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	var got bool
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(`+migrationLockKey+`)`).Scan(&got))
	if got {
		_, err = conn.ExecContext(ctx, `SELECT pg_advisory_unlock(`+migrationLockKey+`)`)
		require.NoError(t, err)
	}
	return got
}

// TestMigrateConcurrent starts migration runs on one fresh database at
// once, as replicas of a service starting together do: goroutines, each
// opening a pool of its own, and processes. Half the runners run
// migrations.Up with demoSet, half projection.Migrate with probe_failures
// (`canonlog migrate up`, a service's start), so the sets of both paths
// interleave. Every run must succeed and every migration run exactly once.
// Without the lock the runners collide only some of the time, so a few
// fresh databases race at once.
func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	// Rounds per backend: enough that runs without the SQLite lock fail in
	// nearly every test run; PostgreSQL's advisory lock needs fewer.
	rounds := map[string]int{"sqlite": 5, "postgres": 3}
	dbtest.Run(t, func(t *testing.T, backend string) {
		for round := range rounds[backend] {
			t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
				t.Parallel()
				concurrentUp(t, backend, 6, 2)
			})
		}
	})
}

// setFiles lists a set's migrations for backend, in version order.
func setFiles(t *testing.T, set migrations.Set, backend string) []coreFile {
	t.Helper()
	fsys := set.SQLite
	if backend == "postgres" {
		fsys = set.Postgres
	}
	names, err := fs.Glob(fsys, "*.sql")
	require.NoError(t, err)
	var out []coreFile
	for _, name := range names {
		v, err := goose.NumericComponent(name)
		require.NoError(t, err)
		out = append(out, coreFile{name: name, version: v})
	}
	slices.SortFunc(out, func(a, b coreFile) int { return int(a.version - b.version) })
	return out
}

// concurrentUp runs `goroutines` runners in this process and `processes`
// in helper processes, all at once, against one fresh database, and checks
// that every migration ran exactly once.
func concurrentUp(t *testing.T, backend string, goroutines, processes int) {
	ctx := context.Background()
	b := dbtest.New(t, backend)
	kind := func(i int) string { return []string{kindUp, kindProjection}[i%2] }

	helpers := make([]*helper, processes)
	for i := range helpers {
		helpers[i] = startHelper(t, b.URL, kind(i+1)) // the first goroutine runs kindUp
	}
	var (
		start   = make(chan struct{})
		wg      sync.WaitGroup
		n       = goroutines + processes
		results = make([][]migrations.Result, n)
		errs    = make([]error, n)
	)
	for i := range goroutines {
		wg.Go(func() {
			<-start
			results[i], errs[i] = runMigrate(ctx, b.URL, kind(i))
		})
	}
	for i, h := range helpers {
		_ = h.stdin.Close() // its start signal
		wg.Go(func() { results[goroutines+i], errs[goroutines+i] = h.result() })
	}
	close(start)
	wg.Wait()

	bySet := map[string][]migrations.Result{}
	for i := range n {
		require.NoError(t, errs[i], "runner %d", i)
		for _, r := range results[i] {
			bySet[r.Set] = append(bySet[r.Set], r)
		}
	}
	// Each migration ran exactly once across all runners, in order.
	files := coreFiles(t, backend)
	pf := probefailures.New().Migrations()
	pfFiles := setFiles(t, pf, backend)
	requireResults(t, bySet["core"], "core", "up", files)
	requireResults(t, bySet["demo"], "demo", "up", demoFiles)
	requireResults(t, bySet["probe_failures"], "probe_failures", "up", pfFiles)
	require.Len(t, bySet, 3, "sets: %v", slices.Collect(maps.Keys(bySet)))

	db := b.Open(t)
	require.Equal(t, onePerVersion(versionsOf(files)...), versionRows(t, db, migrations.CoreTable))
	require.Equal(t, onePerVersion(versionsOf(demoFiles)...), versionRows(t, db, "canonlog_migrations_demo"))
	require.Equal(t, onePerVersion(versionsOf(pfFiles)...), versionRows(t, db, "canonlog_migrations_probe_failures"))
	switch backend {
	case "postgres":
		var n int
		require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
WHERE ns.nspname = current_schema() AND c.relname = 'event_log'`))
		require.Equal(t, 1, n)
		var triggers string
		require.NoError(t, db.Get(&triggers, `SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'event_log'::regclass AND NOT tgisinternal`))
		require.Equal(t, "event_log_append_only,event_log_assigned_only", triggers)
		require.True(t, lockIsFree(t, db), "every runner released the migration lock")
	case "sqlite":
		requireIntegrity(t, db)
		require.True(t, sqliteLockIsFree(t, db), "every runner released the migration lock")
	}
	appendOne(t, db)
}

func TestMigrateLockPostgres(t *testing.T) {
	t.Parallel()
	t.Run("postgres", func(t *testing.T) {
		t.Run("UpWaitsForLock", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, "postgres")
			files := coreFiles(t, "postgres")
			observer := b.Open(t)
			holder, release := holdLock(t, b)

			done := upAsync(context.Background(), b.Open(t))
			waitBlockedBy(t, observer, holder, done)
			// Nothing is applied while it waits. (goose's pending check
			// creates the version table before the lock is taken.)
			require.False(t, tableExists(t, observer, "event_log"))
			if tableExists(t, observer, migrations.CoreTable) {
				require.Equal(t, onePerVersion(), versionRows(t, observer, migrations.CoreTable))
			}

			release()
			r := receive(t, done)
			require.NoError(t, r.err)
			requireResults(t, r.res, "core", "up", files)
			require.True(t, tableExists(t, observer, "event_log"))
			require.True(t, lockIsFree(t, observer))
		})

		t.Run("UpGivesUpWhenCancelled", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, "postgres")
			files := coreFiles(t, "postgres")
			observer := b.Open(t)
			holder, release := holdLock(t, b)
			db := b.Open(t)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := upAsync(ctx, db)
			waitBlockedBy(t, observer, holder, done)
			cancel()
			r := receive(t, done)
			require.Error(t, r.err)
			require.Empty(t, r.res)
			t.Logf("cancelled Up: %v (context.Canceled: %v)", r.err, errors.Is(r.err, context.Canceled))
			require.True(t, errors.Is(r.err, context.Canceled),
				"want a cancellation error, got %v", r.err)
			require.False(t, tableExists(t, observer, "event_log"))

			// The cancelled run is not waiting any more, and holds nothing
			// once the holder lets go.
			var waiting int
			require.NoError(t, observer.Get(&waiting, `SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, holder))
			require.Zero(t, waiting)
			release()
			require.True(t, lockIsFree(t, observer))

			// The same pool migrates fine afterwards.
			res, err := migrations.Up(context.Background(), db)
			require.NoError(t, err)
			requireResults(t, res, "core", "up", files)
		})

		t.Run("ReadersDoNotWait", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, "postgres")
			db := b.Open(t)
			_, err := migrations.Up(context.Background(), db, demoSet())
			require.NoError(t, err)
			_, release := holdLock(t, b)
			defer release()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sts, err := migrations.Status(ctx, db, demoSet())
			require.NoError(t, err, "status must not wait for the migration lock")
			requireStatus(t, sts[len(sts)-len(demoFiles):], "demo", demoFiles, true)
			_, err = migrations.PlanDown(ctx, db, demoSet())
			require.NoError(t, err)
			_, err = migrations.InstalledSets(ctx, db)
			require.NoError(t, err)
		})

		t.Run("OtherSchemaDoesNotWait", func(t *testing.T) {
			t.Parallel()
			held := dbtest.New(t, "postgres")
			_, release := holdLock(t, held)
			defer release()

			other := dbtest.New(t, "postgres")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := migrations.Up(ctx, other.Open(t))
			require.NoError(t, err, "a migration in another schema must not wait for this one's lock")
			requireResults(t, res, "core", "up", coreFiles(t, "postgres"))
		})
	})
}

// TestProjectionKindsMigration moves canonlog_projections across 00004
// (kinds, drift_seq, version 0 allowed) both ways with rows in it: an
// upgrade keeps every checkpoint, with kinds not recorded; a rollback keeps
// the built ones and drops "never built" rows, which the old table cannot
// hold.
func TestProjectionKindsMigration(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Open(t)
		_, err := migrations.Up(ctx, db)
		require.NoError(t, err)
		m, err := migrations.New(db, migrations.Core())
		require.NoError(t, err)
		downs, err := m.DownTo(ctx, 3)
		require.NoError(t, err)
		require.Equal(t, "00004_projection_kinds.sql", downs[len(downs)-1].Source)

		const at = "2026-05-16T01:00:00.000000Z"
		_, err = db.Exec(db.Rebind(`INSERT INTO canonlog_projections (name, version, built_seq, built_at) VALUES (?, 3, 7, ?)`), "old_view", at)
		require.NoError(t, err)
		_, err = db.Exec(db.Rebind(`INSERT INTO canonlog_projections (name, version, built_seq, built_at) VALUES (?, 0, 0, ?)`), "never_view", at)
		require.Error(t, err, "before 00004 a checkpoint has version 1 or more")

		_, err = migrations.Up(ctx, db)
		require.NoError(t, err)
		var row struct {
			Version  int            `db:"version"`
			Seq      int64          `db:"built_seq"`
			Kinds    sql.NullString `db:"kinds"`
			DriftSeq int64          `db:"drift_seq"`
		}
		require.NoError(t, db.Get(&row, `SELECT version, built_seq, kinds, drift_seq FROM canonlog_projections WHERE name = 'old_view'`))
		require.Equal(t, 3, row.Version)
		require.Equal(t, int64(7), row.Seq)
		require.False(t, row.Kinds.Valid, "kinds not recorded")
		require.Zero(t, row.DriftSeq)
		_, err = db.Exec(db.Rebind(`INSERT INTO canonlog_projections (name, version, built_seq, built_at, kinds) VALUES (?, 0, 0, ?, '*')`), "never_view", at)
		require.NoError(t, err)
		_, err = db.Exec(`UPDATE canonlog_projections SET drift_seq = -1 WHERE name = 'old_view'`)
		require.Error(t, err, "drift_seq is never negative")

		_, err = m.DownTo(ctx, 3)
		require.NoError(t, err)
		var names []string
		require.NoError(t, db.Select(&names, `SELECT name FROM canonlog_projections ORDER BY name`))
		require.Equal(t, []string{"old_view"}, names)
	})
}
