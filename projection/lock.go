package projection

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/pglock"
)

// Each projection has a transaction-level advisory lock on PostgreSQL,
// keyed by the current schema and its name (internal/pglock). Appends take
// it shared, many at once, inside the statement that inserts their events
// (Registry.SharedLocks, eventlog.LockingHook); rebuild and verify take it exclusively, and only then read the log,
// in READ COMMITTED, so they see every append that committed before them and
// every later append waits for them and is then applied to the rebuilt
// state — applied exactly once either way. SQLite needs none of this: it
// runs one write transaction at a time.
func lockExclusive(ctx context.Context, tx *sqlx.Tx, d eventlog.Backend, name string) error {
	return lockXact(ctx, tx, d, name, "pg_advisory_xact_lock", "exclusive")
}

// lockShared takes the projection's lock shared in tx, as appends of an
// inline projection do in their insert statement; an asynchronous
// projection's consumer takes it so for each page.
func lockShared(ctx context.Context, tx *sqlx.Tx, d eventlog.Backend, name string) error {
	return lockXact(ctx, tx, d, name, "pg_advisory_xact_lock_shared", "shared")
}

// lockXact takes the projection's transaction-level lock with fn.
func lockXact(ctx context.Context, tx *sqlx.Tx, d eventlog.Backend, name, fn, mode string) error {
	if d != eventlog.Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT `+fn+`(`+pglock.KeyExpr("$1::text")+`)`, pglock.ProjectionLock(name)); err != nil {
		return fmt.Errorf("projection %s: take %s lock: %w", name, mode, err)
	}
	return nil
}
