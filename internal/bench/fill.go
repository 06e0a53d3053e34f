package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/projection"
)

// fill returns the shared log of the read, rebuild and query scenarios:
// N agent events inserted in SQL (a third failing enforce results with
// three failing controls, 40 rollouts, 2,000 hosts, as probefailures'
// benchmarks), probe_failures derived by one untimed rebuild, statistics
// fresh and the WAL checkpointed. Reads change nothing and the rebuilds
// of both sides leave the same rows, so the sides share it.
//
// The events are like probeEntry's, which the write scenarios append, and
// like those of probefailures' benchmarks, so that the figures compare. rebuildmem
// fills its log with other events on purpose (other kinds beside agent
// events, event ids, padded payloads): it measures a rebuild's memory and
// its kind filter, not a ratio against this log.
func (r *run) fill(ctx context.Context) (*benchDB, error) {
	if r.filled != nil {
		return r.filled, nil
	}
	b, err := r.fresh(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	query, post := fillPostgresSQL, []string{`VACUUM (ANALYZE) event_log`, `CHECKPOINT`}
	if b.d == eventlog.SQLite {
		query, post = fillSQLiteSQL, []string{`ANALYZE`, `PRAGMA wal_checkpoint(TRUNCATE)`}
	}
	const chunk = 100000
	for first := 1; first <= r.cfg.Events; first += chunk {
		if _, err := b.db.ExecContext(ctx, b.db.Rebind(query), first, min(first+chunk-1, r.cfg.Events)); err != nil {
			return nil, fmt.Errorf("fill: %w", err)
		}
	}
	if _, err := projection.Rebuild(ctx, b.log, b.reg, nil); err != nil {
		return nil, err
	}
	for _, q := range post {
		if _, err := b.db.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	fmt.Fprintf(r.cfg.Progress, "bench: filled %d events in %s\n", r.cfg.Events, time.Since(start).Round(time.Millisecond))
	r.filled = b
	return b, nil
}

const fillPostgresSQL = `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload)
SELECT timestamptz '2026-05-16T00:00:00Z' + i * interval '1 second', 'agent_event',
       'host-' || (i % 2000), 'rollout-' || (i % 40),
       json_build_object('type', 'ProbeResult', 'mode', 'enforce', 'status', st,
                         'probe_name', 'probe-' || (i % 7),
                         'observed_at', to_char(timestamptz '2026-05-16T00:00:00Z' + i * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                         'sub_results', json_build_array(
                             json_build_object('control_id', 'C-' || (i % 50), 'framework', 'cis', 'status', st),
                             json_build_object('control_id', 'C-' || (i % 50 + 1), 'framework', 'cis', 'status', st),
                             json_build_object('control_id', 'N-' || (i % 20), 'framework', 'nist', 'status', st)))
FROM (SELECT i, CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END AS st
      FROM generate_series($1::bigint, $2::bigint) AS i) AS g`

const fillSQLiteSQL = `WITH RECURSIVE s(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i < ?)
INSERT INTO event_log (ts, kind, host_id, rollout_id, payload)
SELECT strftime('%Y-%m-%dT%H:%M:%S', 1778889600 + i, 'unixepoch') || '.000000Z', 'agent_event',
       'host-' || (i % 2000), 'rollout-' || (i % 40),
       printf('{"type":"ProbeResult","mode":"enforce","status":"%s","probe_name":"probe-%d","observed_at":"%s","sub_results":[{"control_id":"C-%d","framework":"cis","status":"%s"},{"control_id":"C-%d","framework":"cis","status":"%s"},{"control_id":"N-%d","framework":"nist","status":"%s"}]}',
              st, i % 7, strftime('%Y-%m-%dT%H:%M:%SZ', 1778889600 + i, 'unixepoch'), i % 50, st, i % 50 + 1, st, i % 20, st)
FROM (SELECT i, CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END AS st FROM s)`
