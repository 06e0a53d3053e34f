package eventlog

import (
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/internal/dialect"
	"github.com/canonlog/canonlog/internal/pglock"
)

// eventColumns is the column list every read selects, in scanEvent's order.
const eventColumns = `seq, ts, kind, host_id, rollout_id, payload, event_id`

// queries holds the SQL that differs between dialects, already rebound to
// the dialect's placeholders.
type queries struct {
	insertOne   string // one entry; returns seq, or no row for a duplicate
	insertBatch string // PostgreSQL only: a whole batch in one statement, skipping duplicates
	allocSeqs   string // PostgreSQL only: n seqs for a COPY, taking the hook's locks
	lastSeq     string
	get         string
	serialize   string // takes the log-wide append lock; "" when not needed
}

func queriesFor(db *sqlx.DB, d dialect.Dialect) queries {
	q := queries{
		insertOne: db.Rebind(`INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
VALUES (?, ?, NULLIF(?, ''), NULLIF(?, ''), ?, NULLIF(?, ''))
ON CONFLICT (event_id) DO NOTHING
RETURNING seq`),
		lastSeq: `SELECT COALESCE(MAX(seq), 0) FROM event_log`,
		get:     db.Rebind(`SELECT ` + eventColumns + ` FROM event_log WHERE seq = ?`),
	}
	if d == dialect.Postgres {
		// The seqs for a COPY: nextval n times, sorted (they are unique, so
		// sorting gives them out in the entries' order), and the hook's
		// shared locks, taken once.
		q.allocSeqs = `SELECT s.seq FROM (SELECT nextval('event_log_seq_seq'::regclass) AS seq FROM generate_series(1, $1::int)) AS s
CROSS JOIN (SELECT count(pg_advisory_xact_lock_shared(` + pglock.KeyExpr("l.name") + `)) AS taken FROM unnest($2::text[]) AS l(name)) AS locks
ORDER BY s.seq`
		// The batch when COPY met a taken event id: six parallel arrays.
		// nextval runs in the arrays' order, so seqs increase with the
		// entries' positions, and the INSERT takes rows in seq order, so of
		// two entries sharing an event id the earlier one lands. Returning
		// every input seq with an inserted flag maps results back without
		// trusting RETURNING order. $7 names the shared advisory locks the
		// hook needs (see LockingHook), taken once for the whole batch.
		q.insertBatch = `WITH input AS MATERIALIZED (
	SELECT nextval('event_log_seq_seq'::regclass) AS seq, u.ord, u.ts, u.kind,
	       NULLIF(u.host_id, '') AS host_id, NULLIF(u.rollout_id, '') AS rollout_id,
	       u.payload, NULLIF(u.event_id, '') AS event_id
	FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
	     WITH ORDINALITY AS u(ts, kind, host_id, rollout_id, payload, event_id, ord)
), locks AS MATERIALIZED (
	SELECT count(pg_advisory_xact_lock_shared(` + pglock.KeyExpr("l.name") + `)) AS taken
	FROM unnest($7::text[]) AS l(name)
), ins AS (
	INSERT INTO event_log (seq, ts, kind, host_id, rollout_id, payload, event_id) OVERRIDING SYSTEM VALUE
	SELECT seq, ts, kind, host_id, rollout_id, payload::json, event_id FROM input ORDER BY seq
	ON CONFLICT (event_id) DO NOTHING
	RETURNING seq
)
SELECT input.seq, ins.seq IS NOT NULL FROM input LEFT JOIN ins USING (seq) CROSS JOIN locks ORDER BY input.ord`
		// Per schema, so logs in different schemas of one database do not
		// serialize each other.
		q.serialize = `SELECT pg_advisory_xact_lock(hashtextextended('canonlog:serialize:' || current_schema(), 0))`
	}
	return q
}

// insertOneLocked returns insertOne taking n shared advisory locks, named
// by parameters $7…, in its RETURNING clause: they cost no extra round trip,
// and are taken only when the entry is actually inserted (a duplicate runs
// no hook, so needs no lock). PostgreSQL only.
func (q queries) insertOneLocked(n int) string {
	if n == 0 {
		return q.insertOne
	}
	cols := make([]string, n)
	for i := range cols {
		cols[i] = fmt.Sprintf("pg_advisory_xact_lock_shared(%s) IS NULL", pglock.KeyExpr(fmt.Sprintf("$%d::text", 7+i)))
	}
	return strings.TrimSuffix(q.insertOne, "RETURNING seq") + "RETURNING seq, " + strings.Join(cols, ", ")
}
