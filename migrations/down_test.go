package migrations_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
)

// dbState is everything Down could change: the objects of the schema and
// the rows of every version table.
type dbState struct {
	Objects  []string
	Versions map[string][]string // version table → its rows, "id version is_applied"
}

func stateOf(t *testing.T, db *sqlx.DB) dbState {
	t.Helper()
	st := dbState{Objects: leftovers(t, db), Versions: map[string][]string{}}
	for _, table := range versionTables(t, db) {
		var rows []struct {
			ID        int64 `db:"id"`
			Version   int64 `db:"version_id"`
			IsApplied bool  `db:"is_applied"`
		}
		require.NoError(t, db.Select(&rows, `SELECT id, version_id, is_applied FROM `+table+` ORDER BY id`))
		for _, r := range rows {
			st.Versions[table] = append(st.Versions[table], fmt.Sprintf("%d %d %t", r.ID, r.Version, r.IsApplied))
		}
	}
	return st
}

// planOf turns files of a set into the DownSteps rolling them back.
func planOf(set string, files []coreFile) []migrations.DownStep {
	out := make([]migrations.DownStep, len(files))
	for i, f := range files {
		out[i] = migrations.DownStep{Set: set, Version: f.version, Source: f.name}
	}
	return out
}

// withoutTimes drops AppliedAt, which the tests check apart.
func withoutTimes(plan []migrations.DownStep) []migrations.DownStep {
	out := make([]migrations.DownStep, len(plan))
	for i, s := range plan {
		out[i] = migrations.DownStep{Set: s.Set, Version: s.Version, Source: s.Source}
	}
	return out
}

func TestDown(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		files := coreFiles(t, backend)

		// setup returns a database with core, demo and t_proj applied, an
		// event, and rows of both sets pointing at it.
		setup := func(t *testing.T) (dbtest.Backend, *sqlx.DB) {
			t.Helper()
			b := dbtest.New(t, backend)
			db := b.Migrated(t, demoSet(), tprojSet())
			ev := appendOne(t, db)
			_, err := db.Exec(db.Rebind(`INSERT INTO demo_rows (event_log_seq, note) VALUES (?, 'x')`), ev.Seq)
			require.NoError(t, err)
			_, err = db.Exec(db.Rebind(`INSERT INTO t_proj (event_log_seq) VALUES (?)`), ev.Seq)
			require.NoError(t, err)
			return b, db
		}

		t.Run("RefusesUnknownSet", func(t *testing.T) {
			t.Parallel()
			_, db := setup(t)
			before := stateOf(t, db)
			require.Contains(t, before.Objects, "t_proj")

			check := func(err error) {
				t.Helper()
				require.ErrorIs(t, err, migrations.ErrUnknownSets)
				var ue *migrations.UnknownSetsError
				require.ErrorAs(t, err, &ue)
				require.Equal(t, []string{"t_proj"}, ue.Sets)
				require.ErrorContains(t, err, "t_proj (version tables canonlog_migrations_t_proj)")
				require.ErrorContains(t, err, "nothing was rolled back")
				require.ErrorContains(t, err, "roll them back first with the program that registers them")
			}
			plan, err := migrations.PlanDown(ctx, db, demoSet())
			check(err)
			require.Nil(t, plan)
			res, err := migrations.Down(ctx, db, demoSet())
			check(err)
			require.Empty(t, res)
			// Core alone is refused the same way, naming both sets.
			_, err = migrations.Down(ctx, db)
			var ue *migrations.UnknownSetsError
			require.ErrorAs(t, err, &ue)
			require.Equal(t, []string{"demo", "t_proj"}, ue.Sets)

			require.Equal(t, before, stateOf(t, db), "every table and version row is where it was")
			requireStatus(t, status(t, db), "core", files, true)
			requireStatus(t, status(t, db, tprojSet())[len(files):], "t_proj", tprojFiles, true)

			// Once its own program rolled it back, the set holds nothing
			// (its version table stays) and Down proceeds.
			m, err := migrations.New(db, tprojSet())
			require.NoError(t, err)
			_, err = m.DownTo(ctx, 0)
			require.NoError(t, err)
			res, err = migrations.Down(ctx, db, demoSet())
			require.NoError(t, err)
			require.Len(t, res, len(demoFiles)+len(files))
			require.Equal(t, []string{migrations.CoreTable, "canonlog_migrations_demo", "canonlog_migrations_t_proj"}, leftovers(t, db))
		})

		t.Run("DependencyOrder", func(t *testing.T) {
			t.Parallel()
			b, db := setup(t)
			sets := []migrations.Set{demoSet(), tprojSet()}
			want := append(append(planOf("t_proj", tprojFiles), planOf("demo", reversed(demoFiles))...), planOf("core", reversed(files))...)

			plan, err := migrations.PlanDown(ctx, db, sets...)
			require.NoError(t, err)
			require.Equal(t, want, withoutTimes(plan), "the sets in the reverse of Up's order, core last")
			for _, s := range plan {
				require.False(t, s.AppliedAt.IsZero(), "%+v", s)
			}
			require.Equal(t, plan, mustPlan(t, readOnly(t, b), sets...), "the plan reads only")

			res, err := migrations.Down(ctx, db, sets...)
			require.NoError(t, err)
			require.Len(t, res, len(want))
			for i, r := range res {
				require.Equal(t, "down", r.Direction)
				require.Equal(t, want[i], migrations.DownStep{Set: r.Set, Version: r.Version, Source: r.Source}, "step %d", i)
			}
			require.Equal(t, []string{migrations.CoreTable, "canonlog_migrations_demo", "canonlog_migrations_t_proj"}, leftovers(t, db))
			sts := status(t, db, sets...)
			requireStatus(t, sts[:len(files)], "core", files, false)

			// Nothing left: an empty plan, and Down is a no-op.
			plan, err = migrations.PlanDown(ctx, db, sets...)
			require.NoError(t, err)
			require.Empty(t, plan)
			res, err = migrations.Down(ctx, db, sets...)
			require.NoError(t, err)
			require.Empty(t, res)

			// Up again gives a working log.
			_, err = migrations.Up(ctx, db, sets...)
			require.NoError(t, err)
			require.Equal(t, int64(1), appendOne(t, db).Seq)
		})

		t.Run("PartialError", func(t *testing.T) {
			t.Parallel()
			// A table outside any set pointing into event_log: no version
			// table gives it away, so rolling back core fails at event_log.
			db := dbtest.New(t, backend).Migrated(t)
			ev := appendOne(t, db)
			_, err := db.Exec(`CREATE TABLE by_hand (event_log_seq BIGINT REFERENCES event_log (seq))`)
			require.NoError(t, err)
			_, err = db.Exec(db.Rebind(`INSERT INTO by_hand (event_log_seq) VALUES (?)`), ev.Seq)
			require.NoError(t, err)

			res, err := migrations.Down(ctx, db)
			var pe *migrations.PartialError
			require.ErrorAs(t, err, &pe)
			rolledBack := reversed(files)[:len(files)-1]
			requireResults(t, res, "core", "down", rolledBack)
			requireResults(t, pe.RolledBack, "core", "down", rolledBack)
			require.Equal(t, planOf("core", files[:1]), withoutTimes([]migrations.DownStep{pe.Failed}))
			require.Empty(t, pe.Remaining)
			require.Error(t, pe.Err)
			require.ErrorIs(t, err, pe.Err)
			require.ErrorContains(t, err, "down stopped at core "+files[0].name)
			require.ErrorContains(t, err, "still applied: core "+files[0].name)
			require.ErrorContains(t, err, "rolled back before it: core "+files[len(files)-1].name)
			require.ErrorContains(t, err, "run down again")
			require.True(t, tableExists(t, db, "event_log"))
			sts := status(t, db)
			require.True(t, sts[0].Applied)
			for _, st := range sts[1:] {
				require.False(t, st.Applied, "%+v", st)
			}

			// Fixed, Down continues with what is still applied.
			_, err = db.Exec(`DROP TABLE by_hand`)
			require.NoError(t, err)
			res, err = migrations.Down(ctx, db)
			require.NoError(t, err)
			requireResults(t, res, "core", "down", files[:1])
			require.Equal(t, []string{migrations.CoreTable}, leftovers(t, db))
		})

		t.Run("UnknownVersion", func(t *testing.T) {
			t.Parallel()
			db := dbtest.New(t, backend).Migrated(t, demoSet())
			_, err := db.Exec(`INSERT INTO canonlog_migrations_demo (version_id, is_applied) VALUES (3, true)`)
			require.NoError(t, err)
			before := stateOf(t, db)
			_, err = migrations.PlanDown(ctx, db, demoSet())
			require.ErrorIs(t, err, migrations.ErrUnknownVersion)
			res, err := migrations.Down(ctx, db, demoSet())
			require.ErrorIs(t, err, migrations.ErrUnknownVersion)
			require.ErrorContains(t, err, "version 3")
			require.Empty(t, res)
			require.Equal(t, before, stateOf(t, db))
		})

		t.Run("NothingApplied", func(t *testing.T) {
			t.Parallel()
			db := dbtest.New(t, backend).Open(t)
			plan, err := migrations.PlanDown(ctx, db, demoSet())
			require.NoError(t, err)
			require.Empty(t, plan)
			res, err := migrations.Down(ctx, db, demoSet())
			require.NoError(t, err)
			require.Empty(t, res)
			require.Empty(t, leftovers(t, db), "no version table was created")
		})

		t.Run("SetGivenTwice", func(t *testing.T) {
			t.Parallel()
			db := dbtest.New(t, backend).Migrated(t, demoSet())
			before := stateOf(t, db)
			_, err := migrations.Down(ctx, db, demoSet(), demoSet())
			require.ErrorContains(t, err, "set demo is given twice")
			_, err = migrations.PlanDown(ctx, db, migrations.Core())
			require.ErrorContains(t, err, "set core is given twice")
			require.Equal(t, before, stateOf(t, db))
		})
	})
}

func mustPlan(t *testing.T, db *sqlx.DB, sets ...migrations.Set) []migrations.DownStep {
	t.Helper()
	plan, err := migrations.PlanDown(context.Background(), db, sets...)
	require.NoError(t, err)
	return plan
}
