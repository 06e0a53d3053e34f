package projection_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// A migration that alters the projection's tables while an online
// rebuild runs would be undone by the swap (the copy was made before it):
// the rebuild stops with ErrViewChanged instead, and leaves the live view
// (altered) and its checkpoint as they are. The next rebuild copies the
// altered tables and succeeds.
func TestOnlineRebuildStopsWhenTheViewChanged(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, reg, db := setup(t, backend, &testView{})
		var batch []eventlog.Entry
		for i := range 50 {
			batch = append(batch, ev(eventlog.KindAgentEvent, "h", fmt.Sprintf(`{"i":%d}`, i)))
		}
		_, err := log.AppendBatch(ctx, batch)
		require.NoError(t, err)
		before, err := projection.ReadStatus(ctx, log, reg)
		require.NoError(t, err)

		altered := false
		_, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 10, Progress: func(p projection.Progress) {
			if p.Phase == projection.PhaseBuild && p.Done > 0 && !altered {
				altered = true
				_, err := db.Exec(`ALTER TABLE test_view ADD COLUMN note TEXT`)
				require.NoError(t, err)
			}
		}})
		require.ErrorIs(t, err, projection.ErrViewChanged)
		require.Contains(t, strings.ToLower(err.Error()), "note text")

		var cols []string
		if backend == "postgres" {
			require.NoError(t, db.Select(&cols, `SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'test_view' ORDER BY ordinal_position`))
		} else {
			require.NoError(t, db.Select(&cols, `SELECT name FROM pragma_table_info('test_view') ORDER BY cid`))
		}
		require.Contains(t, cols, "note", "the migration stays")
		require.Len(t, viewRows(t, db), 50)
		after, err := projection.ReadStatus(ctx, log, reg)
		require.NoError(t, err)
		require.Equal(t, before, after, "the checkpoint is as it was")

		res, err := projection.Rebuild(ctx, log, reg, nil)
		require.NoError(t, err)
		require.True(t, res[0].Online)
		require.Len(t, viewRows(t, db), 50)
		if backend == "postgres" {
			var left []string
			require.NoError(t, db.Select(&left, `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, current_schema() || '__')`))
			require.Empty(t, left)
		}
	})
}
