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
