package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
)

// queryer is what reading the migration state needs.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ queryer = (*sql.DB)(nil)
	_ queryer = (*sql.Conn)(nil)
)

// appliedVersion is a migration a goose version table records as applied.
type appliedVersion struct {
	id int64 // the id of its latest row: goose rolls back in descending id order
	at time.Time
}

// readApplied reads the applied migrations of a set from its goose version
// table, changing nothing: it returns nil when the table does not exist
// (where goose's own Provider would create it).
//
// goose v3's Provider inserts a row (version_id, is_applied = true) when it
// applies a migration and deletes the version's rows when it rolls one
// back; older goose versions recorded a rollback as a row with
// is_applied = false instead. Both read right here the way goose's
// package-level status reads them: the latest row of a version (the
// highest id, which also orders rows written within one second) decides
// whether it is applied, and when. Version 0 is goose's marker row, not a
// migration.
func readApplied(ctx context.Context, q queryer, d eventlog.Backend, table string) (map[int64]appliedVersion, error) {
	name, err := qualifiedTable(ctx, q, d, table)
	if err != nil || name == "" {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT id, version_id, is_applied, tstamp FROM `+name+` ORDER BY id DESC`)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	seen := map[int64]bool{}
	applied := map[int64]appliedVersion{}
	for rows.Next() {
		var (
			id, version int64
			isApplied   bool
			at          sql.NullTime
		)
		if err := rows.Scan(&id, &version, &isApplied, &at); err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		if seen[version] {
			continue
		}
		seen[version] = true
		if isApplied && version > 0 {
			applied[version] = appliedVersion{id: id, at: at.Time}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	return applied, nil
}

// qualifiedTable returns table's name qualified with the schema it lives
// in — PostgreSQL's current_schema(), where goose creates and looks for
// its version tables, or SQLite's main database — or "" when it does not
// exist there.
func qualifiedTable(ctx context.Context, q queryer, d eventlog.Backend, table string) (string, error) {
	switch d {
	case eventlog.Postgres:
		var schema string
		err := q.QueryRowContext(ctx, `SELECT n.nspname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = $1 AND c.relkind IN ('r', 'p')`, table).Scan(&schema)
		if errors.Is(err, sql.ErrNoRows) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("look up table %s: %w", table, err)
		}
		return quoteIdent(schema) + "." + quoteIdent(table), nil
	case eventlog.SQLite:
		var n int
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM main.sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&n); err != nil {
			return "", fmt.Errorf("look up table %s: %w", table, err)
		}
		if n == 0 {
			return "", nil
		}
		return "main." + quoteIdent(table), nil
	}
	return "", fmt.Errorf("look up table %s: unsupported dialect %s", table, d)
}

func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// InstalledSets returns the names of the migration sets whose version
// tables (canonlog_migrations_<name>) exist in db — in PostgreSQL's
// current schema, or SQLite's main database — sorted. Core
// (canonlog_migrations) is not among them. A set is listed as long as its
// version table exists, even when all its migrations are rolled back:
// goose leaves the table behind. InstalledSets only reads.
func InstalledSets(ctx context.Context, db *sqlx.DB) ([]string, error) {
	d, err := eventlog.BackendOf(db)
	if err != nil {
		return nil, err
	}
	sets, err := installedSets(ctx, db.DB, d)
	if err != nil {
		return nil, fmt.Errorf("migrations: list installed sets: %w", err)
	}
	return sets, nil
}

func installedSets(ctx context.Context, q queryer, d eventlog.Backend) ([]string, error) {
	// LIKE narrows the scan; the exact, case-sensitive prefix and the set
	// name rule are checked below (SQLite's LIKE ignores case, and '_'
	// matches any character).
	query := `SELECT name FROM main.sqlite_master WHERE type = 'table' AND name LIKE 'canonlog%'`
	if d == eventlog.Postgres {
		query = `SELECT c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname LIKE 'canonlog%'`
	}
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var sets []string
	for rows.Next() {
		var table string
		if err := rows.Scan(&table); err != nil {
			return nil, err
		}
		if name, ok := strings.CutPrefix(table, CoreTable+"_"); ok && setNameRE.MatchString(name) {
			sets = append(sets, name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.Sort(sets)
	return sets, nil
}

// Status lists every migration of the set and whether it is applied. It
// only reads: when the set's version table does not exist, every
// migration is pending and nothing is created. It takes no lock, so it
// neither waits for a migration run in progress nor holds one up; during
// such a run it reports the state between two of the run's migrations
// (goose commits each migration together with its version row, unless its
// file says NO TRANSACTION), never half of one.
func (m *Migrator) Status(ctx context.Context) ([]MigrationStatus, error) {
	applied, err := readApplied(ctx, m.db, m.dialect, m.set.Table())
	if err != nil {
		return nil, m.wrap("status", err)
	}
	srcs := m.provider.ListSources()
	out := make([]MigrationStatus, 0, len(srcs))
	for _, src := range srcs {
		st := MigrationStatus{Set: m.set.label(), Version: src.Version, Source: baseName(src.Path)}
		if a, ok := applied[src.Version]; ok {
			st.Applied, st.AppliedAt = true, a.at
		}
		out = append(out, st)
	}
	return out, nil
}

// Status lists the migrations of canonlog's core and of each of sets, in
// that order, reading only (see Migrator.Status). The sets are read one
// after the other, so during a concurrent run it may see, say, core
// applied and a later set still pending.
func Status(ctx context.Context, db *sqlx.DB, sets ...Set) ([]MigrationStatus, error) {
	ms, err := migrators(db, sets)
	if err != nil {
		return nil, err
	}
	var all []MigrationStatus
	for _, m := range ms {
		sts, err := m.Status(ctx)
		if err != nil {
			return nil, err
		}
		all = append(all, sts...)
	}
	return all, nil
}
