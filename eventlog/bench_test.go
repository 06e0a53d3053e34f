package eventlog_test

// Benchmarks of the core paths, each measured side by side with raw
// database/sql code doing the same work on the same driver and the same
// pool settings, so docs/performance.md can report ratios measured in one
// run. Every benchmark reports events/s. See docs/performance.md for the
// method and the command that reproduces the published figures.
//
// Sub-benchmark names say the side: "canonlog" is the public API; "raw" (or
// "copy") is the baseline.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

const (
	benchBatchSize   = 1000
	benchReadEvents  = 100_000
	benchReadPage    = eventlog.DefaultPageSize
	benchConcurrency = 16
	// benchWarmupBase numbers warm-up rows so that their event ids never
	// collide with measured ones.
	benchWarmupBase = 1 << 40
)

// benchTS0 is the timestamp of row 0; row i is i milliseconds later.
var benchTS0 = time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)

// Pools of realistic column values, built once so that generating a row
// costs both sides the same few nanoseconds. Payloads are probe results of
// about 300 bytes, kept as bytes for canonlog and as strings for the raw
// side, so neither pays a conversion the other does not.
var benchPayloads, benchPayloadStrings, benchHosts, benchRollouts = func() ([][]byte, []string, []string, []string) {
	probes := []string{"ssh-hardening", "kernel-params", "auditd-config", "package-pins",
		"firewall-rules", "tls-ciphers", "sudoers", "ntp-sync"}
	statuses := []string{"fail", "pass"}
	const n = 1024
	payloads, strs := make([][]byte, n), make([]string, n)
	for i := range n {
		p := fmt.Sprintf(`{"type":"ProbeResult","mode":"enforce","status":"%s","probe_name":"%s","observed_at":"%s","sub_results":[`+
			`{"control_id":"CIS-5.2.%d","framework":"cis","status":"fail"},`+
			`{"control_id":"CIS-5.2.%d","framework":"cis","status":"%s"},`+
			`{"control_id":"NIST-AC-%d","framework":"nist","status":"pass"}]}`,
			statuses[i%2], probes[i%len(probes)], benchTS0.Add(time.Duration(i)*time.Second).Format(time.RFC3339),
			i%30, (i+7)%30, statuses[(i/2)%2], i%25)
		payloads[i], strs[i] = []byte(p), p
	}
	hosts := make([]string, 5000)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host-%05d.eu-west-1.fleet.internal", i)
	}
	rollouts := make([]string, 8)
	for i := range rollouts {
		rollouts[i] = fmt.Sprintf("rollout-2026-05-16-%02d", i)
	}
	return payloads, strs, hosts, rollouts
}()

// benchRow is row i of a benchmark: every side writes exactly these values.
type benchRow struct {
	ts       time.Time
	host     string
	rollout  string
	payload  []byte
	payloadS string
	eventID  string
}

func rowN(i int) benchRow {
	return benchRow{
		ts:       benchTS0.Add(time.Duration(i) * time.Millisecond),
		host:     benchHosts[i%len(benchHosts)],
		rollout:  benchRollouts[(i/1000)%len(benchRollouts)],
		payload:  benchPayloads[i%len(benchPayloads)],
		payloadS: benchPayloadStrings[i%len(benchPayloadStrings)],
		eventID:  "evt-" + strconv.Itoa(i),
	}
}

func (r benchRow) entry() eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindAgentEvent, TS: r.ts, HostID: r.host, RolloutID: r.rollout,
		Payload: json.RawMessage(r.payload), EventID: r.eventID}
}

// benchDB returns a pool on a fresh migrated database of the backend, opened
// by eventlog.OpenDB. Each side of a write benchmark gets its own, so table
// and index size never favour one side; the raw side uses the plain *sql.DB
// underneath, so both sides have the same pool settings. On PostgreSQL it
// then forces a checkpoint, so that each side starts with no dirty buffers
// left by the previous one and is less likely to pay for a checkpoint
// triggered by the other side's WAL. (Best effort: the privilege may be
// missing.)
func benchDB(b *testing.B, backend string) *sqlx.DB {
	b.Helper()
	db := dbtest.New(b, backend).Migrated(b)
	if backend == "postgres" {
		_, _ = db.Exec(`CHECKPOINT`)
	}
	return db
}

func benchLog(b *testing.B, db *sqlx.DB, cfg *eventlog.Config) *eventlog.Log {
	b.Helper()
	l, err := eventlog.New(db, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l
}

func reportRate(b *testing.B, events int) {
	b.Helper()
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// benchSingle times op(0), op(1), … from one goroutine, after a few
// warm-up calls that open the connection and prepare statements.
func benchSingle(b *testing.B, op func(i int) error) {
	b.Helper()
	b.ReportAllocs()
	for i := range 10 {
		if err := op(benchWarmupBase + i); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		if err := op(i); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportRate(b, i)
}

// benchConcurrent times b.N calls of op spread over benchConcurrency
// goroutines, after a warm-up that opens one connection per goroutine.
func benchConcurrent(b *testing.B, db *sql.DB, op func(i int) error) {
	b.Helper()
	b.ReportAllocs()
	if max := db.Stats().MaxOpenConnections; max != 0 && max < benchConcurrency {
		b.Fatalf("pool allows %d connections, the benchmark needs %d", max, benchConcurrency)
	}
	runConcurrent(b, 2*benchConcurrency, func(i int) error { return op(benchWarmupBase + i) })
	b.ResetTimer()
	runConcurrent(b, b.N, op)
	b.StopTimer()
	reportRate(b, b.N)
}

// runConcurrent runs op(0) … op(n-1) from benchConcurrency goroutines.
func runConcurrent(b *testing.B, n int, op func(i int) error) {
	b.Helper()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range benchConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// benchBatch times op(first) for consecutive batches of benchBatchSize rows.
func benchBatch(b *testing.B, op func(first int) error) {
	b.Helper()
	b.ReportAllocs()
	if err := op(benchWarmupBase); err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		if err := op(n); err != nil {
			b.Fatal(err)
		}
		n += benchBatchSize
	}
	reportRate(b, n)
}

func appendBatch(ctx context.Context, log *eventlog.Log, first int) error {
	entries := make([]eventlog.Entry, benchBatchSize)
	for j := range entries {
		entries[j] = rowN(first + j).entry()
	}
	_, err := log.AppendBatch(ctx, entries)
	return err
}

// benchRead times reading the whole log (benchReadEvents events, loaded
// into db by the caller) from seq 0: canonlog through Log.Events, the raw
// side through rawReadAll. Both sides read the same table: reads change
// nothing, and the table is settled (VACUUM sets hint bits and the
// visibility map on PostgreSQL; a WAL checkpoint on SQLite) and read once
// before either side is timed, so neither pays for touching it first.
func benchRead(b *testing.B, db *sqlx.DB, rawReadAll func(context.Context, *sql.DB) (int, error)) {
	b.Helper()
	ctx := context.Background()
	settle := []string{`VACUUM (ANALYZE) event_log`, `CHECKPOINT`}
	if db.DriverName() == "sqlite" {
		settle = []string{`PRAGMA wal_checkpoint(TRUNCATE)`, `ANALYZE`}
	}
	for _, q := range settle {
		if _, err := db.ExecContext(ctx, q); err != nil && q != `CHECKPOINT` {
			b.Fatal(err)
		}
	}
	if n, err := rawReadAll(ctx, db.DB); err != nil || n != benchReadEvents {
		b.Fatalf("warm-up read: %d events, %v", n, err)
	}
	log := benchLog(b, db, nil)
	b.Run("canonlog", func(b *testing.B) {
		b.ReportAllocs()
		total := 0
		for b.Loop() {
			n := 0
			for _, err := range log.Events(ctx, 0, nil) {
				if err != nil {
					b.Fatal(err)
				}
				n++
			}
			if n != benchReadEvents {
				b.Fatalf("read %d events, want %d", n, benchReadEvents)
			}
			total += n
		}
		reportRate(b, total)
	})
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		total := 0
		for b.Loop() {
			n, err := rawReadAll(ctx, db.DB)
			if err != nil {
				b.Fatal(err)
			}
			if n != benchReadEvents {
				b.Fatalf("read %d events, want %d", n, benchReadEvents)
			}
			total += n
		}
		reportRate(b, total)
	})
}

// Raw PostgreSQL baselines: plain database/sql on lib/pq.
const (
	rawInsertPG = `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq`
	rawCopyPG = `COPY event_log (ts, kind, host_id, rollout_id, payload, event_id) FROM STDIN`
	rawReadPG = `SELECT seq, ts, kind, host_id, rollout_id, payload, event_id FROM event_log WHERE seq > $1 ORDER BY seq LIMIT $2`
)

// rawAppenderPG returns BEGIN; INSERT … RETURNING seq; COMMIT with the
// INSERT prepared once, as canonlog prepares it: unprepared, lib/pq spends
// an extra round trip parsing every INSERT, which would make the baseline
// easy to beat (see docs/performance.md).
func rawAppenderPG(b *testing.B, db *sql.DB) func(ctx context.Context, r benchRow) error {
	b.Helper()
	st, err := db.Prepare(rawInsertPG)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	return func(ctx context.Context, r benchRow) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		var seq int64
		if err := tx.StmtContext(ctx, st).QueryRowContext(ctx, r.ts, string(eventlog.KindAgentEvent),
			r.host, r.rollout, r.payloadS, r.eventID).Scan(&seq); err != nil {
			return err
		}
		return tx.Commit()
	}
}

// rawCopyBatchPG COPYs rows [first, first+n) in one transaction.
func rawCopyBatchPG(ctx context.Context, db *sql.DB, first, n int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	st, err := tx.PrepareContext(ctx, rawCopyPG)
	if err != nil {
		return err
	}
	for i := first; i < first+n; i++ {
		r := rowN(i)
		if _, err := st.ExecContext(ctx, r.ts, string(eventlog.KindAgentEvent), r.host, r.rollout, r.payloadS, r.eventID); err != nil {
			return err
		}
	}
	if _, err := st.ExecContext(ctx); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	return tx.Commit()
}

// rawReadAllPG reads every event after seq 0 in keyset pages, scanning each
// row into the Go types canonlog's Event holds, and returns the count.
func rawReadAllPG(ctx context.Context, db *sql.DB) (int, error) {
	var after int64
	n := 0
	for {
		rows, err := db.QueryContext(ctx, rawReadPG, after, benchReadPage)
		if err != nil {
			return n, err
		}
		got := 0
		for rows.Next() {
			var (
				seq                    int64
				ts                     time.Time
				kind                   string
				host, rollout, eventID sql.NullString
				payload                []byte
			)
			if err := rows.Scan(&seq, &ts, &kind, &host, &rollout, &payload, &eventID); err != nil {
				_ = rows.Close()
				return n, err
			}
			after = seq
			got++
		}
		if err := rows.Close(); err != nil {
			return n, err
		}
		if err := rows.Err(); err != nil {
			return n, err
		}
		n += got
		if got < benchReadPage {
			return n, nil
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	b.Run("canonlog", func(b *testing.B) {
		log := benchLog(b, benchDB(b, "postgres"), nil)
		benchSingle(b, func(i int) error {
			_, err := log.Append(ctx, rowN(i).entry())
			return err
		})
	})
	b.Run("raw", func(b *testing.B) {
		appendRaw := rawAppenderPG(b, benchDB(b, "postgres").DB)
		benchSingle(b, func(i int) error { return appendRaw(ctx, rowN(i)) })
	})
}

// BenchmarkAppendParallel16 runs single-event appends from 16 goroutines.
// OpenDB leaves the pool's open connections unbounded and keeps 16 idle, so
// each goroutine holds a connection of its own.
func BenchmarkAppendParallel16(b *testing.B) {
	ctx := context.Background()
	b.Run("canonlog", func(b *testing.B) {
		log := benchLog(b, benchDB(b, "postgres"), nil)
		benchConcurrent(b, log.DB().DB, func(i int) error {
			_, err := log.Append(ctx, rowN(i).entry())
			return err
		})
	})
	b.Run("raw", func(b *testing.B) {
		db := benchDB(b, "postgres").DB
		appendRaw := rawAppenderPG(b, db)
		benchConcurrent(b, db, func(i int) error { return appendRaw(ctx, rowN(i)) })
	}) // The price of Config.SerializeAppends: one transaction at a time.
	b.Run("canonlog_serialized", func(b *testing.B) {
		log := benchLog(b, benchDB(b, "postgres"), &eventlog.Config{SerializeAppends: true})
		benchConcurrent(b, log.DB().DB, func(i int) error {
			_, err := log.Append(ctx, rowN(i).entry())
			return err
		})
	})
}

func BenchmarkAppendBatch1000(b *testing.B) {
	ctx := context.Background()
	b.Run("canonlog", func(b *testing.B) {
		log := benchLog(b, benchDB(b, "postgres"), nil)
		benchBatch(b, func(first int) error { return appendBatch(ctx, log, first) })
	})
	b.Run("copy", func(b *testing.B) {
		db := benchDB(b, "postgres").DB
		benchBatch(b, func(first int) error { return rawCopyBatchPG(ctx, db, first, benchBatchSize) })
	})
}

func BenchmarkRead(b *testing.B) {
	ctx := context.Background()
	db := benchDB(b, "postgres")
	for first := 0; first < benchReadEvents; first += 10 * benchBatchSize {
		if err := rawCopyBatchPG(ctx, db.DB, first, 10*benchBatchSize); err != nil {
			b.Fatal(err)
		}
	}
	benchRead(b, db, rawReadAllPG)
}

// Raw SQLite baselines: plain database/sql on modernc.org/sqlite, on the
// pool eventlog.OpenDB configures (WAL, busy timeout, BEGIN IMMEDIATE), so
// both sides pay the same per-connection settings.
const (
	rawInsertSQLite = `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
VALUES (?, ?, ?, ?, ?, ?) RETURNING seq`
	rawReadSQLite = `SELECT seq, ts, kind, host_id, rollout_id, payload, event_id FROM event_log WHERE seq > ? ORDER BY seq LIMIT ?`
	// sqliteTSLayout is the fixed-width text the SQLite schema requires.
	sqliteTSLayout = "2006-01-02T15:04:05.000000Z"
)

// rawAppendSQLite is BEGIN IMMEDIATE; INSERT … RETURNING seq; COMMIT.
func rawAppendSQLite(ctx context.Context, db *sql.DB, r benchRow) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var seq int64
	if err := tx.QueryRowContext(ctx, rawInsertSQLite, r.ts.Format(sqliteTSLayout), string(eventlog.KindAgentEvent),
		r.host, r.rollout, r.payloadS, r.eventID).Scan(&seq); err != nil {
		return err
	}
	return tx.Commit()
}

// rawBatchSQLite inserts rows [first, first+n) with one prepared INSERT …
// RETURNING seq per row, in one transaction.
func rawBatchSQLite(ctx context.Context, db *sql.DB, first, n int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	st, err := tx.PrepareContext(ctx, rawInsertSQLite)
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	for i := first; i < first+n; i++ {
		r := rowN(i)
		var seq int64
		if err := st.QueryRowContext(ctx, r.ts.Format(sqliteTSLayout), string(eventlog.KindAgentEvent),
			r.host, r.rollout, r.payloadS, r.eventID).Scan(&seq); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// rawReadAllSQLite is rawReadAllPG on SQLite: the timestamp arrives as
// text and is parsed into a time.Time, as canonlog does.
func rawReadAllSQLite(ctx context.Context, db *sql.DB) (int, error) {
	var after int64
	n := 0
	for {
		rows, err := db.QueryContext(ctx, rawReadSQLite, after, benchReadPage)
		if err != nil {
			return n, err
		}
		got := 0
		for rows.Next() {
			var (
				seq                    int64
				tsText, kind           string
				host, rollout, eventID sql.NullString
				payload                []byte
			)
			if err := rows.Scan(&seq, &tsText, &kind, &host, &rollout, &payload, &eventID); err != nil {
				_ = rows.Close()
				return n, err
			}
			if _, err := time.Parse(time.RFC3339Nano, tsText); err != nil {
				_ = rows.Close()
				return n, err
			}
			after = seq
			got++
		}
		if err := rows.Close(); err != nil {
			return n, err
		}
		if err := rows.Err(); err != nil {
			return n, err
		}
		n += got
		if got < benchReadPage {
			return n, nil
		}
	}
}

func BenchmarkSQLiteAppend(b *testing.B) {
	ctx := context.Background()
	b.Run("canonlog", func(b *testing.B) {
		log := benchLog(b, benchDB(b, "sqlite"), nil)
		benchSingle(b, func(i int) error {
			_, err := log.Append(ctx, rowN(i).entry())
			return err
		})
	})
	b.Run("raw", func(b *testing.B) {
		db := benchDB(b, "sqlite").DB
		benchSingle(b, func(i int) error { return rawAppendSQLite(ctx, db, rowN(i)) })
	})
}

func BenchmarkSQLiteAppendBatch1000(b *testing.B) {
	ctx := context.Background()
	b.Run("canonlog", func(b *testing.B) {
		log := benchLog(b, benchDB(b, "sqlite"), nil)
		benchBatch(b, func(first int) error { return appendBatch(ctx, log, first) })
	})
	b.Run("raw", func(b *testing.B) {
		db := benchDB(b, "sqlite").DB
		benchBatch(b, func(first int) error { return rawBatchSQLite(ctx, db, first, benchBatchSize) })
	})
}

func BenchmarkSQLiteRead(b *testing.B) {
	ctx := context.Background()
	db := benchDB(b, "sqlite")
	for first := 0; first < benchReadEvents; first += 10 * benchBatchSize {
		if err := rawBatchSQLite(ctx, db.DB, first, 10*benchBatchSize); err != nil {
			b.Fatal(err)
		}
	}
	benchRead(b, db, rawReadAllSQLite)
}
