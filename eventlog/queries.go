package eventlog

import (
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/internal/pglock"
)

// eventColumns is the column list every read selects, in scanEvent's order.
const eventColumns = `seq, ts, kind, host_id, rollout_id, payload, event_id`

// queries holds the SQL that differs between backends, already rebound to
// the backend's placeholders.
type queries struct {
	insertOne   string // one entry; returns seq, or no row for a duplicate
	insertBatch string // PostgreSQL only: a whole batch in one statement, skipping duplicates
	lockAppend  string // PostgreSQL only: takes the locks named by $1, exclusive where $2 says so, in the order given
	copiedSeqs  string // PostgreSQL only: the last $2 seqs this transaction inserted above $1, highest first
	seqFloor    string // PostgreSQL only: the seq sequence's last value, below every seq drawn after
	lastSeq     string
	get         string
	serialize   string // takes the log-wide append lock; "" when not needed

	// PostgreSQL only, with dimension locks: conditional appends.
	conditionalOne string // one entry with an event id, autocommitted: lock, check, insert
	condition      string // lock and check, in the append's transaction
}

// queriesFor returns the queries of backend b. dimensionLocks says
// whether appends take their dimension locks (see Condition); only a
// benchmark measuring what they cost turns them off.
func queriesFor(db *sqlx.DB, b Backend, dimensionLocks bool) queries {
	q := queries{
		// On SQLite the schema's insert trigger refuses a stored event id
		// before ON CONFLICT is consulted; insert reads that refusal as a
		// duplicate (see storedEventIDRefused).
		insertOne: db.Rebind(`INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
VALUES (?, ?, NULLIF(?, ''), NULLIF(?, ''), ?, NULLIF(?, ''))
ON CONFLICT (event_id) DO NOTHING
RETURNING seq`),
		lastSeq: `SELECT COALESCE(MAX(seq), 0) FROM event_log`,
		get:     db.Rebind(`SELECT ` + eventColumns + ` FROM event_log WHERE seq = ?`),
	}
	if b == Postgres {
		if dimensionLocks {
			// The single-entry insert takes its dimension locks (see
			// Condition) in an uncorrelated subquery of its WHERE clause:
			// PostgreSQL runs it once, as an InitPlan, before the first
			// row is formed, so before the row's seq is drawn. A
			// conditional append that holds one of them exclusively thus
			// sees every matching event that drew a lower seq than its
			// own: that append has committed, or waits for the condition
			// before it draws one. host, kind, rollout is the lock order
			// (by name, bytewise: see takeLocks); concat evaluates every
			// argument in order, and skips the NULL of an absent host or
			// rollout.
			q.insertOne = `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
SELECT $1::timestamptz, $2::text, NULLIF($3::text, ''), NULLIF($4::text, ''), $5::json, NULLIF($6::text, '')
WHERE (SELECT concat(` + dimLockShared("NULLIF($3::text, '')", "host") + `, ` + dimLockShared("$2::text", "kind") + `, ` +
				dimLockShared("NULLIF($4::text, '')", "rollout") + `)) IS NOT NULL
ON CONFLICT (event_id) DO NOTHING
RETURNING seq`
			// A conditional append of one entry with an event id, in one
			// autocommitted statement: canonlog_append_condition
			// (migrations/postgres/00007) takes the locks $7, $8, checks
			// the condition $9… in a snapshot taken after them, and
			// inserts the row only when it found no conflict. Returns the
			// conflict (0 for none) and the new seq (0 for none).
			q.conditionalOne = `SELECT conflict, seq FROM ` + conditionCall(7,
				"$1::timestamptz", "$2::text", "NULLIF($3::text, '')", "NULLIF($4::text, '')", "$5::json", "$6::text")
			// The same check, in an append's transaction before its insert.
			q.condition = `SELECT conflict FROM ` + conditionCall(1, "NULL", "NULL", "NULL", "NULL", "NULL", "NULL")
		}
		// The locks $1 in the order given (takeLocks puts them in lock
		// order), exclusive where $2 says so.
		q.lockAppend = `SELECT count(CASE WHEN l.x THEN pg_advisory_xact_lock(l.k) ELSE pg_advisory_xact_lock_shared(l.k) END)
FROM (SELECT ` + pglock.KeyExpr("u.name") + ` AS k, u.x FROM unnest($1::text[], $2::bool[]) WITH ORDINALITY AS u(name, x, o) ORDER BY u.o) AS l`
		// A COPY cannot return the seqs the database gave its rows: read
		// them back through the (tx_id, seq) index. The transaction's
		// earlier rows (AppendTx may follow other appends in it) drew their
		// seqs earlier, so they are lower: the highest n are the COPY's, in
		// its rows' order. They are also above the sequence's last value
		// read before the COPY ($1, seqFloor): with that bound the read
		// costs the COPY's rows whatever the plan. Without it, a table
		// without statistics got a bitmap scan of every row of the
		// transaction and a sort, per batch: quadratic in a long
		// transaction (append --file of 300,000 events spent 5.2 s here).
		q.copiedSeqs = `SELECT seq FROM event_log WHERE tx_id = pg_current_xact_id() AND seq > $1 ORDER BY seq DESC LIMIT $2`
		q.seqFloor = `SELECT COALESCE(pg_sequence_last_value('event_log_seq_seq'::regclass), 0)`
		// The batch when COPY met a taken event id: six parallel arrays.
		// The INSERT takes the rows in the entries' order and the database
		// draws each row's seq as it inserts it, so seqs increase with the
		// entries' positions, and of two entries sharing an event id the
		// earlier one lands. It returns the inserted rows in seq order;
		// insertBatchOnConflict maps them back to the entries. The batch
		// took the hook's locks before its COPY, and holds them still.
		q.insertBatch = `WITH input AS MATERIALIZED (
	SELECT u.ord, u.ts, u.kind, NULLIF(u.host_id, '') AS host_id, NULLIF(u.rollout_id, '') AS rollout_id,
	       u.payload, NULLIF(u.event_id, '') AS event_id
	FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
	     WITH ORDINALITY AS u(ts, kind, host_id, rollout_id, payload, event_id, ord)
), ins AS (
	INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
	SELECT ts, kind, host_id, rollout_id, payload::json, event_id FROM input ORDER BY ord
	ON CONFLICT (event_id) DO NOTHING
	RETURNING seq, event_id
)
SELECT seq, COALESCE(event_id, '') FROM ins ORDER BY seq`
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

// dimLockShared returns the SQL that takes the shared lock on dim's value
// valueExpr (NULL: none).
func dimLockShared(valueExpr, dim string) string {
	return "pg_advisory_xact_lock_shared(" + pglock.KeyExpr("'"+pglock.AppendLock(dim, "")+"' || "+valueExpr) + ")"
}

// conditionCall returns the call of canonlog_append_condition with its
// eight condition arguments from parameter $first on (lock names,
// exclusive flags, after seq, host, rollout, kinds, payload markers, own
// event ids), then the event to append, as six expressions.
func conditionCall(first int, event ...string) string {
	types := []string{"text[]", "bool[]", "bigint", "text", "text", "text[]", "text[]", "text[]"}
	args := make([]string, len(types))
	for i, t := range types {
		args[i] = fmt.Sprintf("$%d::%s", first+i, t)
	}
	return "canonlog_append_condition(" + strings.Join(append(args, event...), ", ") + ")"
}
