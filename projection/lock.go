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
	if d != eventlog.Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+pglock.KeyExpr("$1::text")+`)`, pglock.ProjectionLock(name)); err != nil {
		return fmt.Errorf("projection %s: take exclusive lock: %w", name, err)
	}
	return nil
}
