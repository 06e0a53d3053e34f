package bench

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/scratchdb"
)

// The shared log has planner statistics by default, and none with
// NoStatistics (autovacuum off, so none come later either); its
// probe_failures is derived either way.
func TestFillStatistics(t *testing.T) {
	t.Parallel()
	b := dbtest.New(t, "postgres")
	ctx := context.Background()
	for _, noStats := range []bool{false, true} {
		r := setup(t, b, Config{Events: 2000, NoStatistics: noStats})
		set, err := scratchdb.New(r.cfg.DatabaseURL, &scratchdb.Config{Prefix: r.prefix})
		require.NoError(t, err)
		rn := &run{cfg: r.cfg, mix: r.mix, set: set}
		t.Cleanup(func() { require.NoError(t, rn.close()) }) // drops the scratch schemas, also on failure
		filled, err := rn.fill(ctx)
		require.NoError(t, err)
		var analyzed bool
		require.NoError(t, filled.db.Get(&analyzed, `SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'event_log')`))
		require.Equal(t, !noStats, analyzed, "NoStatistics %v", noStats)
		var options []string
		require.NoError(t, filled.db.Select(&options, `SELECT COALESCE(array_to_string(reloptions, ','), '') FROM pg_class
WHERE relnamespace = current_schema()::regnamespace AND relname IN ('event_log', 'probe_failures') ORDER BY relname`))
		if noStats {
			require.Equal(t, []string{"autovacuum_enabled=false", "autovacuum_enabled=false"}, options)
		} else {
			require.Equal(t, []string{"", ""}, options)
		}
		var rows int
		require.NoError(t, filled.db.Get(&rows, `SELECT COUNT(*) FROM probe_failures`))
		require.Positive(t, rows)
	}
}
