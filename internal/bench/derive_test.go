package bench

import (
	"bytes"
	"cmp"
	"context"
	"slices"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/fleetgen"
	"github.com/canonlog/canonlog/internal/scratchdb"
	"github.com/canonlog/canonlog/probefailures"
)

// newRun returns a run of cfg working next to b, closed when t ends.
func newRun(t *testing.T, b dbtest.Backend, cfg Config) *run {
	t.Helper()
	r := setup(t, b, cfg)
	set, err := scratchdb.New(b.URL, &scratchdb.Config{Prefix: r.prefix})
	require.NoError(t, err)
	rn := &run{cfg: r.cfg, mix: r.mix, set: set}
	t.Cleanup(func() { require.NoError(t, rn.close()) })
	return rn
}

// failureRow is a probe_failures row as stored: observed_at as the
// database renders it, so that the same instant written as different text
// (SQLite) is a difference.
type failureRow struct {
	Seq                                      int64
	Rollout, Host, Probe, Control, Framework string
	Observed                                 string
}

func failureRows(t *testing.T, db *sqlx.DB) []failureRow {
	t.Helper()
	var rows []failureRow
	require.NoError(t, db.Select(&rows, `SELECT event_log_seq AS seq, COALESCE(rollout_id, '<null>') AS rollout, host_id AS host,
  probe_name AS probe, control_id AS control, framework, CAST(observed_at AS TEXT) AS observed
FROM probe_failures ORDER BY event_log_seq, framework, control_id`))
	return rows
}

// sameRows fails on the first row where canonlog's rows and the raw side's
// differ, rather than printing thousands of rows.
func sameRows(t *testing.T, ours, raw []failureRow, what string) {
	t.Helper()
	for k := range min(len(ours), len(raw)) {
		require.Equal(t, ours[k], raw[k], "%s: row %d", what, k)
	}
	require.Equal(t, len(ours), len(raw), "%s: rows", what)
}

// The raw side's set-based SQL derives exactly the rows probe_failures
// derives in Go, on each profile's data — escaped strings, observed_at
// with milliseconds, with zone offsets or missing, probe results outside
// any rollout: over the filled log (rebuild), and in append-batch's two
// databases. Both sides store the payloads byte for byte.
func TestRawSideDerivesTheSameRows(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		b := dbtest.New(t, backend)
		ctx := context.Background()
		for _, profile := range fleetgen.Profiles() {
			// Small: SQLite under the race detector is slow.
			n, batch := 1500, 500
			if profile == fleetgen.Dense {
				n, batch = 400, 200
			}
			r := newRun(t, b, Config{Events: n, Profile: profile})

			// The fill, derived by projection.Rebuild, against the raw
			// rebuild; and both against probefailures.Rows on the
			// generated events.
			filled, err := r.fill(ctx)
			require.NoError(t, err)
			fromGo := failureRows(t, filled.db)
			var want []probefailures.Row
			for i := range n {
				e := r.mix.entry(i, "")
				want, err = probefailures.Rows(want, eventlog.Event{Seq: int64(i + 1), Kind: e.Kind, TS: e.TS, HostID: e.HostID, RolloutID: e.RolloutID, Payload: e.Payload})
				require.NoError(t, err)
			}
			slices.SortFunc(want, func(a, b probefailures.Row) int {
				return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Framework, b.Framework), cmp.Compare(a.ControlID, b.ControlID))
			})
			require.Len(t, fromGo, len(want), profile)
			for k, w := range want {
				got := fromGo[k]
				rollout := w.RolloutID
				if rollout == "" {
					rollout = "<null>"
				}
				require.Equal(t, failureRow{w.Seq, rollout, w.HostID, w.ProbeName, w.ControlID, w.Framework, got.Observed}, got, "%s row %d", profile, k)
			}
			require.NoError(t, rawRebuild(ctx, filled))
			sameRows(t, fromGo, failureRows(t, filled.db), profile+": raw rebuild")

			// append-batch: the same two batches through AppendBatch and
			// through COPY (prepared INSERTs) plus the set-based derive.
			ours, theirs, err := r.freshPair(ctx)
			require.NoError(t, err)
			for first := 0; first < 2*batch; first += batch {
				entries := make([]eventlog.Entry, batch)
				for j := range entries {
					entries[j] = r.mix.entry(first+j, "")
				}
				_, err := ours.log.AppendBatch(ctx, entries)
				require.NoError(t, err)
				require.NoError(t, rawAppendBatch(ctx, theirs, entries))
			}
			oursRows := failureRows(t, ours.db)
			require.NotEmpty(t, oursRows)
			sameRows(t, oursRows, failureRows(t, theirs.db), profile+": append-batch")
			for _, db := range []*sqlx.DB{ours.db, theirs.db} {
				var payloads [][]byte
				require.NoError(t, db.Select(&payloads, `SELECT payload FROM event_log ORDER BY seq`))
				require.Len(t, payloads, 2*batch)
				for i, p := range payloads {
					require.True(t, bytes.Equal(r.mix.entry(i, "").Payload, p), "%s: payload of event %d changed: %s", profile, i, p)
				}
			}

			if profile != fleetgen.Realistic {
				continue
			}
			// The rows compared cover what makes the derivation hard.
			var fromTS, noRollout int
			require.NoError(t, filled.db.Get(&fromTS, `SELECT COUNT(*) FROM probe_failures p JOIN event_log e ON e.seq = p.event_log_seq WHERE p.observed_at = e.ts`))
			require.NoError(t, filled.db.Get(&noRollout, `SELECT COUNT(*) FROM probe_failures WHERE rollout_id IS NULL`))
			require.Positive(t, fromTS, "rows whose observed_at is the event's ts")
			require.Positive(t, noRollout, "rows outside any rollout")
			probes := map[string]bool{}
			for _, row := range fromGo {
				probes[row.Probe] = true
			}
			require.True(t, probes[`registry:HKLM\SOFTWARE\Policies\Microsoft\Windows Defender`], "backslashes")
			require.True(t, probes[`osquery:SELECT name FROM users WHERE shell = "/bin/sh"`], "quotes")
			require.True(t, probes["durcissement-système"], "non-ASCII")
			var escaped, offset int
			q := filled.db.Rebind(`SELECT COUNT(*) FROM probe_failures p JOIN event_log e ON e.seq = p.event_log_seq WHERE CAST(e.payload AS TEXT) LIKE ? ESCAPE '!'`)
			require.NoError(t, filled.db.Get(&escaped, q, `%syst\u00e8me%`))
			require.NoError(t, filled.db.Get(&offset, q, `%"observed_at":"%+05:30"%`))
			require.Positive(t, escaped, "a probe name spelled with \\u escapes")
			require.Positive(t, offset, "observed_at with a zone offset")
		}
	})
}
