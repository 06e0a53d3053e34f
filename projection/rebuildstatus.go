package projection

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/pglock"
)

// RebuildState is an online rebuild of a projection as the database shows
// it, on PostgreSQL: one that is running, or the schemas that one which
// was stopped left behind. SQLite keeps an online rebuild's copy in the
// rebuild's own connection, which shows nothing and leaves nothing.
type RebuildState struct {
	// Running reports that the rebuild is running: a session holds its
	// rebuild lock. When false, Schemas are what a rebuild that was stopped
	// (its process killed, its connection lost) left behind: they take
	// room and nothing else, and the next rebuild of the projection, or
	// Migrate, drops them.
	Running bool
	// Schemas are the rebuild's schemas that exist, in the live schema's
	// database: the shadow schema it builds in, and during and right after
	// the swap the schema holding the old tables.
	Schemas []string
	// Phase is the phase the rebuild last recorded: PhaseBuild,
	// PhaseCatchUp or PhaseSwap. It is "" when that is unknown: the shadow
	// schema is gone (the swap is done, or the rebuild was stopped in it),
	// or this role may not read it. Done, Total, StartedAt and UpdatedAt
	// are zero then.
	Phase Phase
	// Done and Total are the events applied and the events to apply, as in
	// Progress. The rebuild records them when a phase begins, and once a
	// second at most within one.
	Done, Total int64
	// StartedAt is when the rebuild began; UpdatedAt when it last recorded
	// its progress. A stopped rebuild's UpdatedAt tells roughly when it
	// stopped.
	StartedAt, UpdatedAt time.Time
}

// readRebuildStates finds the online rebuilds of the projections named
// names in the database (PostgreSQL only): the schemas they use that
// exist, whether each one's session lock is held, and the progress it
// recorded. It looks only for the names shadowSchema and retiredSchema
// give, in one catalog query, and then reads the progress table of each
// shadow schema found. A progress table that this role may not read, or
// that is dropped meanwhile, leaves the progress unknown.
func readRebuildStates(ctx context.Context, q sqlx.QueryerContext, names []string) (map[string]*RebuildState, error) {
	if len(names) == 0 {
		return nil, nil
	}
	var live string
	if err := q.QueryRowxContext(ctx, `SELECT current_schema()`).Scan(&live); err != nil {
		return nil, fmt.Errorf("projection: look for online rebuilds: %w", err)
	}
	locks := make([]string, len(names))
	shadows := make([]string, len(names))
	retired := make([]string, len(names))
	for i, n := range names {
		locks[i], shadows[i], retired[i] = rebuildLock(n), shadowSchema(live, n), retiredSchema(live, n)
	}
	var rows []struct {
		Name     string `db:"name"`
		Schema   string `db:"schema"`
		Shadow   bool   `db:"shadow"`
		Running  bool   `db:"running"`
		Readable bool   `db:"readable"`
	}
	if err := sqlx.SelectContext(ctx, q, &rows, rebuildStatesQuery, pq.Array(names), pq.Array(locks), pq.Array(shadows), pq.Array(retired)); err != nil {
		return nil, fmt.Errorf("projection: look for online rebuilds: %w", err)
	}
	out := make(map[string]*RebuildState)
	for _, r := range rows {
		st := out[r.Name]
		if st == nil {
			st = &RebuildState{Running: r.Running}
			out[r.Name] = st
		}
		st.Schemas = append(st.Schemas, r.Schema)
		if !r.Shadow || !r.Readable {
			continue
		}
		if err := readRebuildProgress(ctx, q, r.Schema, st); err != nil {
			return nil, fmt.Errorf("projection %s: read the progress of its online rebuild: %w", r.Name, err)
		}
	}
	return out, nil
}

// rebuildStatesQuery finds, for each projection name in $1 with its
// rebuild lock's name in $2 and its shadow and retired schemas' names in
// $3 and $4 (shadowSchema, retiredSchema), the rebuild schemas that
// exist, the shadow first. pg_namespace, pg_class and pg_locks are
// readable by every role; the progress table is read only where the
// privileges allow it.
var rebuildStatesQuery = `WITH p AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS p(name, lock, shadow_schema, retired_schema)
), s AS (
  SELECT name, lock, true AS shadow, shadow_schema AS schema FROM p
  UNION ALL SELECT name, lock, false, retired_schema FROM p
)
SELECT s.name, n.nspname AS schema, s.shadow,
  EXISTS (SELECT 1 FROM pg_locks l, (SELECT ` + pglock.KeyExpr("s.lock") + ` AS k) AS key
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = (key.k >> 32) & 4294967295 AND l.objid::bigint = key.k & 4294967295) AS running,
  COALESCE(c.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'), false) AS readable
FROM s JOIN pg_namespace n ON n.nspname = s.schema
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'canonlog_rebuild' AND c.relkind = 'r'
ORDER BY s.name, s.shadow DESC`

// readRebuildProgress reads the progress row of the shadow schema into
// st. It leaves st's progress unknown when the table is gone or not
// readable after all (a race with the rebuild's end, a privilege revoked).
func readRebuildProgress(ctx context.Context, q sqlx.QueryerContext, shadow string, st *RebuildState) error {
	var phase string
	err := q.QueryRowxContext(ctx, `SELECT phase, done, total, started_at, updated_at FROM `+pq.QuoteIdentifier(shadow)+`.canonlog_rebuild LIMIT 1`).
		Scan(&phase, &st.Done, &st.Total, &st.StartedAt, &st.UpdatedAt)
	var pe *pq.Error
	switch {
	case err == nil:
		st.Phase = Phase(phase)
		return nil
	case errors.Is(err, sql.ErrNoRows),
		errors.As(err, &pe) && (pe.Code.Class() == "42" || pe.Code.Class() == "3F"): // privileges, undefined table or schema
		st.Done, st.Total, st.StartedAt, st.UpdatedAt = 0, 0, time.Time{}, time.Time{}
		return nil
	}
	return err
}

// addRebuildStates fills in the Rebuild field of sts on PostgreSQL.
func addRebuildStates(ctx context.Context, db *sqlx.DB, sts Statuses) error {
	if d, err := eventlog.BackendOf(db); err != nil || d != eventlog.Postgres {
		return err
	}
	names := make([]string, len(sts))
	for i, s := range sts {
		names[i] = s.Name
	}
	states, err := readRebuildStates(ctx, db, names)
	if err != nil {
		return err
	}
	for i := range sts {
		sts[i].Rebuild = states[sts[i].Name]
	}
	return nil
}

// dropStoppedRebuilds drops the schemas that stopped online rebuilds of
// reg's projections, and of those the database records, left behind
// (PostgreSQL only). A rebuild that is running keeps its own: each
// projection's rebuild lock is tried without waiting on a connection of
// its own, and the schemas are dropped only while it is held. Schemas
// this role may not drop are left, as Status shows them.
func dropStoppedRebuilds(ctx context.Context, db *sqlx.DB, reg *Registry) error {
	if d, err := eventlog.BackendOf(db); err != nil || d != eventlog.Postgres {
		return err
	}
	cps, err := readCheckpoints(ctx, db)
	if err != nil {
		return err
	}
	names := reg.Names()
	for n := range cps {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	states, err := readRebuildStates(ctx, db, names)
	if err != nil || len(states) == 0 {
		return err
	}
	conn, err := db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("projection: drop what stopped rebuilds left: %w", err)
	}
	held := false // a rebuild lock is held on conn: it must not go back to the pool
	defer func() {
		if held {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}()
	var live string
	if err := conn.QueryRowxContext(ctx, `SELECT current_schema()`).Scan(&live); err != nil {
		return fmt.Errorf("projection: drop what stopped rebuilds left: %w", err)
	}
	for _, name := range names {
		if st := states[name]; st == nil || st.Running {
			continue
		}
		if err := conn.QueryRowxContext(ctx, `SELECT pg_try_advisory_lock(`+pglock.KeyExpr("$1::text")+`)`, rebuildLock(name)).Scan(&held); err != nil {
			return fmt.Errorf("projection %s: take the rebuild lock: %w", name, err)
		}
		if !held {
			continue // a rebuild began meanwhile: it drops them itself
		}
		err := dropRebuildSchemas(ctx, conn, live, name, 1)
		var unlocked bool
		if uerr := conn.QueryRowxContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(`+pglock.KeyExpr("$1::text")+`)`, rebuildLock(name)).Scan(&unlocked); uerr == nil && unlocked {
			held = false
		}
		// Not allowed to (42501), or a long reader of the log in the way
		// (a lock timeout): the leftovers stay, Status reports them, and
		// the next rebuild or Migrate tries again.
		var pe *pq.Error
		if err != nil && !(errors.As(err, &pe) && (pe.Code == "42501" || pe.Code == "55P03")) {
			return fmt.Errorf("projection %s: drop what a stopped rebuild left: %w", name, err)
		}
		if held {
			return fmt.Errorf("projection %s: release the rebuild lock", name)
		}
	}
	return nil
}
