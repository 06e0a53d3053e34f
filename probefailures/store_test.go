package probefailures_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/probefailures"
)

func failing(probeName string, controls ...string) string {
	var subs []string
	for _, c := range controls {
		fw, id, _ := strings.Cut(c, ":")
		subs = append(subs, fmt.Sprintf(`{"control_id":%q,"framework":%q,"status":"fail"}`, id, fw))
	}
	return fmt.Sprintf(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":%q,"sub_results":[%s]}`, probeName, strings.Join(subs, ","))
}

func TestStore(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _, db := setup(t, backend)
		store := probefailures.NewStore(db)
		_, err := log.AppendBatch(ctx, []eventlog.Entry{
			probe("web-2", "r1", failing("ssh", "cis:C1", "cis:C2")),
			probe("web-1", "r1", failing("ssh", "cis:C2")),
			probe("web-1", "r1", failing("fw", "nist:C2", "nist:N9")),
			probe("web-3", "r1", failing("ssh", "cis:C1")),
			probe("web-1", "r2", failing("ssh", "cis:C1")),
		})
		require.NoError(t, err)

		all, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: "r1"})
		require.NoError(t, err)
		var keys []string
		for _, r := range all {
			keys = append(keys, fmt.Sprintf("%s/%s/%s/%d", r.HostID, r.ControlID, r.Framework, r.Seq))
		}
		require.Equal(t, []string{
			"web-1/C2/cis/2", "web-1/C2/nist/3", "web-1/N9/nist/3",
			"web-2/C1/cis/1", "web-2/C2/cis/1", "web-3/C1/cis/4",
		}, keys)

		// Paging with After visits every row once, in order.
		var paged []probefailures.Row
		f := probefailures.FailureFilter{RolloutID: "r1", Limit: 4}
		for {
			page, err := store.Failures(ctx, f)
			require.NoError(t, err)
			paged = append(paged, page...)
			if len(page) < f.Limit {
				break
			}
			f.After = &page[len(page)-1]
		}
		require.Equal(t, all, paged)

		byHost, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: "r1", HostID: "web-1"})
		require.NoError(t, err)
		require.Len(t, byHost, 3)
		byControl, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: "r1", ControlID: "C2", Framework: "cis"})
		require.NoError(t, err)
		require.Len(t, byControl, 2)

		hosts, err := store.FailingHosts(ctx, "r1", "C1")
		require.NoError(t, err)
		require.Equal(t, []string{"web-2", "web-3"}, hosts)
		hosts, err = store.FailingHosts(ctx, "r9", "C1")
		require.NoError(t, err)
		require.Empty(t, hosts)

		n, err := store.CountFailingHosts(ctx, "r1")
		require.NoError(t, err)
		require.Equal(t, 3, n)

		sum, err := store.Summary(ctx, "r1")
		require.NoError(t, err)
		require.Equal(t, []probefailures.ControlSummary{
			{ControlID: "C1", Framework: "cis", FailingHosts: 2},
			{ControlID: "C2", Framework: "cis", FailingHosts: 2},
			{ControlID: "C2", Framework: "nist", FailingHosts: 1},
			{ControlID: "N9", Framework: "nist", FailingHosts: 1},
		}, sum)

		for _, err := range []error{
			func() error { _, err := store.Failures(ctx, probefailures.FailureFilter{}); return err }(),
			func() error {
				_, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: "r1", Limit: -1})
				return err
			}(),
			func() error {
				_, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: "r1", Limit: probefailures.MaxLimit + 1})
				return err
			}(),
			func() error {
				_, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: "r1\x00"})
				return err
			}(),
			func() error {
				_, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: "r1", HostID: "web-1", After: &probefailures.Row{HostID: "web\x00"}})
				return err
			}(),
			func() error { _, err := store.FailingHosts(ctx, "r1", ""); return err }(),
			func() error { _, err := store.CountFailingHosts(ctx, ""); return err }(),
			func() error { _, err := store.Summary(ctx, ""); return err }(),
			func() error { _, err := store.FailingHosts(ctx, "r1\x00", "C1"); return err }(),
			func() error { _, err := store.FailingHosts(ctx, "r1", "C1\x00"); return err }(),
			func() error { _, err := store.CountFailingHosts(ctx, "r1\x00"); return err }(),
			func() error { _, err := store.Summary(ctx, "r1\x00"); return err }(),
		} {
			require.ErrorIs(t, err, probefailures.ErrInvalidQuery)
		}
	})
}

// Every gate query reads the page index, never the whole table, over
// 120k rows, with and without planner statistics; the failure listings
// are planned as the store runs them, and walk the index without a sort.
func TestExplainGateQueries(t *testing.T) {
	t.Parallel()
	for _, analyzed := range []bool{true, false} {
		t.Run(map[bool]string{true: "analyzed", false: "never_analyzed"}[analyzed], func(t *testing.T) {
			t.Parallel()
			explainGateQueries(t, analyzed)
		})
	}
}

func explainGateQueries(t *testing.T, analyze bool) {
	b := dbtest.New(t, "postgres")
	ctx := context.Background()
	_, _, db := setupOn(t, b)
	_, err := db.ExecContext(ctx, `ALTER TABLE probe_failures SET (autovacuum_enabled = false);
ALTER TABLE event_log SET (autovacuum_enabled = false)`)
	require.NoError(t, err)
	// 120k agent events: a third enforce failures with three failing
	// controls; 40 rollouts, 2,000 hosts.
	_, err = db.ExecContext(ctx, `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload)
SELECT '2026-05-16T00:00:00Z'::timestamptz + i * interval '1 second', 'agent_event',
       'host-' || (i % 2000), 'rollout-' || (i % 40),
       json_build_object('type', 'ProbeResult', 'mode', 'enforce',
                         'status', CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END,
                         'probe_name', 'probe-' || (i % 7),
                         'sub_results', json_build_array(
                             json_build_object('control_id', 'C-' || (i % 50), 'framework', 'cis', 'status', CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END),
                             json_build_object('control_id', 'C-' || (i % 50 + 1), 'framework', 'cis', 'status', CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END),
                             json_build_object('control_id', 'N-' || (i % 20), 'framework', 'nist', 'status', CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END)))
FROM generate_series(1, 120000) AS i`)
	require.NoError(t, err)
	// The rows come from the set-based derivation: the plans are the point
	// here, and decoding 120k events in Go under the race detector would
	// cost most of the suite's time. Rebuild equivalence has its own tests.
	derived, err := db.ExecContext(ctx, setBasedDerive, 0)
	require.NoError(t, err)
	rows, err := derived.RowsAffected()
	require.NoError(t, err)
	require.EqualValues(t, 120000, rows)
	if analyze {
		_, err = db.ExecContext(ctx, `ANALYZE probe_failures`)
		require.NoError(t, err)
	}
	var analyzed bool
	require.NoError(t, db.GetContext(ctx, &analyzed, `SELECT EXISTS (SELECT 1 FROM pg_stats
WHERE schemaname = current_schema() AND tablename = 'probe_failures')`))
	require.Equal(t, analyze, analyzed, "probe_failures has statistics")

	store := probefailures.NewStore(db)
	after := &probefailures.Row{HostID: "host-1003", ControlID: "C-0", Framework: "cis"}
	for name, f := range map[string]probefailures.FailureFilter{
		"failures":          {RolloutID: "rollout-3"},
		"failures_max":      {RolloutID: "rollout-3", Limit: probefailures.MaxLimit},
		"failures_by_host":  {RolloutID: "rollout-3", HostID: "host-3"},
		"failures_after":    {RolloutID: "rollout-3", After: after},
		"failures_by_fwork": {RolloutID: "rollout-3", ControlID: "C-3", Framework: "cis", Limit: probefailures.MaxLimit},
	} {
		query, args, err := probefailures.FailuresQuery(store, f)
		require.NoError(t, err)
		plan := explainPage(t, db, "postgres", query, args)
		require.Contains(t, plan, "probe_failures_rollout_page_idx", "%s: %s", name, plan)
		for _, bad := range []string{"Sort", "Bitmap", "Seq Scan"} {
			require.NotContains(t, plan, bad, "%s: %s", name, plan)
		}
	}
	plans := map[string]struct {
		query string
		args  []any
	}{
		"failing_hosts": {`SELECT DISTINCT host_id FROM probe_failures WHERE rollout_id = $1 AND control_id = $2 ORDER BY host_id`, []any{"rollout-3", "C-3"}},
		"count_hosts":   {`SELECT COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = $1`, []any{"rollout-3"}},
		"summary":       {`SELECT control_id, framework, COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = $1 GROUP BY control_id, framework ORDER BY control_id, framework`, []any{"rollout-3"}},
	}
	for name, p := range plans {
		var plan []byte
		require.NoError(t, db.QueryRowxContext(ctx, `EXPLAIN (FORMAT JSON) `+p.query, p.args...).Scan(&plan))
		text := string(plan)
		require.Contains(t, text, "probe_failures_rollout_page_idx", "%s: %s", name, text)
		require.NotContains(t, text, `"Seq Scan"`, "%s: %s", name, text)
		var decoded any
		require.NoError(t, json.Unmarshal(plan, &decoded))
	}
	// The queries checked above are the store's own: same results.
	hosts, err := store.FailingHosts(ctx, "rollout-3", "C-3")
	require.NoError(t, err)
	require.NotEmpty(t, hosts)
	n, err := store.CountFailingHosts(ctx, "rollout-3")
	require.NoError(t, err)
	require.Positive(t, n)
	page, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: "rollout-3", After: after})
	require.NoError(t, err)
	require.Len(t, page, probefailures.DefaultLimit)
}

// Listing a rollout page by page reads each row once, on tables that were
// never analyzed: a page's plan does not depend on statistics. Left to
// the planner, such a table's pages were each a bitmap scan of the rest of
// the rollout and a sort, which made a listing quadratic in its size.
func TestFailuresPagesWithoutStatistics(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		b := dbtest.New(t, backend)
		log, _, db := setupOn(t, b)
		if backend == "postgres" {
			_, err := db.ExecContext(ctx, `ALTER TABLE probe_failures SET (autovacuum_enabled = false);
ALTER TABLE event_log SET (autovacuum_enabled = false)`)
			require.NoError(t, err)
		}
		// 4,000 failing probe results in one rollout, five failing
		// controls each: 20,000 rows over 400 hosts.
		const events, perEvent = 4000, 5
		for base := 0; base < events; base += 1000 {
			batch := make([]eventlog.Entry, 1000)
			for i := range batch {
				n := base + i
				controls := make([]string, perEvent)
				for c := range controls {
					controls[c] = fmt.Sprintf("cis:C-%02d", (n+c*7)%50)
				}
				batch[i] = probe(fmt.Sprintf("host-%03d", n%400), "r1", failing("ssh", controls...))
			}
			_, err := log.AppendBatch(ctx, batch)
			require.NoError(t, err)
		}
		const total = events * perEvent

		// The pages' plans, on the tables as they are.
		one := b.Open(t)
		one.SetMaxOpenConns(1)
		store := probefailures.NewStore(one)
		after := &probefailures.Row{HostID: "host-100", ControlID: "C-07", Seq: 1, Framework: "cis"}
		for name, f := range map[string]probefailures.FailureFilter{
			"first":           {RolloutID: "r1", Limit: probefailures.MaxLimit},
			"after":           {RolloutID: "r1", After: after, Limit: probefailures.MaxLimit},
			"host_after":      {RolloutID: "r1", HostID: "host-100", After: after, Limit: probefailures.MaxLimit},
			"control_after":   {RolloutID: "r1", ControlID: "C-07", Framework: "cis", After: after, Limit: probefailures.MaxLimit},
			"default_limit":   {RolloutID: "r1"},
			"framework_after": {RolloutID: "r1", Framework: "cis", After: after, Limit: 1000},
		} {
			query, args, err := probefailures.FailuresQuery(store, f)
			require.NoError(t, err)
			plan := explainPage(t, one, backend, query, args)
			require.Contains(t, plan, "probe_failures_rollout_page_idx", "%s: %s", name, plan)
			for _, bad := range []string{"Sort", "Bitmap", "Seq Scan", "TEMP B-TREE", "SCAN probe_failures"} {
				require.NotContains(t, plan, bad, "%s: %s", name, plan)
			}
		}

		// The store's own reads, counted by the server.
		fetched := func() int64 {
			if backend != "postgres" {
				return 0
			}
			_, err := one.ExecContext(ctx, `SELECT pg_stat_force_next_flush()`)
			require.NoError(t, err)
			var n int64
			require.NoError(t, one.GetContext(ctx, &n, `SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)
FROM pg_stat_user_tables WHERE relid = 'probe_failures'::regclass`))
			return n
		}
		walk := func(f probefailures.FailureFilter) []probefailures.Row {
			var all []probefailures.Row
			for {
				page, err := store.Failures(ctx, f)
				require.NoError(t, err)
				all = append(all, page...)
				if len(page) < f.Limit {
					return all
				}
				f.After = &page[len(page)-1]
			}
		}
		start := fetched()
		all := walk(probefailures.FailureFilter{RolloutID: "r1", Limit: 500})
		read := fetched() - start
		require.Len(t, all, total)
		var want []string
		require.NoError(t, one.SelectContext(ctx, &want, `SELECT host_id || '/' || control_id || '/' || event_log_seq || '/' || framework
FROM probe_failures ORDER BY host_id, control_id, event_log_seq, framework`))
		got := make([]string, len(all))
		for i, r := range all {
			got[i] = fmt.Sprintf("%s/%s/%d/%s", r.HostID, r.ControlID, r.Seq, r.Framework)
		}
		require.Equal(t, want, got, "every row once, in order")
		if backend == "postgres" {
			// 40 pages; a quadratic walk reads about 20 times the rows.
			require.LessOrEqual(t, read, int64(total+total/10), "rows read to list %d rows in pages of 500", total)
			var analyzed bool
			require.NoError(t, one.GetContext(ctx, &analyzed, `SELECT EXISTS (SELECT 1 FROM pg_stats
WHERE schemaname = current_schema() AND tablename IN ('probe_failures', 'event_log'))`))
			require.False(t, analyzed, "the tables have statistics")
		}

		start = fetched()
		control := walk(probefailures.FailureFilter{RolloutID: "r1", ControlID: "C-07", Framework: "cis", Limit: 50})
		read = fetched() - start
		require.Len(t, control, total/50)
		if backend == "postgres" {
			require.LessOrEqual(t, read, int64(len(control)+len(control)/10), "rows read to list one control's %d rows in pages of 50", len(control))
		}
	})
}

// explainPage returns the plan of a Failures page query, run as the store
// runs it on backend.
func explainPage(t *testing.T, db *sqlx.DB, backend, query string, args []any) string {
	t.Helper()
	ctx := context.Background()
	if backend == "sqlite" {
		var details []string
		rows, err := db.QueryxContext(ctx, `EXPLAIN QUERY PLAN `+query, args...)
		require.NoError(t, err)
		defer rows.Close()
		for rows.Next() {
			var id, parent, unused int
			var detail string
			require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
			details = append(details, detail)
		}
		require.NoError(t, rows.Err())
		return strings.Join(details, "\n")
	}
	// The settings, then the page's SELECT, in one query string.
	require.Empty(t, args)
	require.Equal(t, 1, strings.Count(query, "\nSELECT "), query)
	var plan string
	require.NoError(t, db.GetContext(ctx, &plan, strings.Replace(query, "\nSELECT ", "\nEXPLAIN (FORMAT JSON) SELECT ", 1)))
	return plan
}

// A page holds the first rows after its cursor that match its filter, for
// every combination of filters and for cursors taken from the rows, from
// another host or control than the filter's, or from no row at all.
func TestFailuresCursors(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _, db := setup(t, backend)
		var batch []eventlog.Entry
		for n := range 60 {
			batch = append(batch, probe(fmt.Sprintf("h%d", n%4), "r1",
				failing("ssh", fmt.Sprintf("cis:C%d", n%3), fmt.Sprintf("nist:C%d", (n+1)%3))))
		}
		batch = append(batch, probe("h1", "r2", failing("ssh", "cis:C1")))
		_, err := log.AppendBatch(ctx, batch)
		require.NoError(t, err)
		store := probefailures.NewStore(db)
		all, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: "r1", Limit: probefailures.MaxLimit})
		require.NoError(t, err)
		require.Len(t, all, 120)

		key := func(r probefailures.Row) string {
			return fmt.Sprintf("%s\x00%s\x00%020d\x00%s", r.HostID, r.ControlID, r.Seq, r.Framework)
		}
		cursors := []*probefailures.Row{nil,
			{HostID: "h0", ControlID: "C0", Seq: 0, Framework: ""},
			{HostID: "h9", ControlID: "C0", Seq: 0, Framework: "cis"},
			{HostID: "h1", ControlID: "C9", Seq: 1, Framework: "cis"},
			{HostID: "h2", ControlID: "C1", Seq: 30, Framework: "nist"},
			{HostID: "a", ControlID: "Z", Seq: 99, Framework: "z"},
		}
		for i := 0; i < len(all); i += 13 {
			cursors = append(cursors, &all[i])
		}
		filters := []probefailures.FailureFilter{
			{}, {HostID: "h1"}, {HostID: "h1", ControlID: "C2"}, {ControlID: "C2"},
			{Framework: "nist"}, {ControlID: "C1", Framework: "cis"}, {HostID: "h2", Framework: "cis"},
			{HostID: "h3", ControlID: "C0", Framework: "nist"}, {HostID: "h7"},
		}
		for _, f := range filters {
			for _, c := range cursors {
				f := f
				f.RolloutID, f.After, f.Limit = "r1", c, 7
				var want []probefailures.Row
				for _, r := range all {
					if (f.HostID == "" || r.HostID == f.HostID) && (f.ControlID == "" || r.ControlID == f.ControlID) &&
						(f.Framework == "" || r.Framework == f.Framework) && (c == nil || key(r) > key(*c)) && len(want) < f.Limit {
						want = append(want, r)
					}
				}
				got, err := store.Failures(ctx, f)
				require.NoError(t, err)
				if want == nil {
					want = []probefailures.Row{}
				}
				require.Equal(t, want, got, "filter %+v after %+v", f, c)
			}
		}
	})
}

// Values with quotes, backslashes and non-ASCII text reach the page query
// as values, never as SQL: on PostgreSQL they are quoted into it.
func TestFailuresQuoting(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _, db := setup(t, backend)
		const rollout, host, control = `r'1\'; DROP TABLE probe_failures; --`, `o'brien\\n-é`, `C'\1`
		_, err := log.AppendBatch(ctx, []eventlog.Entry{
			probe(host, rollout, failing("ssh", "cis:"+control, "nist:N1")),
			probe(host, rollout, failing("ssh", "cis:"+control)),
			probe("other", rollout, failing("ssh", "cis:"+control)),
		})
		require.NoError(t, err)
		store := probefailures.NewStore(db)
		first, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: rollout, HostID: host, ControlID: control, Framework: "cis", Limit: 1})
		require.NoError(t, err)
		require.Len(t, first, 1)
		require.Equal(t, probefailures.Row{Seq: 1, RolloutID: rollout, HostID: host, ProbeName: "ssh", ControlID: control, Framework: "cis", ObservedAt: first[0].ObservedAt}, first[0])
		next, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: rollout, HostID: host, ControlID: control, After: &first[0]})
		require.NoError(t, err)
		require.Len(t, next, 1)
		require.EqualValues(t, 2, next[0].Seq)
		all, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: rollout})
		require.NoError(t, err)
		require.Len(t, all, 4)
		var n int
		require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM probe_failures`))
		require.Equal(t, 4, n)
	})
}
