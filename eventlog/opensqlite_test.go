package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
)

type openResult struct {
	db  *sqlx.DB
	err error
}

func openAsync(ctx context.Context, url string) <-chan openResult {
	done := make(chan openResult, 1)
	go func() {
		db, err := eventlog.OpenDB(ctx, url)
		done <- openResult{db, err}
	}()
	return done
}

// holdWriteLock opens path with the bare driver (no canonlog settings, so
// the file stays in its default rollback-journal mode, as a file another
// process is still creating is), writes to it and keeps the transaction
// open: the connection holds SQLite's write lock until commit is called.
func holdWriteLock(t *testing.T, path string) (raw *sqlx.DB, commit func()) {
	t.Helper()
	raw = bareOpen(t, path)
	raw.SetMaxOpenConns(1)
	_, err := raw.Exec(`CREATE TABLE other_process (x INTEGER)`)
	require.NoError(t, err)
	requireJournalMode(t, raw, "delete")
	tx, err := raw.Beginx()
	require.NoError(t, err)
	_, err = tx.Exec(`INSERT INTO other_process VALUES (1)`)
	require.NoError(t, err)
	return raw, func() { require.NoError(t, tx.Commit()) }
}

// bareOpen opens path with the bare driver, closed when t ends.
func bareOpen(t *testing.T, path string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open("sqlite", "file:"+path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func requireJournalMode(t *testing.T, db *sqlx.DB, want string) {
	t.Helper()
	var mode string
	require.NoError(t, db.Get(&mode, `PRAGMA journal_mode`))
	require.Equal(t, want, mode)
}

// mustNotReturnYet fails t if done delivers within a short while: OpenDB
// gave up (or went ahead) while another connection held the write lock.
func mustNotReturnYet(t *testing.T, done <-chan openResult) {
	t.Helper()
	select {
	case r := <-done:
		if r.db != nil {
			_ = r.db.Close()
		}
		t.Fatalf("OpenDB returned while another connection held the write lock: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
}

func receiveOpen(t *testing.T, done <-chan openResult) openResult {
	t.Helper()
	select {
	case r := <-done:
		if r.db != nil {
			t.Cleanup(func() { _ = r.db.Close() })
		}
		return r
	case <-time.After(60 * time.Second):
		t.Fatal("OpenDB did not return")
		return openResult{}
	}
}

// Switching a file to WAL needs an exclusive lock, and SQLite refuses that
// at once, busy timeout or not, while another connection writes. Opening a
// file that another process is creating or migrating must wait for it
// instead.
func TestOpenDBWaitsForWriterOfNewFile(t *testing.T) {
	t.Parallel()

	t.Run("Waits", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "new.db")
		_, commit := holdWriteLock(t, path)

		done := openAsync(context.Background(), "sqlite:"+path)
		mustNotReturnYet(t, done)
		commit()
		r := receiveOpen(t, done)
		require.NoError(t, r.err)
		requireJournalMode(t, r.db, "wal")
		requireJournalMode(t, bareOpen(t, path), "wal") // stored in the file
		var n int
		require.NoError(t, r.db.Get(&n, `SELECT COUNT(*) FROM other_process`))
		require.Equal(t, 1, n, "the other writer's commit is there")
	})

	t.Run("GivesUpWhenCancelled", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "new.db")
		raw, commit := holdWriteLock(t, path)

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := openAsync(ctx, "sqlite:"+path)
		mustNotReturnYet(t, done)
		cancel()
		r := receiveOpen(t, done)
		require.Error(t, r.err)
		require.Nil(t, r.db)
		require.True(t, errors.Is(r.err, context.Canceled), "want a cancellation error, got %v", r.err)
		require.ErrorContains(t, r.err, "connect to sqlite:"+path)

		// The cancelled open changed nothing: the writer commits, and the
		// file is still in its rollback-journal mode.
		commit()
		requireJournalMode(t, raw, "delete")
		requireJournalMode(t, bareOpen(t, path), "delete")
	})
}

// A URL that names a journal mode keeps it: canonlog does not switch such a
// file to WAL behind the user's back (a file system without shared memory
// cannot run WAL).
func TestOpenDBKeepsJournalModeOfURL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for i, tc := range []struct{ query, want string }{
		{"_pragma=journal_mode(DELETE)", "delete"},
		{"_pragma=journal_mode%3DTRUNCATE", "truncate"},
		{"_journal_mode=PERSIST", "persist"},
		{"_journal=TRUNCATE", "truncate"},
		{"", "wal"},
		{"_pragma=synchronous(NORMAL)", "wal"},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Logf("URL query %q", tc.query)
			db, err := eventlog.OpenDB(ctx, "sqlite:"+filepath.Join(t.TempDir(), "x.db")+"?"+tc.query)
			require.NoError(t, err)
			defer db.Close()
			// Every pooled connection: hold several at once.
			for range 3 {
				c, err := db.Connx(ctx)
				require.NoError(t, err)
				defer c.Close()
				var mode string
				var busy, fk int
				require.NoError(t, c.GetContext(ctx, &mode, `PRAGMA journal_mode`))
				require.NoError(t, c.GetContext(ctx, &busy, `PRAGMA busy_timeout`))
				require.NoError(t, c.GetContext(ctx, &fk, `PRAGMA foreign_keys`))
				require.Equal(t, tc.want, mode)
				require.Equal(t, 10000, busy)
				require.Equal(t, 1, fk)
			}
		})
	}

	// A user's busy timeout wins over canonlog's default.
	db, err := eventlog.OpenDB(ctx, "sqlite:"+filepath.Join(t.TempDir(), "x.db")+"?_pragma=busy_timeout(2500)")
	require.NoError(t, err)
	defer db.Close()
	for range 3 {
		c, err := db.Connx(ctx)
		require.NoError(t, err)
		defer c.Close()
		var busy int
		require.NoError(t, c.GetContext(ctx, &busy, `PRAGMA busy_timeout`))
		require.Equal(t, 2500, busy)
	}
}
