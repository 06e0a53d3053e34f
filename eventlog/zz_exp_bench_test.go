package eventlog_test

// TEMPORARY experiments; deleted before handover.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/lib/pq"

	"github.com/canonlog/canonlog/eventlog"
)

const expUnnestTail = `
), ins AS (
	INSERT INTO event_log (seq, ts, kind, host_id, rollout_id, payload, event_id) OVERRIDING SYSTEM VALUE
	SELECT seq, ts, kind, host_id, rollout_id, payload::json, event_id FROM input ORDER BY seq
	%s
	RETURNING seq
)
SELECT input.seq, ins.seq IS NOT NULL FROM input LEFT JOIN ins USING (seq) ORDER BY input.ord`

const expUnnestHead = `WITH input AS MATERIALIZED (
	SELECT nextval('event_log_seq_seq'::regclass) AS seq, u.ord, u.ts, u.kind,
	       NULLIF(u.host_id, '') AS host_id, NULLIF(u.rollout_id, '') AS rollout_id,
	       u.payload, NULLIF(u.event_id, '') AS event_id
	FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
	     WITH ORDINALITY AS u(ts, kind, host_id, rollout_id, payload, event_id, ord)`

var (
	expUnnestCurrent    = expUnnestHead + fmt.Sprintf(expUnnestTail, "ON CONFLICT (event_id) DO NOTHING")
	expUnnestNoConflict = expUnnestHead + fmt.Sprintf(expUnnestTail, "")
)

func expArrays(rows []benchRow) []any {
	n := len(rows)
	ts, kinds, hosts, rollouts, payloads, ids := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for j, r := range rows {
		ts[j], kinds[j], hosts[j], rollouts[j], payloads[j], ids[j] = r.ts.UTC().Format("2006-01-02T15:04:05.000000Z"), "agent_event", r.host, r.rollout, r.payloadS, r.eventID
	}
	return []any{pq.StringArray(ts), pq.StringArray(kinds), pq.StringArray(hosts), pq.StringArray(rollouts), pq.StringArray(payloads), pq.StringArray(ids)}
}

func expRows(first, n int) []benchRow {
	rows := make([]benchRow, n)
	for j := range rows {
		rows[j] = rowN(first + j)
	}
	return rows
}

// expValidate mimics canonlog's per-entry client work.
func expValidate(rows []benchRow) error {
	for _, r := range rows {
		if err := eventlog.ValidatePayload(r.payload, eventlog.DefaultMaxPayloadBytes); err != nil {
			return err
		}
	}
	return nil
}

func withTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// expUnnest runs an unnest statement and returns per row its seq or 0.
func expUnnest(ctx context.Context, tx *sql.Tx, q string, rows []benchRow) ([]int64, error) {
	res, err := tx.QueryContext(ctx, q, expArrays(rows)...)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	seqs := make([]int64, 0, len(rows))
	for res.Next() {
		var (
			seq int64
			ok  bool
		)
		if err := res.Scan(&seq, &ok); err != nil {
			return nil, err
		}
		if !ok {
			seq = 0
		}
		seqs = append(seqs, seq)
	}
	return seqs, res.Err()
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// expInsertCopy is the proposed insertBatchPostgres: take the batch's seqs in
// one round trip, COPY the rows with their seqs, and when an event id is
// already taken (stored, or twice in the batch) roll back to a savepoint and
// fall back to the ON CONFLICT statement. Batches without event ids cannot
// conflict and skip the savepoint.
func expInsertCopy(ctx context.Context, tx *sql.Tx, rows []benchRow) (seqs []int64, fellBack bool, err error) {
	n := len(rows)
	res, err := tx.QueryContext(ctx, `SELECT nextval('event_log_seq_seq'::regclass) AS seq FROM generate_series(1, $1) ORDER BY seq`, n)
	if err != nil {
		return nil, false, err
	}
	seqs = make([]int64, 0, n)
	for res.Next() {
		var s int64
		if err := res.Scan(&s); err != nil {
			res.Close()
			return nil, false, err
		}
		seqs = append(seqs, s)
	}
	if err := res.Close(); err != nil {
		return nil, false, err
	}
	hasIDs := false
	for _, r := range rows {
		hasIDs = hasIDs || r.eventID != ""
	}
	if hasIDs {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT canonlog_batch`); err != nil {
			return nil, false, err
		}
	}
	copyErr := func() error {
		st, err := tx.PrepareContext(ctx, `COPY event_log (seq, ts, kind, host_id, rollout_id, payload, event_id) FROM STDIN`)
		if err != nil {
			return err
		}
		defer st.Close()
		for j, r := range rows {
			if _, err := st.ExecContext(ctx, seqs[j], r.ts.UTC().Format("2006-01-02T15:04:05.000000Z"), "agent_event",
				nullIfEmpty(r.host), nullIfEmpty(r.rollout), r.payloadS, nullIfEmpty(r.eventID)); err != nil {
				return err
			}
		}
		_, err = st.ExecContext(ctx)
		return err
	}()
	if copyErr != nil {
		if pe := pq.As(copyErr, "23505"); pe != nil && hasIDs {
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT canonlog_batch`); err != nil {
				return nil, false, err
			}
			seqs, err := expUnnest(ctx, tx, expUnnestCurrent, rows)
			return seqs, true, err
		}
		return nil, false, copyErr
	}
	if hasIDs {
		if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT canonlog_batch`); err != nil {
			return nil, false, err
		}
	}
	return seqs, false, nil
}

func expStage(ctx context.Context, tx *sql.Tx, rows []benchRow) error {
	if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE IF NOT EXISTS canonlog_stage (ord bigint, ts timestamptz, kind text, host_id text, rollout_id text, payload text, event_id text) ON COMMIT DELETE ROWS`); err != nil {
		return err
	}
	st, err := tx.PrepareContext(ctx, `COPY canonlog_stage (ord, ts, kind, host_id, rollout_id, payload, event_id) FROM STDIN`)
	if err != nil {
		return err
	}
	for j, r := range rows {
		if _, err := st.ExecContext(ctx, j, r.ts, "agent_event", r.host, r.rollout, r.payloadS, r.eventID); err != nil {
			return err
		}
	}
	if _, err := st.ExecContext(ctx); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	res, err := tx.QueryContext(ctx, `WITH input AS MATERIALIZED (
	SELECT nextval('event_log_seq_seq'::regclass) AS seq, s.*
	FROM (SELECT ord, ts, kind, NULLIF(host_id, '') AS host_id, NULLIF(rollout_id, '') AS rollout_id, payload, NULLIF(event_id, '') AS event_id FROM canonlog_stage ORDER BY ord) s`+
		fmt.Sprintf(expUnnestTail, "ON CONFLICT (event_id) DO NOTHING"))
	if err != nil {
		return err
	}
	got := 0
	for res.Next() {
		got++
	}
	if err := res.Close(); err != nil {
		return err
	}
	if got != len(rows) {
		return fmt.Errorf("got %d", got)
	}
	return nil
}

func BenchmarkExpBatch(b *testing.B) {
	ctx := context.Background()
	b.Run("canonlog", func(b *testing.B) {
		log := benchLog(b, benchDB(b, "postgres"))
		benchBatch(b, func(first int) error { return appendBatch(ctx, log, first) })
	})
	b.Run("copy", func(b *testing.B) {
		db := benchDB(b, "postgres").DB
		benchBatch(b, func(first int) error { return rawCopyBatchPG(ctx, db, first, benchBatchSize) })
	})
	b.Run("proposal_copy_seqs", func(b *testing.B) {
		db := benchDB(b, "postgres").DB
		benchBatch(b, func(first int) error {
			rows := expRows(first, benchBatchSize)
			if err := expValidate(rows); err != nil {
				return err
			}
			return withTx(ctx, db, func(tx *sql.Tx) error {
				_, fb, err := expInsertCopy(ctx, tx, rows)
				if fb {
					return errors.New("unexpected fallback")
				}
				return err
			})
		})
	})
	b.Run("alt_copy_stage", func(b *testing.B) {
		db := benchDB(b, "postgres").DB
		benchBatch(b, func(first int) error {
			rows := expRows(first, benchBatchSize)
			return withTx(ctx, db, func(tx *sql.Tx) error { return expStage(ctx, tx, rows) })
		})
	})
	b.Run("diag_unnest_no_on_conflict", func(b *testing.B) {
		db := benchDB(b, "postgres").DB
		benchBatch(b, func(first int) error {
			rows := expRows(first, benchBatchSize)
			return withTx(ctx, db, func(tx *sql.Tx) error {
				_, err := expUnnest(ctx, tx, expUnnestNoConflict, rows)
				return err
			})
		})
	})
}

func BenchmarkExpAppend(b *testing.B) {
	ctx := context.Background()
	unprepared := func(db *sql.DB) func(i int) error {
		return func(i int) error {
			r := rowN(i)
			return withTx(ctx, db, func(tx *sql.Tx) error {
				var seq int64
				return tx.QueryRowContext(ctx, rawInsertPG, r.ts, "agent_event", r.host, r.rollout, r.payloadS, r.eventID).Scan(&seq)
			})
		}
	}
	autocommit := func(b *testing.B, db *sql.DB) func(i int) error {
		st, err := db.Prepare(rawInsertPG)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = st.Close() })
		return func(i int) error {
			r := rowN(i)
			var seq int64
			return st.QueryRowContext(ctx, r.ts, "agent_event", r.host, r.rollout, r.payloadS, r.eventID).Scan(&seq)
		}
	}
	for _, par := range []bool{false, true} {
		run := func(b *testing.B, db *sql.DB, op func(i int) error) {
			if par {
				benchConcurrent(b, db, op)
			} else {
				benchSingle(b, op)
			}
		}
		name := "1"
		if par {
			name = "16"
		}
		b.Run(name, func(b *testing.B) {
			b.Run("canonlog", func(b *testing.B) {
				log := benchLog(b, benchDB(b, "postgres"))
				run(b, log.DB().DB, func(i int) error { _, err := log.Append(ctx, rowN(i).entry()); return err })
			})
			b.Run("raw", func(b *testing.B) {
				db := benchDB(b, "postgres").DB
				f := rawAppenderPG(b, db)
				run(b, db, func(i int) error { return f(ctx, rowN(i)) })
			})
			b.Run("raw_unprepared", func(b *testing.B) {
				db := benchDB(b, "postgres").DB
				run(b, db, unprepared(db))
			})
			b.Run("autocommit_prepared", func(b *testing.B) {
				db := benchDB(b, "postgres").DB
				run(b, db, autocommit(b, db))
			})
		})
	}
}

// TestExpInsertCopyFallback checks the proposal's duplicate handling.
func TestExpInsertCopyFallback(t *testing.T) {
	b := &testing.B{}
	_ = b
	ctx := context.Background()
	log, db := setup(t, "postgres", nil)
	_ = log
	rows := expRows(0, 5)
	err := withTx(ctx, db.DB, func(tx *sql.Tx) error {
		seqs, fb, err := expInsertCopy(ctx, tx, rows)
		if err != nil || fb || len(seqs) != 5 {
			return fmt.Errorf("first: %v %v %v", seqs, fb, err)
		}
		t.Log("first", seqs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Row 2 already stored, row 7 twice in the batch.
	rows2 := append(expRows(5, 4), rows[2], rowN(7))
	err = withTx(ctx, db.DB, func(tx *sql.Tx) error {
		seqs, fb, err := expInsertCopy(ctx, tx, rows2)
		t.Log("second", seqs, fb, err)
		if err != nil || !fb || len(seqs) != 6 || seqs[4] != 0 || seqs[5] != 0 || seqs[2] == 0 {
			return fmt.Errorf("second: %v %v %v", seqs, fb, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, db); n != 9 {
		t.Fatalf("%d events", n)
	}
	// No ids: no savepoint, plain COPY; NULL host.
	r := rowN(100)
	r.eventID, r.host = "", ""
	err = withTx(ctx, db.DB, func(tx *sql.Tx) error {
		_, fb, err := expInsertCopy(ctx, tx, []benchRow{r, r})
		if fb {
			return errors.New("fallback")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var nulls int
	if err := db.Get(&nulls, `SELECT count(*) FROM event_log WHERE host_id IS NULL AND event_id IS NULL`); err != nil || nulls != 2 {
		t.Fatal(nulls, err)
	}
}
