package bench

import "github.com/canonlog/canonlog/eventlog"

// Set-based derivation of probe_failures, the rules of
// probefailures.Rows in SQL: enforce-mode failing probe results, one row
// per failing sub-result, observed_at from the payload else ts.
const (
	deriveRowsPostgres = `INSERT INTO probe_failures (event_log_seq, rollout_id, host_id, probe_name, control_id, framework, observed_at)
SELECT e.seq, e.rollout_id, e.host_id, e.payload->>'probe_name', s->>'control_id', s->>'framework',
       COALESCE((e.payload->>'observed_at')::timestamptz, e.ts)
FROM event_log e CROSS JOIN LATERAL json_array_elements(e.payload->'sub_results') AS s
WHERE e.seq > $1 AND e.kind = 'agent_event' AND e.payload->>'type' = 'ProbeResult'
  AND e.payload->>'mode' = 'enforce' AND e.payload->>'status' = 'fail' AND s->>'status' = 'fail'`
	// observed_at is rewritten into the schema's fixed-width UTC text:
	// strftime applies a zone offset and keeps milliseconds (%f), all the
	// precision the generated payloads carry.
	deriveRowsSQLite = `INSERT INTO probe_failures (event_log_seq, rollout_id, host_id, probe_name, control_id, framework, observed_at)
SELECT e.seq, e.rollout_id, e.host_id, json_extract(e.payload, '$.probe_name'), json_extract(s.value, '$.control_id'),
       json_extract(s.value, '$.framework'),
       COALESCE(strftime('%Y-%m-%dT%H:%M:%f', json_extract(e.payload, '$.observed_at')) || '000Z', e.ts)
FROM event_log e, json_each(e.payload, '$.sub_results') AS s
WHERE e.seq > ? AND e.kind = 'agent_event' AND json_extract(e.payload, '$.type') = 'ProbeResult'
  AND json_extract(e.payload, '$.mode') = 'enforce' AND json_extract(e.payload, '$.status') = 'fail'
  AND json_extract(s.value, '$.status') = 'fail'`
)

func deriveRows(d eventlog.Backend) string {
	if d == eventlog.SQLite {
		return deriveRowsSQLite
	}
	return deriveRowsPostgres
}
