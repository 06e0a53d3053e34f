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
	lockShared  string // PostgreSQL only: takes the hook's shared locks, named by one text[]
	copiedSeqs  string // PostgreSQL only: the last $2 seqs this transaction inserted above $1, highest first
	seqFloor    string // PostgreSQL only: the seq sequence's last value, below every seq drawn after
	lastSeq     string
	get         string
	serialize   string // takes the log-wide append lock; "" when not needed
}

func queriesFor(db *sqlx.DB, b Backend) queries {
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
		// The hook's shared locks, for a batch, which takes them before its
		// COPY.
		q.lockShared = `SELECT count(pg_advisory_xact_lock_shared(` + pglock.KeyExpr("l.name") + `)) FROM unnest($1::text[]) AS l(name)`
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
