package canonlogcli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// tamper changes one probe_failures row behind the projection's back.
func tamper(t *testing.T, c *cli) {
	t.Helper()
	db := c.db()
	res, err := db.Exec(`UPDATE probe_failures SET control_id = 'TAMPERED'
WHERE event_log_seq = (SELECT MIN(event_log_seq) FROM probe_failures)
  AND control_id = (SELECT MIN(control_id) FROM probe_failures WHERE event_log_seq = (SELECT MIN(event_log_seq) FROM probe_failures))`)
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

func TestRebuildVerifyStatus(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend).migrated()
		c.ok(c.ok("", "gen", "--events", "600", "--hosts", "20", "--fail-ratio", "0.4"), "append", "--file", "-")
		_, rows := c.counts()
		require.Positive(t, rows)

		r := c.run("", "rebuild", "probe_failures", "--progress", "lines")
		require.Equal(t, 0, r.code, r.err)
		require.Regexp(t, `rebuilt probe_failures \(version 1\) online: \d+ events replayed, `+itoa(rows)+` rows, up to seq 600, in .* events/s\); `+
			`catch-up \d+ rounds?, 0 events; swap 0 events; lock held \d`, r.out)
		require.Contains(t, r.err, "rebuild probe_failures: build 0/")
		require.Contains(t, r.err, "(100%)")
		require.Contains(t, r.err, "rebuild probe_failures: catch-up round 1: 0 events since the build\n")
		require.Regexp(t, `rebuild probe_failures: swap after \d+ catch-up rounds?: the last events, under the projection's lock\n`, r.err)

		var reports []rebuildReport
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "rebuild", "--all", "--progress", "none", "-o", "json")), &reports))
		require.Len(t, reports, 1)
		require.Equal(t, int64(rows), reports[0].Rows)
		require.Contains(t, c.ok("", "rebuild", "--stale"), "nothing to rebuild")

		require.Contains(t, c.ok("", "verify"), "probe_failures: equal to a fresh derivation")

		// A row changed behind the projection's back: verify exits 3 and
		// shows it; rebuild repairs it.
		tamper(t, c)
		r = c.run("", "verify", "probe_failures")
		require.Equal(t, exitDifferent, r.code, r.err)
		require.Contains(t, r.out, "DIFFERS")
		require.Contains(t, r.out, "1 row missing from the live view, 1 extra")
		require.Contains(t, r.out, `extra probe_failures: (`)
		require.Contains(t, r.out, `"TAMPERED"`)
		require.Contains(t, r.err, "run 'canonlog rebuild probe_failures'")
		r = c.run("", "verify", "-o", "json")
		require.Equal(t, exitDifferent, r.code)
		var vr []verifyReport
		require.NoError(t, json.Unmarshal([]byte(r.out), &vr))
		require.False(t, vr[0].Equal)
		c.ok("", "rebuild", "probe_failures", "--progress", "none")
		c.ok("", "verify")

		// status, both formats.
		out := c.ok("", "status")
		require.Contains(t, out, "events:   600 (last seq 600)")
		require.Regexp(t, `probe_failures\s+1\s+1\s+no\s+`+itoa(rows)+`\s+\d{4}-`, out)
		var st statusReport
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "status", "-o", "json")), &st))
		require.Equal(t, int64(600), st.Events)
		require.Len(t, st.Projections, 1)
		require.False(t, st.Projections[0].Stale)
		require.Equal(t, int64(rows), st.Projections[0].Rows)

		// A projection never built shows as stale, and --stale rebuilds it.
		_, err := c.db().Exec(`UPDATE canonlog_projections SET version = 0, built_seq = 0`)
		require.NoError(t, err)
		require.Contains(t, c.ok("", "status"), "rebuild --stale")
		require.Contains(t, c.ok("", "rebuild", "--stale", "--progress", "none"), "rebuilt probe_failures")
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "status", "-o", "json")), &st))
		require.False(t, st.Projections[0].Stale)
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestProgressBar(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	clock := time.Date(2026, 5, 16, 0, 0, 0, 0, time.UTC)
	r := newProgressReporter(&out, progressBar)
	r.now = func() time.Time { return clock }
	build := projection.PhaseBuild
	r.update(projection.Progress{Projection: "p", Phase: build, Total: 1000})
	clock = clock.Add(time.Second)
	r.update(projection.Progress{Projection: "p", Phase: build, Done: 250, Total: 1000})
	clock = clock.Add(time.Second)
	r.update(projection.Progress{Projection: "p", Phase: build, Done: 1000, Total: 1000})
	r.update(projection.Progress{Projection: "p", Phase: projection.PhaseCatchUp, Round: 1, Done: 1000, Total: 1000})
	r.update(projection.Progress{Projection: "p", Phase: projection.PhaseCatchUp, Round: 1, Done: 1003, Total: 1003})
	r.update(projection.Progress{Projection: "p", Phase: projection.PhaseCatchUp, Round: 2, Done: 1003, Total: 1003})
	r.update(projection.Progress{Projection: "p", Phase: projection.PhaseSwap, Round: 2, Done: 1003, Total: 1003})
	r.finish()
	s := out.String()
	require.Contains(t, s, "\rp build [=======                       ] 25% 250/1000 events 250/s ETA 3s")
	// Each phase keeps its last state on a line of its own; the rounds of
	// the catch-up redraw one line.
	require.Contains(t, s, "100% 1000/1000 events 500/s ETA 0s\x1b[K\n\rp catch-up round 1: 0 events since the build\x1b[K")
	require.Contains(t, s, "\rp catch-up round 2: 3 events since the build\x1b[K\n")
	require.Contains(t, s, "\rp swap after 2 catch-up rounds: the last events, under the projection's lock\x1b[K\n")
	require.True(t, strings.HasSuffix(s, "\n"))
	require.Equal(t, 3, strings.Count(s, "\n"))
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		out := c.ok("", "migrate", "up")
		require.Contains(t, out, "applied core 00001_event_log.sql")
		// Every file of every set, counted rather than pinned: a new
		// migration must not break this test.
		files := strings.Count(out, "applied ")
		require.GreaterOrEqual(t, files, 3)
		require.Contains(t, out, "applied probe_failures 00001_probe_failures.sql")
		require.Contains(t, c.ok("", "migrate", "up"), "schema up to date")
		status := c.ok("", "migrate", "status")
		require.Regexp(t, `core\s+1\s+00001_event_log.sql\s+\d{4}-`, status)
		require.Regexp(t, `probe_failures\s+1\s+00001_probe_failures.sql\s+\d{4}-`, status)
		// A fresh projection on an empty log is installed as built.
		require.Contains(t, c.ok("", "status"), "no ")

		out = c.ok("", "migrate", "down", "--yes")
		require.Contains(t, out, "rolled back probe_failures 00001_probe_failures.sql")
		require.Contains(t, out, "rolled back core 00001_event_log.sql")
		var sts []migrationStatusReport
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "migrate", "status", "-o", "json")), &sts))
		require.Len(t, sts, files)
		for _, s := range sts {
			require.False(t, s.Applied)
		}
		require.Contains(t, c.ok("", "migrate", "status"), fmt.Sprintf("%d pending", files))
		r := c.run("", "status")
		require.Equal(t, 1, r.code)
		require.Contains(t, r.err, "run 'canonlog migrate up' first")
	})
}
