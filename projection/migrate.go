package projection

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
	"github.com/canonlog/canonlog/migrations"
)

// Migrate applies canonlog's core migrations, installs projections that
// have no checkpoint yet, then applies each registered projection's own
// migrations. A projection installed on a log that holds no event of its
// kinds is complete by definition and is recorded as built at its version.
// One installed on a log that already holds such events stays "never built"
// (stale) until rebuilt.
//
// The checkpoint is written before the projection's tables exist, not
// after: each step commits on its own, and a process killed between the
// two must not leave tables without a checkpoint. Appends would fill such
// tables inline, and the next Migrate would then find events and leave the
// projection stale for good. Killed the other way round, the projection has
// a checkpoint and no tables: appends through the registry fail until the
// next Migrate creates them.
//
// Last, on PostgreSQL, it drops the schemas that online rebuilds of these
// projections (registered, or recorded in the database) left behind when
// they were stopped (see RebuildState): never those of a rebuild that is
// running, whose lock it tries without waiting. It reports nothing about
// them, and leaves those this role may not drop; Status shows what is
// left.
func Migrate(ctx context.Context, log *eventlog.Log, reg *Registry) ([]migrations.Result, error) {
	sets := append([]migrations.Set{migrations.Core()}, reg.MigrationSets()...)
	ms := make([]*migrations.Migrator, len(sets))
	for i, set := range sets {
		m, err := migrations.New(log.DB(), set)
		if err != nil {
			return nil, err
		}
		ms[i] = m
	}
	res, err := ms[0].Up(ctx)
	if err != nil {
		return res, err
	}
	if err := Install(ctx, log, reg); err != nil {
		return res, err
	}
	for _, m := range ms[1:] {
		r, err := m.Up(ctx)
		res = append(res, r...)
		if err != nil {
			return res, err
		}
	}
	if err := recordKinds(ctx, log.DB(), reg); err != nil {
		return res, err
	}
	return res, dropStoppedRebuilds(ctx, log.DB(), reg)
}

// Install records a checkpoint for each registered projection that has
// none: built at its version when no event it reads (of its kinds, with
// one of its payload markers) is in the log yet (see Migrate), else at version 0, "never built", so that it is stale
// until rebuilt and yet recorded, with its kinds, for other binaries.
func Install(ctx context.Context, log *eventlog.Log, reg *Registry) error {
	cps, err := readCheckpoints(ctx, log.DB())
	if err != nil {
		return err
	}
	entries, _ := reg.selectEntries(nil)
	d, err := eventlog.BackendOf(log.DB())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := cps[e.name]; ok {
			continue
		}
		err := dbutil.WithTx(ctx, log.DB(), nil, func(tx *sqlx.Tx) error {
			if err := lockExclusive(ctx, tx, d, e.name); err != nil {
				return err
			}
			var found int
			for _, err := range log.PagesTx(ctx, tx, 0, e.readOptions(1)) {
				if err != nil {
					return err
				}
				found++
				break
			}
			last, err := log.LastSeqTx(ctx, tx)
			if err != nil {
				return err
			}
			c := checkpoint{Version: e.p.Version(), Seq: last, At: log.Clock().Now()}
			if found > 0 {
				c.Version, c.Seq = 0, 0 // events exist: it needs a real rebuild
			}
			return writeCheckpointIfAbsent(ctx, tx, e, c)
		})
		if err != nil {
			return fmt.Errorf("projection %s: install: %w", e.name, err)
		}
	}
	return nil
}
