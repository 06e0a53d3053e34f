package migrations

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"

	"github.com/canonlog/canonlog/eventlog"
)

// DownStep is one migration that Down rolls back.
type DownStep struct {
	Set       string // "core" or the projection's name
	Version   int64
	Source    string    // file name, e.g. 00001_event_log.sql
	AppliedAt time.Time // when it was applied, as its version table says
}

// Down removes sets and then canonlog's core schema: every applied
// migration of every set is rolled back, and the event log with them. It
// exists for tests and for tearing down scratch databases.
//
// Before it changes anything, Down reads what the database holds and
// refuses:
//
//   - with an *UnknownSetsError (ErrUnknownSets) when the database holds
//     applied migrations of a set that is not among sets — typically the
//     projections of a service, installed by the service's own binary.
//     Their tables may point into event_log, and rolling back core would
//     then stop halfway. (A set all of whose migrations are rolled back
//     holds nothing and does not count, although goose leaves its
//     version table behind.)
//   - with ErrUnknownVersion when one of sets has an applied migration it
//     has no file for.
//
// Otherwise it rolls back in dependency order — the projection sets first,
// in the reverse of the order Up applies them, core last — and within a
// set the most recently applied migration first, as goose does: exactly
// the steps PlanDown lists. When a rollback fails (a table outside any set
// pointing into event_log, a migration's own error, ctx cancelled), Down
// stops and returns what it rolled back together with a *PartialError
// naming the migration that failed and those still applied.
//
// On SQLite, Down holds the migration lock of the file throughout, so the
// plan it follows is the state it acts on. On PostgreSQL each rollback
// takes its set's lock in turn: do not run Down while something else
// migrates or uses the database.
func Down(ctx context.Context, db *sqlx.DB, sets ...Set) ([]Result, error) {
	ms, err := downMigrators(db, sets)
	if err != nil {
		return nil, err
	}
	if ms[0].dialect == eventlog.SQLite {
		unlock, err := lockSQLite(ctx, db.DB)
		if err != nil {
			return nil, fmt.Errorf("migrations: down: %w", err)
		}
		defer unlock()
	}
	plan, err := planDown(ctx, db.DB, ms)
	if err != nil {
		return nil, err
	}
	bySet := make(map[string]*Migrator, len(ms))
	for _, m := range ms {
		bySet[m.set.label()] = m
	}
	var done []Result
	for i, step := range plan {
		m := bySet[step.Set]
		// ApplyVersion rolls back exactly the planned migration, in a
		// transaction with the removal of its version rows.
		res, err := m.provider.ApplyVersion(ctx, step.Version, false)
		if err != nil {
			var pe *goose.PartialError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return done, &PartialError{RolledBack: done, Failed: step, Remaining: plan[i+1:], Err: err}
		}
		done = append(done, m.results([]*goose.MigrationResult{res})...)
	}
	return done, nil
}

// PlanDown lists, in order, the migrations that Down(ctx, db, sets...)
// would roll back now, and returns the errors Down would refuse with
// (ErrUnknownSets, ErrUnknownVersion). It only reads, so a command can
// show the plan before asking for confirmation. What Down then does is
// exactly this plan, unless something migrates the database in between.
func PlanDown(ctx context.Context, db *sqlx.DB, sets ...Set) ([]DownStep, error) {
	ms, err := downMigrators(db, sets)
	if err != nil {
		return nil, err
	}
	return planDown(ctx, db.DB, ms)
}

// downMigrators returns the Migrators of core and sets in the order Down
// rolls them back: sets in reverse, core last.
func downMigrators(db *sqlx.DB, sets []Set) ([]*Migrator, error) {
	ms, err := migrators(db, sets)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(ms))
	for _, m := range ms {
		if seen[m.set.Table()] {
			return nil, fmt.Errorf("migrations: set %s is given twice", m.set.label())
		}
		seen[m.set.Table()] = true
	}
	out := make([]*Migrator, 0, len(ms))
	for i := len(ms) - 1; i >= 1; i-- {
		out = append(out, ms[i])
	}
	return append(out, ms[0]), nil
}

// planDown reads what Down would roll back with ms, in that order.
func planDown(ctx context.Context, q queryer, ms []*Migrator) ([]DownStep, error) {
	d := ms[0].dialect
	installed, err := installedSets(ctx, q, d)
	if err != nil {
		return nil, fmt.Errorf("migrations: down: list installed sets: %w", err)
	}
	given := make(map[string]bool, len(ms))
	for _, m := range ms {
		given[m.set.Table()] = true
	}
	var unknown []string
	for _, name := range installed {
		table := CoreTable + "_" + name
		if given[table] {
			continue
		}
		applied, err := readApplied(ctx, q, d, table)
		if err != nil {
			return nil, fmt.Errorf("migrations: down: %w", err)
		}
		if len(applied) > 0 {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		return nil, &UnknownSetsError{Sets: unknown}
	}

	var plan []DownStep
	for _, m := range ms {
		applied, err := readApplied(ctx, q, d, m.set.Table())
		if err != nil {
			return nil, m.wrap("down", err)
		}
		versions := make([]int64, 0, len(applied))
		for v := range applied {
			versions = append(versions, v)
		}
		// Most recently applied first, as goose rolls back.
		slices.SortFunc(versions, func(a, b int64) int { return cmp.Compare(applied[b].id, applied[a].id) })
		sources := make(map[int64]string)
		for _, src := range m.provider.ListSources() {
			sources[src.Version] = baseName(src.Path)
		}
		for _, v := range versions {
			src, ok := sources[v]
			if !ok {
				return nil, fmt.Errorf("migrations: down %s: version %d is applied (%s) but the set has no file for it: %w; roll it back with the program that applied it",
					m.set.label(), v, m.set.Table(), ErrUnknownVersion)
			}
			plan = append(plan, DownStep{Set: m.set.label(), Version: v, Source: src, AppliedAt: applied[v].at})
		}
	}
	return plan, nil
}
