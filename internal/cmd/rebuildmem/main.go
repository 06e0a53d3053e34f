// Command rebuildmem measures the time and peak memory of projection.Rebuild
// over a large log. It creates a scratch database (a schema of its own on
// PostgreSQL, a temporary file on SQLite), fills event_log with N synthetic
// probe-result events straight in SQL, rebuilds an insert-only projection
// that writes one row per event, reports events/s and peak RSS, and drops
// the scratch database.
//
//	go run ./internal/cmd/rebuildmem -database-url 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable' -events 1000000
//	go run ./internal/cmd/rebuildmem -database-url sqlite: -events 1000000
//
// Peak RSS is VmHWM from /proc/self/status (Linux). It is printed after the
// fill and after the rebuild; the high-water mark is also reset after the
// fill (echo 5 > /proc/self/clear_refs) so the rebuild's own peak shows
// apart from the fill's, which on SQLite runs in this process.
//
// -batch sets RebuildOptions.BatchSize and -payload-pad makes payloads
// larger: a rebuild holds one page of events at a time, bounded by count,
// so its memory follows BatchSize times the payload size, not N.
// -memprofile writes a heap profile taken halfway through the rebuild.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing/fstest"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/scratchdb"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

type options struct {
	databaseURL string
	events      int
	batchSize   int
	memProfile  string
	cpuProfile  string
	payloadPad  int
	projection  string
	prefix      string // of the scratch database's name
}

func main() {
	var o options
	flag.StringVar(&o.databaseURL, "database-url", "", "postgres://… (a scratch schema is created in that database) or sqlite:DIR (a scratch file is created in DIR; sqlite: alone uses $TMPDIR)")
	flag.IntVar(&o.events, "events", 1_000_000, "number of events to fill the log with")
	flag.IntVar(&o.batchSize, "batch", 0, "RebuildOptions.BatchSize (0: the default page size)")
	flag.StringVar(&o.memProfile, "memprofile", "", "write a heap profile taken halfway through the rebuild to this file")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the rebuild to this file")
	flag.IntVar(&o.payloadPad, "payload-pad", 0, "add a string of this many bytes to every payload (0: none; payloads are then about 330 bytes)")
	flag.StringVar(&o.projection, "projection", "seq_view", "the projection to rebuild: seq_view (one row per event) or probe_failures (the reference projection)")
	flag.Parse()
	o.prefix = "canonlog_rebuildmem"
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rebuildmem:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, w io.Writer) (err error) {
	if o.events < 1 {
		return fmt.Errorf("-events is %d: give a positive number of events", o.events)
	}
	if o.payloadPad < 0 || o.payloadPad > eventlog.DefaultMaxPayloadBytes-1024 {
		return fmt.Errorf("-payload-pad is %d: give 0 to %d bytes", o.payloadPad, eventlog.DefaultMaxPayloadBytes-1024)
	}
	db, cleanup, err := openScratch(ctx, o.databaseURL, o.prefix, w)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cleanup()) }()
	d, err := eventlog.BackendOf(db)
	if err != nil {
		return err
	}

	var view projection.Projection
	switch o.projection {
	case "seq_view":
		view = &seqView{}
	case "probe_failures":
		view = probefailures.New()
	default:
		return fmt.Errorf("-projection %q: use seq_view or probe_failures", o.projection)
	}
	reg := projection.Must(projection.NewRegistry(view))
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }()
	if _, err := projection.Migrate(ctx, log, reg); err != nil {
		return err
	}
	report(w, "start")

	start := time.Now()
	if err := fill(ctx, db, d, o.events, o.payloadPad, w); err != nil {
		return err
	}
	fillDur := time.Since(start)
	fmt.Fprintf(w, "fill: %d events in %s (%.0f events/s)\n", o.events, fillDur.Round(time.Millisecond), float64(o.events)/fillDur.Seconds())
	runtime.GC()
	hwmFill := report(w, "after fill")
	reset := resetHWM()
	if reset == nil {
		report(w, "after HWM reset")
	} else {
		fmt.Fprintf(w, "could not reset VmHWM (%v): the rebuild's peak below includes the fill's\n", reset)
	}

	sampler := startSampler(100 * time.Millisecond)
	ropts := &projection.RebuildOptions{BatchSize: o.batchSize}
	var profErr error
	if o.memProfile != "" {
		// Halfway, when the rebuild's transaction holds half its writes:
		// its steady state, not the state after commit.
		var once sync.Once
		ropts.Progress = func(p projection.Progress) {
			if p.Total > 0 && p.Done >= p.Total/2 {
				once.Do(func() { profErr = writeHeapProfile(o.memProfile) })
			}
		}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	start = time.Now()
	res, rerr := projection.Rebuild(ctx, log, reg, ropts)
	dur := time.Since(start)
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	peaks := sampler.stop()
	if rerr != nil {
		return rerr
	}
	if profErr != nil {
		return fmt.Errorf("heap profile: %w", profErr)
	}
	batch := o.batchSize
	if batch == 0 {
		batch = eventlog.DefaultPageSize
	}
	r := res[0]
	// seq_view derives one row per event; probe_failures reads the agent
	// events (70% of the fill) and derives a row per failing one.
	if o.projection == "seq_view" && (r.Events != int64(o.events) || r.Rows != int64(o.events)) ||
		o.projection == "probe_failures" && (r.Events != int64(o.events)*7/10 || r.Rows == 0) {
		return fmt.Errorf("rebuild replayed %d events into %d rows, want %d", r.Events, r.Rows, o.events)
	}
	hwmRebuild := report(w, "after rebuild")
	fmt.Fprintf(w, "rebuild: %d events, %d rows, %s, %.0f events/s (batch %d)\n",
		r.Events, r.Rows, dur.Round(time.Millisecond), float64(r.Events)/dur.Seconds(), batch)
	fmt.Fprintf(w, "during rebuild (sampled every 100ms): max VmRSS %s, max Go heap objects %s, max Go runtime total %s\n",
		mib(peaks.rss), mib(peaks.heap), mib(peaks.goTotal))
	peakRebuild := "n/a (reset failed)"
	if reset == nil {
		peakRebuild = mib(hwmRebuild)
	}
	fmt.Fprintf(w, "RESULT backend=%s events=%d duration=%s events_per_s=%.0f peak_rss_run=%s peak_rss_rebuild=%s peak_rss_after_fill=%s\n",
		d, r.Events, dur.Round(time.Millisecond), float64(r.Events)/dur.Seconds(), mib(max(hwmFill, hwmRebuild)), peakRebuild, mib(hwmFill))
	return nil
}

// openScratch opens a scratch database and returns the function that
// removes it. sqlite:DIR names the directory to make it in, not a file.
func openScratch(ctx context.Context, raw, prefix string, w io.Writer) (_ *sqlx.DB, _ func() error, err error) {
	cfg := scratchdb.Config{Prefix: prefix}
	switch {
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
	case strings.HasPrefix(raw, "sqlite:") && !strings.HasPrefix(raw, "sqlite::memory:"):
		cfg.Dir = strings.TrimPrefix(raw, "sqlite:")
		if cfg.Dir == "" {
			cfg.Dir = os.TempDir()
		}
		if fi, err := os.Stat(cfg.Dir); err != nil || !fi.IsDir() {
			return nil, nil, fmt.Errorf("sqlite:%s: name an existing directory for the scratch database (sqlite: alone uses %s)", cfg.Dir, os.TempDir())
		}
	default:
		return nil, nil, fmt.Errorf("-database-url %q: use postgres://… or sqlite:DIR", raw)
	}
	set, err := scratchdb.New(raw, &cfg)
	if err != nil {
		return nil, nil, err
	}
	remove := func() error {
		if err := set.Close(); err != nil {
			return err
		}
		fmt.Fprintf(w, "removed the scratch database\n")
		return nil
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, remove())
		}
	}()
	sdb, err := set.Create(ctx)
	if err != nil {
		return nil, nil, err
	}
	db, err := eventlog.OpenDB(ctx, sdb.URL)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(w, "%s: scratch database %s\n", set.Dialect(), sdb.Name)
	return db, func() error { return errors.Join(db.Close(), remove()) }, nil
}

// fillChunk is the number of events inserted per statement.
const fillChunk = 100_000

// fill inserts events 1..n straight in SQL, bypassing the hook: the view
// is left stale for the rebuild to derive. Events look like the probe
// results agents send: 70% agent_event, the rest spread over four other
// kinds; about 330-byte payloads (plus pad bytes); 5000 hosts; 8 rollouts.
//
// It differs from the fill of internal/bench on purpose: the other kinds
// make probe_failures' kind filter skip 30% of the log, the pad grows
// payloads to show that a rebuild's memory follows the page's bytes, and
// the event ids make rows as wide as a service's. The bench's log instead
// matches the events its write scenarios append and probefailures'
// benchmarks, so that its ratios compare with theirs.
func fill(ctx context.Context, db *sqlx.DB, d eventlog.Backend, n, pad int, w io.Writer) error {
	query, padArg := fillPostgres, fmt.Sprintf(", repeat('x', %d)", pad)
	if d == eventlog.SQLite {
		query, padArg = fillSQLite, fmt.Sprintf(", printf('%%.*c', %d, 'x')", pad)
	}
	padField := `,"pad":"%s"`
	if pad == 0 {
		padField, padArg = "", ""
	}
	query = strings.NewReplacer("{{pad_field}}", padField, "{{pad_arg}}", padArg).Replace(query)
	for first := 1; first <= n; first += fillChunk {
		last := min(first+fillChunk-1, n)
		if _, err := db.ExecContext(ctx, db.Rebind(query), first, last); err != nil {
			return fmt.Errorf("fill events %d-%d: %w", first, last, err)
		}
		if last%500_000 == 0 || last == n {
			fmt.Fprintf(w, "  filled %d\n", last)
		}
	}
	// Fresh statistics, as a long-lived log would have.
	analyze := `ANALYZE event_log`
	if d == eventlog.SQLite {
		analyze = `ANALYZE`
	}
	_, err := db.ExecContext(ctx, analyze)
	return err
}

const fillPostgres = `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
SELECT timestamptz '2026-05-16 01:00:00+00' + g * interval '1 millisecond',
       CASE WHEN g % 10 < 7 THEN 'agent_event' ELSE (ARRAY['plan_action', 'effect', 'gate_decision', 'verify_outcome'])[1 + g % 4] END,
       'host-' || lpad((g % 5000)::text, 5, '0') || '.eu-west-1.fleet.internal',
       'rollout-2026-05-16-' || lpad((g / 1000 % 8)::text, 2, '0'),
       format('{"type":"ProbeResult","mode":"enforce","status":"%s","probe_name":"probe-%s","observed_at":"2026-05-16T01:%s:00Z","sub_results":[{"control_id":"CIS-5.2.%s","framework":"cis","status":"fail"},{"control_id":"CIS-5.2.%s","framework":"cis","status":"pass"},{"control_id":"NIST-AC-%s","framework":"nist","status":"pass"}]{{pad_field}}}',
              CASE WHEN g % 2 = 0 THEN 'fail' ELSE 'pass' END, g % 8, lpad((g % 60)::text, 2, '0'), g % 30, (g + 7) % 30, g % 25{{pad_arg}})::json,
       'evt-' || g
FROM generate_series($1::bigint, $2::bigint) AS g`

const fillSQLite = `WITH RECURSIVE s(g) AS (SELECT ? UNION ALL SELECT g + 1 FROM s WHERE g < ?)
INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
SELECT strftime('%Y-%m-%dT%H:%M:%S', 1778893200 + g / 1000, 'unixepoch') || printf('.%06dZ', (g % 1000) * 1000),
       CASE WHEN g % 10 < 7 THEN 'agent_event' ELSE CASE g % 4 WHEN 0 THEN 'plan_action' WHEN 1 THEN 'effect' WHEN 2 THEN 'gate_decision' ELSE 'verify_outcome' END END,
       printf('host-%05d.eu-west-1.fleet.internal', g % 5000),
       printf('rollout-2026-05-16-%02d', g / 1000 % 8),
       printf('{"type":"ProbeResult","mode":"enforce","status":"%s","probe_name":"probe-%d","observed_at":"2026-05-16T01:%02d:00Z","sub_results":[{"control_id":"CIS-5.2.%d","framework":"cis","status":"fail"},{"control_id":"CIS-5.2.%d","framework":"cis","status":"pass"},{"control_id":"NIST-AC-%d","framework":"nist","status":"pass"}]{{pad_field}}}',
              CASE WHEN g % 2 = 0 THEN 'fail' ELSE 'pass' END, g % 8, g % 60, g % 30, (g + 7) % 30, g % 25{{pad_arg}}),
       'evt-' || g
FROM s`

// seqView is an insert-only projection with one row per event, keyed by
// (and referencing) its seq.
type seqView struct{}

const viewColumns = 5

// maxParams is the most bind parameters one statement may carry.
var maxParams = map[eventlog.Backend]int{eventlog.Postgres: 65535, eventlog.SQLite: 32766}

func (seqView) Name() string     { return "rebuildmem_view" }
func (seqView) Version() int     { return 1 }
func (seqView) Tables() []string { return []string{"rebuildmem_view"} }

func (v seqView) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	return v.ApplyBatch(ctx, tx, []eventlog.Event{ev})
}

// ApplyBatch writes the rows in multi-row INSERTs, each within the
// dialect's bound-parameter limit.
func (seqView) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	d, err := eventlog.BackendOf(tx)
	if err != nil {
		return err
	}
	perStmt := maxParams[d] / viewColumns
	var sb strings.Builder
	args := make([]any, 0, min(len(events), perStmt)*viewColumns)
	for len(events) > 0 {
		chunk := events[:min(len(events), perStmt)]
		events = events[len(chunk):]
		sb.Reset()
		args = args[:0]
		sb.WriteString(`INSERT INTO rebuildmem_view (event_log_seq, kind, host_id, rollout_id, payload_len) VALUES `)
		for i, ev := range chunk {
			if i > 0 {
				sb.WriteString(", ")
			}
			if d == eventlog.Postgres {
				n := i*viewColumns + 1
				sb.WriteString("($" + strconv.Itoa(n) + ", $" + strconv.Itoa(n+1) + ", $" + strconv.Itoa(n+2) + ", $" + strconv.Itoa(n+3) + ", $" + strconv.Itoa(n+4) + ")")
			} else {
				sb.WriteString("(?, ?, ?, ?, ?)")
			}
			args = append(args, ev.Seq, string(ev.Kind), ev.HostID, ev.RolloutID, len(ev.Payload))
		}
		if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
			return projection.EventError(chunk[0].Seq, err)
		}
	}
	return nil
}

func (seqView) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM rebuildmem_view`)
	return err
}

func (seqView) Migrations() migrations.Set {
	const up = `CREATE TABLE rebuildmem_view (
    event_log_seq BIGINT PRIMARY KEY REFERENCES event_log (seq),
    kind          TEXT NOT NULL,
    host_id       TEXT NOT NULL,
    rollout_id    TEXT NOT NULL,
    payload_len   INTEGER NOT NULL
);`
	files := fstest.MapFS{"00001_rebuildmem_view.sql": {Data: []byte("-- +goose Up\n" + up + "\n-- +goose Down\nDROP TABLE rebuildmem_view;\n")}}
	return migrations.Set{Postgres: files, SQLite: files}
}

var (
	_ projection.BatchApplier = seqView{}
	_ projection.Migrator     = seqView{}
	_ projection.Tabler       = seqView{}
)

// procStatus returns the named fields of /proc/self/status in bytes.
func procStatus(fields ...string) map[string]uint64 {
	out := make(map[string]uint64, len(fields))
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for _, want := range fields {
			if name == want {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				out[name] = kb << 10
			}
		}
	}
	return out
}

// report prints VmHWM, VmRSS and the Go heap at a point of the run and
// returns VmHWM.
func report(w io.Writer, at string) uint64 {
	st := procStatus("VmHWM", "VmRSS")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(w, "%-16s VmHWM %s  VmRSS %s  Go heap in use %s  Go sys %s\n",
		at+":", mib(st["VmHWM"]), mib(st["VmRSS"]), mib(ms.HeapInuse), mib(ms.Sys))
	return st["VmHWM"]
}

// resetHWM resets VmHWM to the current RSS (Linux 4.0+).
func resetHWM() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

type peaks struct{ rss, heap, goTotal uint64 }

type sampler struct {
	done chan struct{}
	out  chan peaks
}

// startSampler records the highest RSS and Go memory seen until stop.
func startSampler(every time.Duration) *sampler {
	s := &sampler{done: make(chan struct{}), out: make(chan peaks, 1)}
	go func() {
		samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}
		var p peaks
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			metrics.Read(samples)
			p.heap = max(p.heap, samples[0].Value.Uint64())
			p.goTotal = max(p.goTotal, samples[1].Value.Uint64())
			p.rss = max(p.rss, procStatus("VmRSS")["VmRSS"])
			select {
			case <-s.done:
				s.out <- p
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() peaks {
	close(s.done)
	return <-s.out
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
