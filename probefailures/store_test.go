package probefailures_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

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
			func() error { _, err := store.FailingHosts(ctx, "r1", ""); return err }(),
			func() error { _, err := store.CountFailingHosts(ctx, ""); return err }(),
			func() error { _, err := store.Summary(ctx, ""); return err }(),
		} {
			require.ErrorIs(t, err, probefailures.ErrInvalidQuery)
		}
	})
}

// Every gate query reads the (rollout_id, host_id, control_id) index, never
// the whole table, over 100k+ rows derived by a real rebuild.
func TestExplainGateQueries(t *testing.T) {
	t.Parallel()
	b := dbtest.New(t, "postgres")
	ctx := context.Background()
	_, _, db := setupOn(t, b)
	// 120k agent events: a third enforce failures with three failing
	// controls; 40 rollouts, 2,000 hosts.
	_, err := db.ExecContext(ctx, `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload)
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
	_, err = db.ExecContext(ctx, `ANALYZE probe_failures`)
	require.NoError(t, err)

	plans := map[string]struct {
		query string
		args  []any
	}{
		"failures":          {`SELECT * FROM probe_failures WHERE rollout_id = $1 ORDER BY host_id, control_id, event_log_seq, framework LIMIT 100`, []any{"rollout-3"}},
		"failures_by_host":  {`SELECT * FROM probe_failures WHERE rollout_id = $1 AND host_id = $2 ORDER BY host_id, control_id, event_log_seq, framework LIMIT 100`, []any{"rollout-3", "host-3"}},
		"failures_after":    {`SELECT * FROM probe_failures WHERE rollout_id = $1 AND (host_id, control_id, event_log_seq, framework) > ($2, $3, $4, $5) ORDER BY host_id, control_id, event_log_seq, framework LIMIT 100`, []any{"rollout-3", "host-1003", "C-0", int64(0), "cis"}},
		"failing_hosts":     {`SELECT DISTINCT host_id FROM probe_failures WHERE rollout_id = $1 AND control_id = $2 ORDER BY host_id`, []any{"rollout-3", "C-3"}},
		"count_hosts":       {`SELECT COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = $1`, []any{"rollout-3"}},
		"summary":           {`SELECT control_id, framework, COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = $1 GROUP BY control_id, framework ORDER BY control_id, framework`, []any{"rollout-3"}},
		"failures_by_fwork": {`SELECT * FROM probe_failures WHERE rollout_id = $1 AND control_id = $2 AND framework = $3 ORDER BY host_id, control_id, event_log_seq, framework LIMIT 100`, []any{"rollout-3", "C-3", "cis"}},
	}
	for name, p := range plans {
		var plan []byte
		require.NoError(t, db.QueryRowxContext(ctx, `EXPLAIN (FORMAT JSON) `+p.query, p.args...).Scan(&plan))
		text := string(plan)
		require.Contains(t, text, "probe_failures_rollout_host_control_idx", "%s: %s", name, text)
		require.NotContains(t, text, `"Seq Scan"`, "%s: %s", name, text)
		var decoded any
		require.NoError(t, json.Unmarshal(plan, &decoded))
	}
	// The queries checked above are the store's own: same results.
	store := probefailures.NewStore(db)
	hosts, err := store.FailingHosts(ctx, "rollout-3", "C-3")
	require.NoError(t, err)
	require.NotEmpty(t, hosts)
	n, err := store.CountFailingHosts(ctx, "rollout-3")
	require.NoError(t, err)
	require.Positive(t, n)
}
