package projection_test

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

// twoStepView is kindView with two migration files, the second of which
// fails while broken: a Migrate that stops after the projection's first
// file, as a process killed there would.
type twoStepView struct {
	kindView
	broken bool
}

func (v *twoStepView) Migrations() migrations.Set {
	files := v.kindView.Migrations().Postgres.(fstest.MapFS)
	second := "CREATE INDEX test_view_kind_idx ON test_view (kind);"
	if v.broken {
		second = "CREATE INDEX test_view_kind_idx ON no_such_table (kind);"
	}
	all := fstest.MapFS{"00002_test_view_index.sql": {Data: []byte("-- +goose Up\n" + second + "\n-- +goose Down\nDROP INDEX test_view_kind_idx;\n")}}
	for name, f := range files {
		all[name] = f
	}
	return migrations.Set{Postgres: all, SQLite: all}
}

// TestMigrateCheckpointBeforeTables: Migrate records a new projection's
// checkpoint before it creates the projection's tables. A Migrate stopped
// partway through the projection's own migrations therefore never leaves
// tables without a checkpoint: events appended in between are applied
// inline, and the next Migrate leaves the projection current, not stale
// ("never built") for good.
func TestMigrateCheckpointBeforeTables(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Open(t)
		view := &twoStepView{kindView: kindView{testView{kinds: []eventlog.Kind{"k"}}}, broken: true}
		reg, err := projection.NewRegistry(view)
		require.NoError(t, err)
		log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
		require.NoError(t, err)
		t.Cleanup(func() { _ = log.Close() })

		_, err = projection.Migrate(ctx, log, reg)
		require.Error(t, err, "the second file fails")
		require.Equal(t, 0, count(t, db, "test_view"), "the first file created the table")

		_, err = log.AppendBatch(ctx, []eventlog.Entry{ev("k", "h1", `{}`), ev("k", "h2", `{}`)})
		require.NoError(t, err)
		require.Len(t, viewRows(t, db), 2, "applied inline")

		view.broken = false
		_, err = projection.Migrate(ctx, log, reg)
		require.NoError(t, err)
		sts, err := projection.CheckStale(ctx, log, reg, projection.StaleRefuse)
		require.NoError(t, err, "a checkpoint was recorded before the tables existed")
		require.False(t, sts[0].Stale)
		res, err := projection.Verify(ctx, log, reg, nil)
		require.NoError(t, err)
		require.True(t, res[0].Equal, "%+v", res[0])
	})
}
