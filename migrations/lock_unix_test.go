//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package migrations_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
)

// sqlitePath returns the file of a dbtest SQLite backend.
func sqlitePath(b dbtest.Backend) string { return strings.TrimPrefix(b.URL, "sqlite:") }

// waitForWaiter waits until a run starts waiting for the lock (waiting is
// closed). It fails if done delivers first: the run did not wait.
func waitForWaiter[R any](t *testing.T, waiting <-chan struct{}, done <-chan R) {
	t.Helper()
	select {
	case <-waiting:
	case r := <-done:
		t.Fatalf("returned while the migration lock was held elsewhere: %+v", r)
	case <-time.After(60 * time.Second):
		t.Fatal("no run started waiting for the migration lock")
	}
}

// holdFileLock takes the migration lock of the SQLite file at path, written
// out independently of the package (the documented lock file and flock),
// and returns the function releasing it.
func holdFileLock(t *testing.T, path string) (release func()) {
	t.Helper()
	f, err := os.OpenFile(path+"-migrate.lock", os.O_RDWR|os.O_CREATE, 0o644)
	require.NoError(t, err)
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB), "the migration lock of %s is free", path)
	var once sync.Once
	// Unlock before closing: a process forked meanwhile by a parallel test
	// shares the descriptor until it execs, and would keep the lock held
	// past Close.
	release = func() {
		once.Do(func() {
			require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_UN))
			require.NoError(t, f.Close())
		})
	}
	t.Cleanup(release)
	return release
}

// fileLockIsFree reports whether the migration lock of the SQLite file at
// path can be taken right now (and releases it again).
func fileLockIsFree(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path + "-migrate.lock")
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	require.NoError(t, err)
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false
	}
	require.NoError(t, err)
	// As in holdFileLock: unlock, not only close, or a concurrent fork
	// keeps the probe's lock held.
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_UN))
	return true
}

func TestMigrateLockSQLite(t *testing.T) {
	t.Parallel()
	files := coreFiles(t, "sqlite")

	// Every operation that changes the schema waits for the lock.
	for _, tc := range []struct {
		name string
		op   func(ctx context.Context, db *sqlx.DB) error
	}{
		{"Up", func(ctx context.Context, db *sqlx.DB) error { _, err := migrations.Up(ctx, db); return err }},
		{"Down", func(ctx context.Context, db *sqlx.DB) error { _, err := migrations.Down(ctx, db); return err }},
	} {
		t.Run(tc.name+"WaitsForLock", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, "sqlite")
			path := sqlitePath(b)
			db := b.Open(t)
			if tc.name == "Down" {
				_, err := migrations.Up(context.Background(), db)
				require.NoError(t, err)
			}
			before := leftovers(t, db)
			release := holdFileLock(t, path)

			waiting := migrations.NotifyLockWait(path + migrations.LockFileSuffix)
			done := make(chan error, 1)
			go func() { done <- tc.op(context.Background(), db) }()
			waitForWaiter(t, waiting, done)
			// Nothing happens while it waits, not even the version table.
			require.Equal(t, before, leftovers(t, db))

			release()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(60 * time.Second):
				t.Fatal("no return after the lock was released")
			}
			require.True(t, fileLockIsFree(t, path), "the run released the lock")
		})
	}

	// Reading the state takes no lock: it neither waits for a run in
	// progress nor creates anything.
	t.Run("ReadersDoNotWait", func(t *testing.T) {
		t.Parallel()
		b := dbtest.New(t, "sqlite")
		path := sqlitePath(b)
		db := b.Open(t)
		release := holdFileLock(t, path)
		defer release()
		before := leftovers(t, db)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sts, err := migrations.Status(ctx, db, demoSet())
		require.NoError(t, err)
		requireStatus(t, sts[:len(files)], "core", files, false)
		_, err = migrations.PlanDown(ctx, db, demoSet())
		require.NoError(t, err)
		_, err = migrations.InstalledSets(ctx, db)
		require.NoError(t, err)
		require.Equal(t, before, leftovers(t, db))
	})

	t.Run("UpGivesUpWhenCancelled", func(t *testing.T) {
		t.Parallel()
		b := dbtest.New(t, "sqlite")
		path := sqlitePath(b)
		db := b.Open(t)
		release := holdFileLock(t, path)

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		waiting := migrations.NotifyLockWait(path + migrations.LockFileSuffix)
		done := upAsync(ctx, db)
		waitForWaiter(t, waiting, done)
		cancel()
		r := receive(t, done)
		require.Error(t, r.err)
		require.Empty(t, r.res)
		require.True(t, errors.Is(r.err, context.Canceled), "want a cancellation error, got %v", r.err)
		require.ErrorContains(t, r.err, "migrations: up core: take migration lock")
		require.Empty(t, leftovers(t, db), "the cancelled run changed nothing")

		// It holds nothing: the lock is the holder's alone, and free once
		// the holder lets go; the same pool migrates fine afterwards.
		release()
		require.True(t, fileLockIsFree(t, path))
		res, err := migrations.Up(context.Background(), db)
		require.NoError(t, err)
		requireResults(t, res, "core", "up", files)
	})

	t.Run("KilledHolderReleasesLock", func(t *testing.T) {
		t.Parallel()
		b := dbtest.New(t, "sqlite")
		path := sqlitePath(b)
		holder := startHelper(t, b.URL, kindHold)
		require.False(t, fileLockIsFree(t, path), "the helper holds the lock")

		waiting := migrations.NotifyLockWait(path + migrations.LockFileSuffix)
		done := upAsync(context.Background(), b.Open(t))
		waitForWaiter(t, waiting, done)
		require.NoError(t, holder.cmd.Process.Kill()) // SIGKILL
		r := receive(t, done)
		require.NoError(t, r.err)
		requireResults(t, r.res, "core", "up", files)
		require.True(t, fileLockIsFree(t, path))
	})

	t.Run("FileURLTakesTheSameLock", func(t *testing.T) {
		t.Parallel()
		b := dbtest.New(t, "sqlite")
		path := sqlitePath(b)
		release := holdFileLock(t, path)

		waiting := migrations.NotifyLockWait(path + migrations.LockFileSuffix)
		done := upAsync(context.Background(), dbtest.Backend{URL: "file:" + path + "?_pragma=synchronous(NORMAL)"}.Open(t))
		waitForWaiter(t, waiting, done)
		release()
		r := receive(t, done)
		require.NoError(t, r.err)
		requireResults(t, r.res, "core", "up", files)
	})

	t.Run("OtherFileDoesNotWait", func(t *testing.T) {
		t.Parallel()
		holdFileLock(t, sqlitePath(dbtest.New(t, "sqlite")))
		other := dbtest.New(t, "sqlite")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := migrations.Up(ctx, other.Open(t))
		require.NoError(t, err, "a migration of another file must not wait for this one's lock")
		requireResults(t, res, "core", "up", files)
	})

	t.Run("MemoryTakesNoLock", func(t *testing.T) {
		t.Parallel()
		// In-memory databases have no file: a run on one must neither wait
		// for nor create a lock file (named after "", it would land in the
		// working directory and serialize every in-memory database).
		wd, err := os.Getwd()
		require.NoError(t, err)
		stray := filepath.Join(wd, migrations.LockFileSuffix)
		t.Cleanup(func() { _ = os.Remove(stray) })
		for _, url := range []string{"sqlite::memory:", "file:memtest?mode=memory&cache=shared"} {
			res, err := migrations.Up(context.Background(), dbtest.Backend{URL: url}.Open(t))
			require.NoError(t, err, url)
			requireResults(t, res, "core", "up", files)
		}
		_, err = os.Stat(stray)
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
}
