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
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

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
// 315-325 bytes, kept as bytes for canonlog and as strings for the raw
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
		// dbtest caps pools below what the concurrent benchmarks need.
		dbtest.SetPoolSize(db, benchConcurrency)
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

// A benchSide is one side of a comparison. setup prepares what the side
// needs (a fresh database for writers; readers get the shared, loaded one)
// and returns op, which does the side's work for call number i: call i
// writes rows [i*perOp, (i+1)*perOp), so event ids never repeat.
type benchSide struct {
	name  string
	setup func(b *testing.B, shared *sqlx.DB) (op func(i int) error)
}

// A benchPair is canonlog's side and its baseline (sides[0] and sides[1])
// doing the same work, plus any extra canonlog variants after them.
type benchPair struct {
	perOp      int  // events per call of op
	warm       int  // untimed calls of op before timing
	concurrent bool // run op from benchConcurrency goroutines
	// load, when set, builds the database every side reads.
	load  func(b *testing.B) *sqlx.DB
	sides []benchSide
}

// run runs each side as a sub-benchmark of its own, one after the other.
func (p benchPair) run(b *testing.B) {
	var shared *sqlx.DB
	if p.load != nil {
		shared = p.load(b)
	}
	for _, s := range p.sides {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			op := s.setup(b, shared)
			p.warmUp(b, op)
			if p.concurrent {
				b.ResetTimer()
				runConcurrent(b, b.N, op)
				b.StopTimer()
				reportRate(b, b.N*p.perOp)
				return
			}
			i := 0
			for b.Loop() {
				if err := op(i); err != nil {
					b.Fatal(err)
				}
				i++
			}
			reportRate(b, i*p.perOp)
		})
	}
}

func (p benchPair) warmUp(b *testing.B, op func(i int) error) {
	b.Helper()
	warm := func(i int) error { return op(benchWarmupBase/p.perOp + i) }
	if p.concurrent {
		runConcurrent(b, p.warm, warm)
		return
	}
	for i := range p.warm {
		if err := warm(i); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSlice is how long one side runs before the next takes over in
// runPaired.
const benchSlice = 200 * time.Millisecond

// runPaired measures all sides of p in one benchmark, taking turns in
// slices of benchSlice and rotating which side goes first, so that load
// from outside the benchmark (this machine is shared and noisy) falls on
// every side alike. It reports each side's events/s and each side's ratio
// to the baseline, which is what docs/performance.md publishes.
func (p benchPair) runPaired(b *testing.B) {
	var shared *sqlx.DB
	if p.load != nil {
		shared = p.load(b)
	}
	n := len(p.sides)
	ops := make([]func(int) error, n)
	for j, s := range p.sides {
		ops[j] = s.setup(b, shared)
		p.warmUp(b, ops[j])
	}
	var (
		calls = make([]int, n) // calls made so far, per side: the next call's i
		spent = make([]time.Duration, n)
		turn  = 0
	)
	for b.Loop() {
		for k := range n {
			j := (turn + k) % n
			// Collect the garbage of the previous slice now, untimed, so a
			// side's allocations are not paid for by the next side.
			runtime.GC()
			start := time.Now()
			if p.concurrent {
				calls[j] += runSlice(b, calls[j], ops[j])
			} else {
				for first := true; first || time.Since(start) < benchSlice; first = false {
					if err := ops[j](calls[j]); err != nil {
						b.Fatal(err)
					}
					calls[j]++
				}
			}
			spent[j] += time.Since(start)
		}
		turn++
	}
	rate := func(j int) float64 { return float64(calls[j]*p.perOp) / spent[j].Seconds() }
	for j, s := range p.sides {
		b.ReportMetric(rate(j), s.name+"-events/s")
		if j != 1 {
			b.ReportMetric(rate(j)/rate(1), s.name+"/"+p.sides[1].name)
		}
	}
}

// runConcurrent runs op(0) … op(n-1) from benchConcurrency goroutines.
func runConcurrent(b *testing.B, n int, op func(i int) error) {
	b.Helper()
	var next atomic.Int64
	runWorkers(b, func() (int, bool) {
		i := int(next.Add(1) - 1)
		return i, i < n
	}, op)
}

// runSlice calls op(first), op(first+1), … from benchConcurrency
// goroutines until benchSlice has passed, and returns how many calls it
// made.
func runSlice(b *testing.B, first int, op func(i int) error) int {
	b.Helper()
	var next atomic.Int64
	deadline := time.Now().Add(benchSlice)
	runWorkers(b, func() (int, bool) {
		if time.Now().After(deadline) {
			return 0, false
		}
		return first + int(next.Add(1)-1), true
	}, op)
	return int(next.Load())
}

// runWorkers calls op(i) from benchConcurrency goroutines for every i that
// next hands out, until next says stop; it fails b on the first error.
func runWorkers(b *testing.B, next func() (int, bool), op func(i int) error) {
	b.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range benchConcurrency {
		wg.Go(func() {
			for i, ok := next(); ok; i, ok = next() {
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

// appendSide is canonlog's Log.Append of one row per call.
func appendSide(backend string, cfg *eventlog.Config) func(b *testing.B, _ *sqlx.DB) func(i int) error {
	return func(b *testing.B, _ *sqlx.DB) func(i int) error {
		ctx := context.Background()
		log := benchLog(b, benchDB(b, backend), cfg)
		// BenchmarkAppendParallel16 needs a connection per goroutine.
		if p := log.DB().Stats().MaxOpenConnections; backend == "postgres" && p != 0 && p < benchConcurrency {
			b.Fatalf("pool allows %d connections, the benchmark needs %d", p, benchConcurrency)
		}
		return func(i int) error {
			_, err := log.Append(ctx, rowN(i).entry())
			return err
		}
	}
}

// appendBatchSide is canonlog's Log.AppendBatch of benchBatchSize rows per
// call.
func appendBatchSide(backend string) func(b *testing.B, _ *sqlx.DB) func(i int) error {
	return func(b *testing.B, _ *sqlx.DB) func(i int) error {
		ctx := context.Background()
		log := benchLog(b, benchDB(b, backend), nil)
		return func(i int) error {
			entries := make([]eventlog.Entry, benchBatchSize)
			for j := range entries {
				entries[j] = rowN(i*benchBatchSize + j).entry()
			}
			_, err := log.AppendBatch(ctx, entries)
			return err
		}
	}
}

// readSide is canonlog's Log.Events over the whole shared log.
func readSide(b *testing.B, shared *sqlx.DB) func(i int) error {
	ctx := context.Background()
	log := benchLog(b, shared, nil)
	return func(int) error {
		n := 0
		for _, err := range log.Events(ctx, 0, nil) {
			if err != nil {
				return err
			}
			n++
		}
		if n != benchReadEvents {
			return fmt.Errorf("read %d events, want %d", n, benchReadEvents)
		}
		return nil
	}
}

// rawReadSide is a raw read of the whole shared log.
func rawReadSide(readAll func(context.Context, *sql.DB) (int, error)) func(b *testing.B, shared *sqlx.DB) func(i int) error {
	return func(b *testing.B, shared *sqlx.DB) func(i int) error {
		return func(int) error {
			n, err := readAll(context.Background(), shared.DB)
			if err == nil && n != benchReadEvents {
				err = fmt.Errorf("read %d events, want %d", n, benchReadEvents)
			}
			return err
		}
	}
}

// loadForRead returns a database of the backend holding benchReadEvents
// rows written by insert, settled so that no side pays for touching the
// table first: VACUUM sets hint bits and the visibility map on PostgreSQL
// (autovacuum may be off), a WAL checkpoint moves SQLite's rows into the
// main file, and one untimed read warms the caches. Read benchmarks share
// it: reads change nothing.
func loadForRead(backend string, insert func(ctx context.Context, db *sql.DB, first, n int) error,
	readAll func(context.Context, *sql.DB) (int, error)) func(b *testing.B) *sqlx.DB {
	return func(b *testing.B) *sqlx.DB {
		ctx := context.Background()
		db := benchDB(b, backend)
		for first := 0; first < benchReadEvents; first += 10 * benchBatchSize {
			if err := insert(ctx, db.DB, first, 10*benchBatchSize); err != nil {
				b.Fatal(err)
			}
		}
		settle := []string{`VACUUM (ANALYZE) event_log`}
		if backend == "sqlite" {
			settle = []string{`PRAGMA wal_checkpoint(TRUNCATE)`, `ANALYZE`}
		}
		for _, q := range settle {
			if _, err := db.ExecContext(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		if backend == "postgres" {
			_, _ = db.ExecContext(ctx, `CHECKPOINT`) // best effort, as in benchDB
		}
		if n, err := readAll(ctx, db.DB); err != nil || n != benchReadEvents {
			b.Fatalf("warm-up read: %d events, %v", n, err)
		}
		return db
	}
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

// rawAppenderSQLite is rawAppenderPG on SQLite: BEGIN IMMEDIATE; INSERT …
// RETURNING seq; COMMIT, the INSERT prepared once.
func rawAppenderSQLite(b *testing.B, db *sql.DB) func(ctx context.Context, r benchRow) error {
	b.Helper()
	st, err := db.Prepare(rawInsertSQLite)
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
		if err := tx.StmtContext(ctx, st).QueryRowContext(ctx, r.ts.Format(sqliteTSLayout), string(eventlog.KindAgentEvent),
			r.host, r.rollout, r.payloadS, r.eventID).Scan(&seq); err != nil {
			return err
		}
		return tx.Commit()
	}
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

// The comparisons. Each runs as sub-benchmarks, one side after the other
// (BenchmarkAppend/canonlog, BenchmarkAppend/raw, …: for profiling and
// benchstat), and interleaved in BenchmarkPaired (for the published ratios).

func pairAppend() benchPair {
	return benchPair{perOp: 1, warm: 10, sides: []benchSide{
		{"canonlog", appendSide("postgres", nil)},
		{"raw", func(b *testing.B, _ *sqlx.DB) func(i int) error {
			appendRaw := rawAppenderPG(b, benchDB(b, "postgres").DB)
			return func(i int) error { return appendRaw(context.Background(), rowN(i)) }
		}},
	}}
}

// pairAppendParallel16: OpenDB leaves the pool's open connections unbounded
// and keeps 16 idle, so each of the 16 goroutines holds a connection of its
// own. canonlog_serialized is the price of Config.SerializeAppends.
func pairAppendParallel16() benchPair {
	p := pairAppend()
	p.concurrent, p.warm = true, 2*benchConcurrency
	p.sides = append(p.sides, benchSide{"canonlog_serialized", appendSide("postgres", &eventlog.Config{SerializeAppends: true})})
	return p
}

func pairAppendBatch1000() benchPair {
	return benchPair{perOp: benchBatchSize, warm: 1, sides: []benchSide{
		{"canonlog", appendBatchSide("postgres")},
		{"copy", func(b *testing.B, _ *sqlx.DB) func(i int) error {
			db := benchDB(b, "postgres").DB
			return func(i int) error {
				return rawCopyBatchPG(context.Background(), db, i*benchBatchSize, benchBatchSize)
			}
		}},
	}}
}

func pairRead() benchPair {
	return benchPair{perOp: benchReadEvents, warm: 1,
		load: loadForRead("postgres", rawCopyBatchPG, rawReadAllPG),
		sides: []benchSide{
			{"canonlog", readSide},
			{"raw", rawReadSide(rawReadAllPG)},
		}}
}

func pairSQLiteAppend() benchPair {
	return benchPair{perOp: 1, warm: 10, sides: []benchSide{
		{"canonlog", appendSide("sqlite", nil)},
		{"raw", func(b *testing.B, _ *sqlx.DB) func(i int) error {
			appendRaw := rawAppenderSQLite(b, benchDB(b, "sqlite").DB)
			return func(i int) error { return appendRaw(context.Background(), rowN(i)) }
		}},
	}}
}

func pairSQLiteAppendBatch1000() benchPair {
	return benchPair{perOp: benchBatchSize, warm: 1, sides: []benchSide{
		{"canonlog", appendBatchSide("sqlite")},
		{"raw", func(b *testing.B, _ *sqlx.DB) func(i int) error {
			db := benchDB(b, "sqlite").DB
			return func(i int) error {
				return rawBatchSQLite(context.Background(), db, i*benchBatchSize, benchBatchSize)
			}
		}},
	}}
}

func pairSQLiteRead() benchPair {
	return benchPair{perOp: benchReadEvents, warm: 1,
		load: loadForRead("sqlite", rawBatchSQLite, rawReadAllSQLite),
		sides: []benchSide{
			{"canonlog", readSide},
			{"raw", rawReadSide(rawReadAllSQLite)},
		}}
}

// pairConditions measures what conditions cost: canonlog's plain append
// (which holds the dimension locks conditions rely on) and a conditional
// append whose condition does not conflict, against the plain append
// without dimension locks, as appends were before conditions existed.
// Each conditional append decides about a rollout of its own, so that
// conditions never wait for each other.
func pairConditions() benchPair {
	return benchPair{perOp: 1, warm: 10, sides: []benchSide{
		{"canonlog", appendSide("postgres", nil)},
		{"nolocks", func(b *testing.B, _ *sqlx.DB) func(i int) error {
			ctx := context.Background()
			log := benchLog(b, benchDB(b, "postgres"), nil)
			eventlog.WithoutDimensionLocks(log)
			return func(i int) error {
				_, err := log.Append(ctx, rowN(i).entry())
				return err
			}
		}},
		{"conditional", func(b *testing.B, _ *sqlx.DB) func(i int) error {
			ctx := context.Background()
			log := benchLog(b, benchDB(b, "postgres"), nil)
			return func(i int) error {
				e := rowN(i).entry()
				e.RolloutID = "decide-" + strconv.Itoa(i)
				_, err := log.If(eventlog.Condition{Match: eventlog.Filter{RolloutID: e.RolloutID}}).Append(ctx, e)
				return err
			}
		}},
	}}
}

// pairConditionsBatch measures what the dimension locks cost batches of
// size rows: with 50 the batch locks each of its 50 hosts, with 1000 it
// takes the hosts' wide lock instead.
func pairConditionsBatch(size int) benchPair {
	side := func(locks bool) func(b *testing.B, _ *sqlx.DB) func(i int) error {
		return func(b *testing.B, _ *sqlx.DB) func(i int) error {
			ctx := context.Background()
			log := benchLog(b, benchDB(b, "postgres"), nil)
			if !locks {
				eventlog.WithoutDimensionLocks(log)
			}
			return func(i int) error {
				entries := make([]eventlog.Entry, size)
				for j := range entries {
					entries[j] = rowN(i*size + j).entry()
				}
				_, err := log.AppendBatch(ctx, entries)
				return err
			}
		}
	}
	return benchPair{perOp: size, warm: 1, sides: []benchSide{{"canonlog", side(true)}, {"nolocks", side(false)}}}
}

func pairConditionsParallel16() benchPair {
	p := pairConditions()
	p.concurrent, p.warm = true, 2*benchConcurrency
	return p
}

// pairTelemetry measures what instrumentation costs appends: no-op
// providers (nothing recorded, the API's cost) and the OpenTelemetry SDK
// (a meter with a manual reader, a tracer that samples and records every
// span, with no exporter), against a log configured with none.
func pairTelemetry() benchPair {
	withConfig := func(cfg func() *eventlog.Config) func(b *testing.B, _ *sqlx.DB) func(i int) error {
		return func(b *testing.B, db *sqlx.DB) func(i int) error { return appendSide("postgres", cfg())(b, db) }
	}
	return benchPair{perOp: 1, warm: 10, sides: []benchSide{
		{"noop", withConfig(func() *eventlog.Config {
			return &eventlog.Config{MeterProvider: metricnoop.NewMeterProvider(), TracerProvider: tracenoop.NewTracerProvider()}
		})},
		{"none", appendSide("postgres", nil)},
		{"sdk", withConfig(func() *eventlog.Config {
			return &eventlog.Config{
				MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())),
				TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample())),
			}
		})},
	}}
}

func pairTelemetryParallel16() benchPair {
	p := pairTelemetry()
	p.concurrent, p.warm = true, 2*benchConcurrency
	return p
}

func BenchmarkAppend(b *testing.B)                { pairAppend().run(b) }
func BenchmarkAppendParallel16(b *testing.B)      { pairAppendParallel16().run(b) }
func BenchmarkConditions(b *testing.B)            { pairConditions().run(b) }
func BenchmarkConditionsParallel16(b *testing.B)  { pairConditionsParallel16().run(b) }
func BenchmarkAppendBatch1000(b *testing.B)       { pairAppendBatch1000().run(b) }
func BenchmarkRead(b *testing.B)                  { pairRead().run(b) }
func BenchmarkSQLiteAppend(b *testing.B)          { pairSQLiteAppend().run(b) }
func BenchmarkSQLiteAppendBatch1000(b *testing.B) { pairSQLiteAppendBatch1000().run(b) }
func BenchmarkSQLiteRead(b *testing.B)            { pairSQLiteRead().run(b) }

// BenchmarkPaired runs every comparison with its sides taking turns (see
// runPaired). Its metrics are the published figures: NAME-events/s per side
// and canonlog/BASELINE, the ratio.
func BenchmarkPaired(b *testing.B) {
	for _, c := range []struct {
		name string
		pair benchPair
	}{
		{"Append", pairAppend()},
		{"AppendParallel16", pairAppendParallel16()},
		{"Conditions", pairConditions()},
		{"ConditionsParallel16", pairConditionsParallel16()},
		{"ConditionsBatch50", pairConditionsBatch(50)},
		{"ConditionsBatch1000", pairConditionsBatch(1000)},
		{"Telemetry", pairTelemetry()},
		{"TelemetryParallel16", pairTelemetryParallel16()},
		{"AppendBatch1000", pairAppendBatch1000()},
		{"Read", pairRead()},
		{"SQLiteAppend", pairSQLiteAppend()},
		{"SQLiteAppendBatch1000", pairSQLiteAppendBatch1000()},
		{"SQLiteRead", pairSQLiteRead()},
	} {
		b.Run(c.name, c.pair.runPaired)
	}
}

// BenchmarkDisjointConditions measures whether conditions on different
// rollouts wait for each other: read–decide–append loops
// (ReadForCondition, then a conditional Append of a decision about the
// rollout read), from one writer alone, from two writers on two
// rollouts, and from two writers on one rollout, taking turns in slices
// of benchSlice. disjoint/alone is a writer's rate beside a writer on
// another rollout over its rate alone; same/alone the same beside a
// writer on its own rollout, whose reads wait for each other's appends
// (counting attempts, refused ones too). plain-two/one is the same ratio
// for plain appends of the decisions, which share nothing but the
// machine: what two writers cost each other on it anyway.
func BenchmarkDisjointConditions(b *testing.B) {
	ctx := context.Background()
	log := benchLog(b, benchDB(b, "postgres"), nil)
	var n atomic.Int64
	plain := false
	loop := func(rollout string, until time.Time) error {
		match := eventlog.Filter{RolloutID: rollout}
		for time.Now().Before(until) {
			if plain {
				e := rowN(int(n.Add(1))).entry()
				e.Kind, e.RolloutID = eventlog.KindGateDecision, rollout
				if _, err := log.Append(ctx, e); err != nil {
					return err
				}
				continue
			}
			cond, err := log.ReadForCondition(ctx, match, nil)
			if err != nil {
				return err
			}
			i := int(n.Add(1))
			e := rowN(i).entry()
			e.Kind, e.RolloutID = eventlog.KindGateDecision, rollout
			if _, err := log.If(cond).Append(ctx, e); err != nil && !errors.Is(err, eventlog.ErrConditionFailed) {
				return err
			}
		}
		return nil
	}
	// run runs a loop per rollout for one slice and returns the attempts
	// per writer per second.
	run := func(rollouts ...string) float64 {
		start, t0 := n.Load(), time.Now()
		var g sync.WaitGroup
		errs := make(chan error, len(rollouts))
		for _, r := range rollouts {
			g.Go(func() { errs <- loop(r, t0.Add(benchSlice)) })
		}
		g.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		return float64(n.Load()-start) / time.Since(t0).Seconds() / float64(len(rollouts))
	}
	var alone, disjoint, same, plainOne, plainTwo float64
	rounds := 0
	for b.Loop() {
		alone += run("a")
		disjoint += run("a", "b")
		same += run("a", "a")
		plain = true
		plainOne += run("a")
		plainTwo += run("a", "b")
		plain = false
		rounds++
	}
	b.ReportMetric(alone/float64(rounds), "alone-decisions/s")
	b.ReportMetric(disjoint/alone, "disjoint/alone")
	b.ReportMetric(same/alone, "same/alone")
	b.ReportMetric(plainTwo/plainOne, "plain-two/one")
}
