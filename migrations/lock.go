package migrations

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/pressly/goose/v3/lock"
)

// pgLocker serializes migration runs on PostgreSQL with a session-level
// advisory lock. Unlike goose's polling locker it blocks in
// pg_advisory_lock, so a second process starts the moment the first one is
// done, and gives up when ctx is cancelled. The lock key covers the current
// schema and the version table, so runs in different schemas, or of
// different sets, do not wait for each other.
type pgLocker struct {
	key string
}

var _ lock.SessionLocker = (*pgLocker)(nil)

const pgLockKey = `hashtextextended('canonlog:migrate:' || current_schema() || ':' || $1, 0)`

func (l *pgLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+pgLockKey+`)`, l.key); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("take migration lock: %w", ctxErr)
		}
		return fmt.Errorf("take migration lock: %w", err)
	}
	return nil
}

func (l *pgLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	var released bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock(`+pgLockKey+`)`, l.key).Scan(&released); err != nil {
		return fmt.Errorf("release migration lock: %w", err)
	}
	if !released {
		return fmt.Errorf("release migration lock: lock was not held")
	}
	return nil
}

// LockFileSuffix names the file that serializes migration runs on a SQLite
// database: it sits next to the database file, as SQLite's own -wal and
// -shm files do. It is created on the first run and left in place, empty:
// removing it while a run holds it would let the next run lock a new file
// of the same name.
const LockFileSuffix = "-migrate.lock"

// testHookLockWait, set by the package's tests only, is called when a run
// finds the SQLite migration lock taken and starts waiting for it.
var testHookLockWait func(lockFile string)

// lockSQLite serializes migration runs on one SQLite file across pools and
// processes: it takes an exclusive lock on the file's LockFileSuffix file
// (see lockFile) and returns the function that releases it. goose has no
// SQLite locker, and SQLite's own write lock cannot serve: goose runs each
// migration in a transaction of its own on one connection, so a write
// transaction held around the run on another connection would block it.
// In-memory and temporary databases have no file and take no lock: no
// other process can reach them. (Pools in one process that share an
// in-memory database through cache=shared are not serialized.)
func lockSQLite(ctx context.Context, db *sql.DB) (unlock func(), err error) {
	var file string
	if err := db.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&file); err != nil {
		return nil, fmt.Errorf("take migration lock: find the database file: %w", err)
	}
	if file == "" {
		return func() {}, nil
	}
	unlock, err = lockFile(ctx, file+LockFileSuffix, file)
	if err != nil {
		return nil, fmt.Errorf("take migration lock: %w", err)
	}
	return unlock, nil
}
