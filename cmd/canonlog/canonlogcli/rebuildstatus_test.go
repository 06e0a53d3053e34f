package canonlogcli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// heartbeats is a projection that lists no tables: it can only be rebuilt
// offline.
type heartbeats struct{}

func (heartbeats) Name() string                                          { return "heartbeats" }
func (heartbeats) Version() int                                          { return 1 }
func (heartbeats) Kinds() []eventlog.Kind                                { return []eventlog.Kind{eventlog.KindEffect} }
func (heartbeats) Apply(context.Context, *sqlx.Tx, eventlog.Event) error { return nil }
func (heartbeats) Reset(context.Context, *sqlx.Tx) error                 { return nil }

// TestRebuildOnlineOffline: rebuild is online by default and says so,
// phase by phase on stderr and in its summary; --offline replays under
// the lock; a projection that cannot be rebuilt online is rebuilt
// offline, and the summary says why.
func TestRebuildOnlineOffline(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		cfg := &Config{Name: "canonlog", Projections: []projection.Projection{probefailures.New(), heartbeats{}}}
		runIn := func(stdin string, args ...string) result {
			t.Helper()
			var out, errOut strings.Builder
			code := Run(context.Background(), cfg, append([]string{"--database-url", c.url}, args...), strings.NewReader(stdin), &out, &errOut)
			require.Equal(t, 0, code, "%v: %s", args, errOut.String())
			return result{out.String(), errOut.String(), code}
		}
		run := func(args ...string) result { t.Helper(); return runIn("", args...) }
		run("migrate", "up")
		runIn(c.ok("", "gen", "--events", "300", "--hosts", "10", "--fail-ratio", "0.5"), "append", "--file", "-")
		_, rows := c.counts()

		r := run("rebuild", "probe_failures", "--progress", "lines", "--batch-size", "50")
		require.Regexp(t, `^rebuilt probe_failures \(version 1\) online: \d+ events replayed, `+itoa(rows)+` rows, up to seq 300, in \S+ \(\d+ events/s\); `+
			`catch-up \d+ rounds?, 0 events; swap 0 events; lock held \S+\n$`, r.out)
		require.Regexp(t, `^rebuild probe_failures: build 0/\d+ events \(0%\), 0 events/s, ETA \?\n`, r.err)
		require.Regexp(t, `rebuild probe_failures: build (\d+)/\d+ events \(100%\), \d+ events/s, ETA 0s\n`+
			`rebuild probe_failures: catch-up round 1: 0 events since the build\n`+
			`(rebuild probe_failures: catch-up round \d+: 0 events since the build\n)*`+
			`rebuild probe_failures: swap after \d+ catch-up rounds?: the last events, under the projection's lock\n$`, r.err)

		r = run("rebuild", "probe_failures", "--offline", "--progress", "lines")
		require.Regexp(t, `^rebuilt probe_failures \(version 1\) offline: \d+ events replayed, `+itoa(rows)+` rows, up to seq 300, in \S+ \(\d+ events/s\); lock held \S+\n$`, r.out)
		require.Regexp(t, `^rebuild probe_failures: replay 0/\d+ events \(0%\), 0 events/s, ETA \?\n`, r.err)
		require.NotContains(t, r.err, "catch-up")

		// --gentle is online too, and refused with --offline.
		r = run("rebuild", "probe_failures", "--gentle", "--progress", "none")
		require.Regexp(t, `^rebuilt probe_failures \(version 1\) online: \d+ events replayed, `+itoa(rows)+` rows, up to seq 300, `, r.out)
		var out, errOut strings.Builder
		code := Run(context.Background(), cfg, []string{"--database-url", c.url, "rebuild", "probe_failures", "--gentle", "--offline"}, strings.NewReader(""), &out, &errOut)
		require.Equal(t, 2, code, out.String())
		require.Contains(t, errOut.String(), "--gentle paces an online rebuild, and --offline asks for an offline one")
		require.Empty(t, out.String())

		r = run("rebuild", "heartbeats", "--progress", "lines")
		require.Regexp(t, `^rebuilt heartbeats \(version 1\) offline: \d+ events replayed, rows not counted, up to seq 300, in \S+ \(\d+ events/s\); lock held \S+; `+
			`not online because it does not list its tables by unqualified names \(Tabler\)\n$`, r.out)

		var reports []rebuildReport
		require.NoError(t, json.Unmarshal([]byte(run("rebuild", "--all", "--progress", "none", "-o", "json").out), &reports))
		require.Len(t, reports, 2)
		require.Equal(t, "heartbeats", reports[0].Name)
		require.False(t, reports[0].Online)
		require.Equal(t, "it does not list its tables by unqualified names (Tabler)", reports[0].OfflineReason)
		require.Positive(t, reports[0].LockHeldSeconds)
		require.Equal(t, "probe_failures", reports[1].Name)
		require.True(t, reports[1].Online)
		require.Empty(t, reports[1].OfflineReason)
		require.GreaterOrEqual(t, reports[1].CatchUpRounds, 1)
		require.Positive(t, reports[1].LockHeldSeconds)
		var offline []rebuildReport
		require.NoError(t, json.Unmarshal([]byte(run("rebuild", "--all", "--offline", "--progress", "none", "-o", "json").out), &offline))
		require.Len(t, offline, 2)
		for _, rep := range offline {
			require.False(t, rep.Online, rep.Name)
			require.Empty(t, rep.OfflineReason, "asked for, not fallen back to")
			require.Zero(t, rep.CatchUpRounds)
		}
		run("verify", "probe_failures")
	})
}

// TestStatusShowsRebuilds: status shows an online rebuild that is running,
// with its phase and progress, and the schemas one that was stopped left
// behind, which 'migrate up' drops. SQLite has nothing to show.
func TestStatusShowsRebuilds(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		c := newCLI(t, backend).migrated()
		c.ok(c.ok("", "gen", "--events", "200", "--hosts", "10", "--fail-ratio", "0.5"), "append", "--file", "-")
		reg, err := projection.NewRegistry(probefailures.New())
		require.NoError(t, err)
		m, err := projection.NewManager(c.db(), reg, nil)
		require.NoError(t, err)
		var shadow string
		if backend == "postgres" {
			shadow = c.backend.Schema + "__rebuild_probe_failures"
		}
		status := func() (string, projectionReport) {
			t.Helper()
			var st statusReport
			require.NoError(t, json.Unmarshal([]byte(c.ok("", "status", "-o", "json")), &st))
			require.Len(t, st.Projections, 1)
			return c.ok("", "status"), st.Projections[0]
		}

		// Running: status is run from the rebuild's progress callback, as
		// each phase begins.
		var phases []projection.Phase
		_, err = m.Rebuild(ctx, &projection.RebuildOptions{Progress: func(p projection.Progress) {
			if len(phases) > 0 && phases[len(phases)-1] == p.Phase {
				return
			}
			phases = append(phases, p.Phase)
			out, pr := status()
			if backend == "sqlite" {
				require.NotContains(t, out, "rebuilding")
				require.Nil(t, pr.Rebuild)
				return
			}
			require.Regexp(t, `\n\nprobe_failures: rebuilding online: `+string(p.Phase)+` `+itoa(int(p.Done))+`/`+itoa(int(p.Total))+
				` since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n`, out)
			require.NotNil(t, pr.Rebuild)
			require.Equal(t, rebuildStateReport{Running: true, Phase: string(p.Phase), Done: p.Done, Total: p.Total,
				StartedAt: pr.Rebuild.StartedAt, UpdatedAt: pr.Rebuild.UpdatedAt, Schemas: []string{shadow}}, *pr.Rebuild)
			require.NotNil(t, pr.Rebuild.StartedAt)
			require.NotNil(t, pr.Rebuild.UpdatedAt)
		}})
		require.NoError(t, err)
		require.Equal(t, []projection.Phase{projection.PhaseBuild, projection.PhaseCatchUp, projection.PhaseSwap}, phases)
		out, pr := status()
		require.NotContains(t, out, "rebuild")
		require.Nil(t, pr.Rebuild)
		if backend == "sqlite" {
			return
		}

		// Stopped: the rebuild's session is terminated as its build
		// begins, as a crash would end it.
		killed := false
		var held *sqlx.Conn
		_, err = m.Rebuild(ctx, &projection.RebuildOptions{Progress: func(p projection.Progress) {
			if killed {
				return
			}
			killed = true
			var ok bool
			require.NoError(t, c.db().Get(&ok, `SELECT pg_terminate_backend(l.pid, 10000) FROM pg_locks AS l,
	(SELECT hashtextextended(current_schema() || ':' || 'canonlog:rebuild:probe_failures', 0) AS k) AS key
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = (key.k >> 32) & 4294967295 AND l.objid::bigint = key.k & 4294967295`))
			require.True(t, ok)
			// A dead process cleans nothing up; this live one would drop
			// its schema from another connection unless the rebuild lock
			// is taken meanwhile: take it until Rebuild returns.
			var err error
			held, err = c.db().Connx(ctx)
			require.NoError(t, err)
			_, err = held.ExecContext(ctx, `SELECT pg_advisory_lock(hashtextextended(current_schema() || ':' || 'canonlog:rebuild:probe_failures', 0))`)
			require.NoError(t, err)
		}})
		require.Error(t, err)
		_, err = held.ExecContext(ctx, `SELECT pg_advisory_unlock(hashtextextended(current_schema() || ':' || 'canonlog:rebuild:probe_failures', 0))`)
		require.NoError(t, err)
		require.NoError(t, held.Close())
		out, pr = status()
		require.Contains(t, out, "\n\nprobe_failures: leftover from a stopped rebuild: schema "+shadow+", dropped by the next rebuild or 'canonlog migrate up'\n")
		require.NotNil(t, pr.Rebuild)
		require.False(t, pr.Rebuild.Running)
		require.Equal(t, []string{shadow}, pr.Rebuild.Schemas)
		require.Equal(t, "build", pr.Rebuild.Phase)

		require.Contains(t, c.ok("", "migrate", "up"), "schema up to date")
		out, pr = status()
		require.NotContains(t, out, "leftover")
		require.Nil(t, pr.Rebuild)
		var n int
		require.NoError(t, c.db().Get(&n, `SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1`, shadow))
		require.Zero(t, n)
	})
}
