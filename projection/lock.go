package projection

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/canonlog/canonlog/internal/dialect"
)

// Each projection has a transaction-level advisory lock on PostgreSQL,
// keyed by the current schema and its name. Appends take it shared (many at
// once); rebuild and verify take it exclusively, and only then read the log,
// in READ COMMITTED, so they see every append that committed before them and
// every later append waits for them and is then applied to the rebuilt
// state — applied exactly once either way. SQLite needs none of this: it
// runs one write transaction at a time.
const lockKeyExpr = `hashtextextended('canonlog:projection:' || current_schema() || ':' || n, 0)`

func lockShared(ctx context.Context, tx *sqlx.Tx, d dialect.Dialect, entries []*registered) error {
	if d != dialect.Postgres {
		return nil
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.name
	}
	// One round trip for all of them, in name order.
	_, err := tx.ExecContext(ctx, `SELECT count(pg_advisory_xact_lock_shared(`+lockKeyExpr+`)) FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i)`, pq.StringArray(names))
	if err != nil {
		return fmt.Errorf("projection: take shared locks: %w", err)
	}
	return nil
}

func lockExclusive(ctx context.Context, tx *sqlx.Tx, d dialect.Dialect, name string) error {
	if d != dialect.Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+lockKeyExpr+`) FROM (SELECT $1::text AS n) AS t`, name); err != nil {
		return fmt.Errorf("projection %s: take exclusive lock: %w", name, err)
	}
	return nil
}
