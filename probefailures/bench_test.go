package probefailures_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// benchEvents is the log size for the rebuild benchmark:
// CANONLOG_BENCH_EVENTS, default 100,000.
func benchEvents(b *testing.B) int {
	n := 100000
	if s := os.Getenv("CANONLOG_BENCH_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("CANONLOG_BENCH_EVENTS=%q: want a positive integer", s)
		}
	}
	return n
}

// fillProbeEvents appends n agent events in SQL: a third are failing
// enforce-mode probe results with three failing sub-results each, the rest
// passing ones, across 40 rollouts and 2,000 hosts.
func fillProbeEvents(tb testing.TB, db *sqlx.DB, n int) {
	tb.Helper()
	_, err := db.Exec(`INSERT INTO event_log (ts, kind, host_id, rollout_id, payload)
SELECT '2026-05-16T00:00:00Z'::timestamptz + i * interval '1 second', 'agent_event',
       'host-' || (i % 2000), 'rollout-' || (i % 40),
       json_build_object('type', 'ProbeResult', 'mode', 'enforce',
                         'status', CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END,
                         'probe_name', 'probe-' || (i % 7),
                         'observed_at', to_char(timestamptz '2026-05-16T00:00:00Z' + i * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                         'sub_results', json_build_array(
                             json_build_object('control_id', 'C-' || (i % 50), 'framework', 'cis', 'status', CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END),
                             json_build_object('control_id', 'C-' || (i % 50 + 1), 'framework', 'cis', 'status', CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END),
                             json_build_object('control_id', 'N-' || (i % 20), 'framework', 'nist', 'status', CASE WHEN i % 3 = 0 THEN 'fail' ELSE 'pass' END)))
FROM generate_series(1, $1) AS i`, n)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := db.Exec(`VACUUM ANALYZE event_log`); err != nil {
		tb.Fatal(err)
	}
}

// setBasedRebuild is the hand-written baseline: reset and derive every row
// in one INSERT … SELECT with the JSON expanded in SQL.
const setBasedRebuild = `INSERT INTO probe_failures (event_log_seq, rollout_id, host_id, probe_name, control_id, framework, observed_at)
SELECT e.seq, e.rollout_id, e.host_id, e.payload->>'probe_name', s->>'control_id', s->>'framework',
       COALESCE((e.payload->>'observed_at')::timestamptz, e.ts)
FROM event_log e CROSS JOIN LATERAL json_array_elements(e.payload->'sub_results') AS s
WHERE e.kind = 'agent_event' AND e.payload->>'type' = 'ProbeResult'
  AND e.payload->>'mode' = 'enforce' AND e.payload->>'status' = 'fail' AND s->>'status' = 'fail'`

// BenchmarkRebuildVsSQL rebuilds probe_failures with canonlog and with the
// set-based SQL baseline, alternately, and reports the median rate of each
// and their ratio.
func BenchmarkRebuildVsSQL(b *testing.B) {
	ctx := context.Background()
	n := benchEvents(b)
	log, reg, db := setupOn(b, dbtest.New(b, "postgres"))
	fillProbeEvents(b, db, n)
	var ours, sql []float64
	for b.Loop() {
		start := time.Now()
		if _, err := projection.Rebuild(ctx, log, reg, nil); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, float64(n)/time.Since(start).Seconds())

		start = time.Now()
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(`DELETE FROM probe_failures`); err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(setBasedRebuild); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		sql = append(sql, float64(n)/time.Since(start).Seconds())
	}
	b.ReportMetric(median(ours), "canonlog-events/s")
	b.ReportMetric(median(sql), "sql-events/s")
	b.ReportMetric(median(ours)/median(sql), "ratio")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// probeBatch returns 1,000 agent events like fillProbeEvents's, numbered
// from base: a third failing enforce results with three failing controls.
func probeBatch(base int) []eventlog.Entry {
	out := make([]eventlog.Entry, 1000)
	for j := range out {
		i := base + j
		status := "pass"
		if i%3 == 0 {
			status = "fail"
		}
		out[j] = eventlog.Entry{
			Kind: eventlog.KindAgentEvent, TS: time.Date(2026, 5, 16, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
			HostID: fmt.Sprint("host-", i%2000), RolloutID: fmt.Sprint("rollout-", i%40),
			Payload: json.RawMessage(fmt.Sprintf(`{"type":"ProbeResult","mode":"enforce","status":%q,"probe_name":"probe-%d","observed_at":"2026-05-16T01:00:00Z","sub_results":[`+
				`{"control_id":"C-%d","framework":"cis","status":%q},{"control_id":"C-%d","framework":"cis","status":%q},{"control_id":"N-%d","framework":"nist","status":%q}]}`,
				status, i%7, i%50, status, i%50+1, status, i%20, status)),
		}
	}
	return out
}

// setBasedDerive derives the rows of the events after seq $1, as the raw
// baseline of BenchmarkAppendBatchVsCopy does after its COPY.
const setBasedDerive = `INSERT INTO probe_failures (event_log_seq, rollout_id, host_id, probe_name, control_id, framework, observed_at)
SELECT e.seq, e.rollout_id, e.host_id, e.payload->>'probe_name', s->>'control_id', s->>'framework',
       COALESCE((e.payload->>'observed_at')::timestamptz, e.ts)
FROM event_log e CROSS JOIN LATERAL json_array_elements(e.payload->'sub_results') AS s
WHERE e.seq > $1 AND e.kind = 'agent_event' AND e.payload->>'type' = 'ProbeResult'
  AND e.payload->>'mode' = 'enforce' AND e.payload->>'status' = 'fail' AND s->>'status' = 'fail'`

// BenchmarkAppendBatchVsCopy appends batches of 1,000 probe results with
// probe_failures applied inline, alternately through AppendBatch and by
// hand — COPY of the events, then a set-based insert of their rows, in one
// transaction — and reports the median rate of each and the ratio.
func BenchmarkAppendBatchVsCopy(b *testing.B) {
	ctx := context.Background()
	log, _, db := setupOn(b, dbtest.New(b, "postgres"))
	var ours, raw []float64
	base := 0
	for b.Loop() {
		batch := probeBatch(base)
		base += len(batch)
		start := time.Now()
		if _, err := log.AppendBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, float64(len(batch))/time.Since(start).Seconds())

		batch = probeBatch(base)
		base += len(batch)
		start = time.Now()
		if err := copyBatch(ctx, db, batch); err != nil {
			b.Fatal(err)
		}
		raw = append(raw, float64(len(batch))/time.Since(start).Seconds())
	}
	b.ReportMetric(median(ours), "canonlog-events/s")
	b.ReportMetric(median(raw), "copy-events/s")
	b.ReportMetric(median(ours)/median(raw), "ratio")
}

func copyBatch(ctx context.Context, db *sqlx.DB, batch []eventlog.Entry) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var last int64
	if err := tx.GetContext(ctx, &last, `SELECT COALESCE(MAX(seq), 0) FROM event_log`); err != nil {
		return err
	}
	stmt, err := tx.PrepareContext(ctx, `COPY event_log (ts, kind, host_id, rollout_id, payload) FROM STDIN`)
	if err != nil {
		return err
	}
	for _, e := range batch {
		if _, err := stmt.ExecContext(ctx, e.TS, string(e.Kind), e.HostID, e.RolloutID, string(e.Payload)); err != nil {
			return err
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return err
	}
	if err := stmt.Close(); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, setBasedDerive, last); err != nil {
		return err
	}
	return tx.Commit()
}
