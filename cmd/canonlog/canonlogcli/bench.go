package canonlogcli

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtime"
	"github.com/canonlog/canonlog/internal/dialect"
	"github.com/canonlog/canonlog/internal/redact"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// Scenario names, in the order they run.
const (
	scenarioAppend1     = "append-1"
	scenarioAppend16    = "append-16"
	scenarioAppendBatch = "append-batch"
	scenarioRead        = "read"
	scenarioRebuild     = "rebuild"
	scenarioQuery       = "query"
)

var benchScenarios = []string{scenarioAppend1, scenarioAppend16, scenarioAppendBatch, scenarioRead, scenarioRebuild, scenarioQuery}

// benchTargets are the ratios (canonlog ÷ raw) each scenario should reach
// (issue 7).
var benchTargets = map[string]float64{
	scenarioAppend1: 0.85, scenarioAppend16: 0.85, scenarioAppendBatch: 0.7,
	scenarioRead: 0.8, scenarioRebuild: 1.0, scenarioQuery: 0.9,
}

type benchOptions struct {
	scenarios  []string
	events     int
	clients    int
	rounds     int
	output     string
	cpuProfile string
}

func newBenchCommand(g *globals) *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench [--scenario NAME…] [--events N] [--clients N] [--rounds N]",
		Short: "Measure canonlog against hand-written SQL on this database",
		Long: `bench measures each canonlog path next to a raw database/sql baseline doing
the same work, alternately for several rounds, and prints the median rates
and their ratio (canonlog ÷ raw) against the target ratio.

It never touches the configured database's data: on PostgreSQL it works in
scratch schemas canonlog_bench_<random>_<n> that it drops at the end (also
on error or interrupt); on SQLite in a scratch directory next to the
configured file (or in $TMPDIR), removed at the end.

Scenarios (` + strings.Join(benchScenarios, ", ") + `) and their sizes, from --events N:
  append-1      N/40 single appends per side per round, one client
  append-16     N/20 single appends per side per round from --clients clients
  append-batch  N/2000 batches of 1,000 probe results per side per round
  read          streams a log of N events
  rebuild       rebuilds probe_failures over a log of N events
  query         N/100 sets of five gate queries per side per round`,
		Example: `  canonlog bench --database-url 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
  canonlog bench --scenario rebuild --events 1000000
  canonlog bench --database-url sqlite:canonlog.db --scenario read,query -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(o.scenarios) == 0 {
				o.scenarios = benchScenarios
			}
			for _, s := range o.scenarios {
				if !slices.Contains(benchScenarios, s) {
					return usagef("--scenario %q: use %s", s, strings.Join(benchScenarios, ", "))
				}
			}
			switch {
			case o.events < 1:
				return usagef("--events is %d, must be at least 1", o.events)
			case o.clients < 1 || o.clients > 256:
				return usagef("--clients is %d, must be between 1 and 256", o.clients)
			case o.rounds < 1 || o.rounds > 100:
				return usagef("--rounds is %d, must be between 1 and 100", o.rounds)
			}
			if err := checkOutput(o.output, outputTable, outputJSON); err != nil {
				return err
			}
			return runBench(cmd.Context(), g, o)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&o.scenarios, "scenario", nil, "scenarios to run (repeat or comma-separate; default all): "+strings.Join(benchScenarios, ", "))
	fl.IntVar(&o.events, "events", 20000, "size of the run: log size for read, rebuild and query; appends are scaled from it")
	fl.IntVar(&o.clients, "clients", 16, "concurrent clients of append-16")
	fl.IntVar(&o.rounds, "rounds", 5, "rounds per scenario; each round runs both sides, in alternating order")
	fl.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run (both sides, client side only) to this file, for go tool pprof")
	addOutputFlag(cmd, &o.output, outputTable, outputJSON)
	return cmd
}

// benchReport is the whole run, as printed.
type benchReport struct {
	Backend   string          `json:"backend"`
	Scratch   string          `json:"scratch"` // PostgreSQL: the prefix of the scratch schemas; SQLite: the scratch directory
	Events    int             `json:"events"`
	Rounds    int             `json:"rounds"`
	Clients   int             `json:"clients"`
	Scenarios []scenarioStats `json:"scenarios"`
}

// scenarioStats is one scenario's figures: medians over the rounds.
type scenarioStats struct {
	Name         string    `json:"name"`
	Unit         string    `json:"unit"`
	PerRound     int       `json:"per_round"` // events (or queries) each side handles per round
	Canonlog     float64   `json:"canonlog_per_second"`
	Raw          float64   `json:"raw_per_second"`
	Ratio        float64   `json:"ratio"` // median of the per-round ratios
	RatioMin     float64   `json:"ratio_min"`
	RatioMax     float64   `json:"ratio_max"`
	Target       float64   `json:"target"`
	Met          bool      `json:"met"`
	CanonlogRuns []float64 `json:"canonlog_rounds"`
	RawRuns      []float64 `json:"raw_rounds"`
	PeakRSS      uint64    `json:"peak_rss_bytes,omitempty"` // rebuild: the process's VmHWM during canonlog's rebuilds
}

func runBench(ctx context.Context, g *globals, o benchOptions) (err error) {
	sc, err := newScratch(ctx, g.resolveDatabaseURL())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sc.close()) }()
	fmt.Fprintf(g.stderr, "bench: %s, scratch %s\n", sc.d, sc.name())
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	r := &benchRunner{sc: sc, o: o, stderr: g.stderr}
	rep := benchReport{Backend: sc.d.String(), Scratch: sc.id(), Events: o.events, Rounds: o.rounds, Clients: o.clients}
	for _, name := range benchScenarios {
		if !slices.Contains(o.scenarios, name) {
			continue
		}
		st, err := r.run(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("bench interrupted during %s", name)
			}
			return fmt.Errorf("bench %s: %w", name, err)
		}
		fmt.Fprintf(g.stderr, "bench: %s done: ratio %.2f\n", name, st.Ratio)
		rep.Scenarios = append(rep.Scenarios, st)
	}
	if o.output == outputJSON {
		return writeJSON(g.stdout, rep)
	}
	printBench(g.stdout, rep)
	return nil
}

func printBench(w io.Writer, rep benchReport) {
	fmt.Fprintf(w, "canonlog bench on %s: %d rounds per scenario, medians; ratio = canonlog ÷ raw\n", rep.Backend, rep.Rounds)
	tw := bufio.NewWriter(w)
	fmt.Fprintf(tw, "%-13s %-7s %9s %12s %12s %6s %11s %7s %4s %s\n", "SCENARIO", "UNIT", "PER_ROUND", "CANONLOG/S", "RAW/S", "RATIO", "RANGE", "TARGET", "MET", "PEAK_RSS")
	for _, s := range rep.Scenarios {
		met, rss := "no", ""
		if s.Met {
			met = "yes"
		}
		if s.PeakRSS > 0 {
			rss = fmt.Sprintf("%.1f MiB", float64(s.PeakRSS)/(1<<20))
		}
		line := fmt.Sprintf("%-13s %-7s %9d %12s %12s %6.2f %11s %7s %4s %s", s.Name, s.Unit, s.PerRound,
			formatRate(s.Canonlog), formatRate(s.Raw), s.Ratio, fmt.Sprintf("%.2f-%.2f", s.RatioMin, s.RatioMax),
			fmt.Sprintf(">= %.2f", s.Target), met, rss)
		fmt.Fprintln(tw, strings.TrimRight(line, " "))
	}
	_ = tw.Flush()
}

// scratch is where a bench run writes: PostgreSQL schemas named
// prefix_1, prefix_2, … or SQLite files in a directory of their own.
type scratch struct {
	d      dialect.Dialect
	admin  *sqlx.DB // PostgreSQL: a pool on the configured database, for CREATE/DROP SCHEMA
	base   *url.URL // PostgreSQL: the configured URL
	prefix string   // PostgreSQL schema prefix
	dir    string   // SQLite directory
	n      int
	dbs    []*benchDB
	made   []string // PostgreSQL schemas created
}

func newScratch(ctx context.Context, raw string) (*scratch, error) {
	var buf [6]byte
	_, _ = rand.Read(buf[:])
	suffix := hex.EncodeToString(buf[:])
	if strings.HasPrefix(raw, "postgres://") || strings.HasPrefix(raw, "postgresql://") {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("database URL %s is malformed: %s", redact.URL(raw), redact.ParseReason(err))
		}
		admin, err := eventlog.OpenDB(ctx, raw)
		if err != nil {
			return nil, fmt.Errorf("%w (check --database-url, CANONLOG_DATABASE_URL or DATABASE_URL, and that the database is running)", err)
		}
		return &scratch{d: dialect.Postgres, admin: admin, base: u, prefix: "canonlog_bench_" + suffix}, nil
	}
	// Next to the configured file, so the scratch database lives on the
	// same disk; sqlite::memory: and file: URLs use $TMPDIR.
	parent := os.TempDir()
	if path, ok := sqliteFile(raw); ok {
		parent = filepath.Dir(path)
	}
	dir, err := os.MkdirTemp(parent, "canonlog-bench-"+suffix+"-")
	if err != nil {
		return nil, fmt.Errorf("scratch directory for the SQLite bench: %w", err)
	}
	return &scratch{d: dialect.SQLite, dir: dir}, nil
}

// id is the scratch schemas' prefix or the scratch directory.
func (s *scratch) id() string {
	if s.d == dialect.Postgres {
		return s.prefix
	}
	return s.dir
}

// name says where the run writes, for output.
func (s *scratch) name() string {
	if s.d == dialect.Postgres {
		return "schemas " + s.prefix + "_*"
	}
	return "directory " + s.dir
}

// benchDB is one fresh, migrated scratch database.
type benchDB struct {
	db   *sqlx.DB
	d    dialect.Dialect
	reg  *projection.Registry
	log  *eventlog.Log // appends through the registry: probe_failures inline
	bare *eventlog.Log // no hook: the core alone
}

// fresh creates, opens and migrates a new scratch database.
func (s *scratch) fresh(ctx context.Context) (*benchDB, error) {
	s.n++
	var dbURL string
	if s.d == dialect.Postgres {
		schema := fmt.Sprintf("%s_%d", s.prefix, s.n)
		if _, err := s.admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
			return nil, fmt.Errorf("create scratch schema: %w", err)
		}
		s.made = append(s.made, schema)
		u := *s.base
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		dbURL = u.String()
	} else {
		dbURL = "sqlite:" + filepath.Join(s.dir, fmt.Sprintf("bench-%d.db", s.n))
	}
	db, err := eventlog.OpenDB(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	b := &benchDB{db: db, d: s.d, reg: projection.Must(projection.NewRegistry(probefailures.New()))}
	s.dbs = append(s.dbs, b)
	if b.log, err = eventlog.New(db, &eventlog.Config{Hook: b.reg}); err != nil {
		return nil, err
	}
	if b.bare, err = eventlog.New(db, nil); err != nil {
		return nil, err
	}
	if _, err := projection.Migrate(ctx, b.log, b.reg); err != nil {
		return nil, fmt.Errorf("migrate scratch database: %w", err)
	}
	return b, nil
}

// close closes every scratch pool and removes every scratch database,
// with a context of its own: it also runs after an interrupt.
func (s *scratch) close() error {
	var errs []error
	for _, b := range s.dbs {
		if b.log != nil {
			_ = b.log.Close()
		}
		if b.bare != nil {
			_ = b.bare.Close()
		}
		errs = append(errs, b.db.Close())
	}
	if s.d == dialect.Postgres {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, schema := range s.made {
			var err error
			for range 20 { // connections may still be closing
				if _, err = s.admin.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("drop scratch schema %s: %w", schema, err))
			}
		}
		errs = append(errs, s.admin.Close())
	} else if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove scratch directory: %w", err))
	}
	return errors.Join(errs...)
}

type benchRunner struct {
	sc     *scratch
	o      benchOptions
	stderr io.Writer
	filled *benchDB // the shared log of read, rebuild and query, filled once
}

// side is one side's work for one round: it returns how many events (or
// queries) it handled.
type side func(ctx context.Context) (int, error)

// alternate runs the two sides round after round, the first side of each
// round alternating, with an untimed garbage collection before every turn
// so neither pays for the other's garbage, and returns the stats.
func (r *benchRunner) alternate(ctx context.Context, name, unit string, ours, raw side) (scenarioStats, error) {
	st := scenarioStats{Name: name, Unit: unit, Target: benchTargets[name]}
	var ratios []float64
	timed := func(f side) (float64, int, error) {
		runtime.GC()
		start := time.Now()
		n, err := f(ctx)
		return float64(n) / time.Since(start).Seconds(), n, err
	}
	for round := range r.o.rounds {
		sides := []side{ours, raw}
		if round%2 == 1 {
			sides = []side{raw, ours}
		}
		var rates [2]float64
		for i, f := range sides {
			rate, n, err := timed(f)
			if err != nil {
				return st, err
			}
			rates[i], st.PerRound = rate, n
		}
		if round%2 == 1 {
			rates[0], rates[1] = rates[1], rates[0]
		}
		st.CanonlogRuns = append(st.CanonlogRuns, rates[0])
		st.RawRuns = append(st.RawRuns, rates[1])
		ratios = append(ratios, rates[0]/rates[1])
	}
	st.Canonlog, st.Raw, st.Ratio = median(st.CanonlogRuns), median(st.RawRuns), median(ratios)
	st.RatioMin, st.RatioMax = slices.Min(ratios), slices.Max(ratios)
	st.Met = st.Ratio >= st.Target
	return st, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func (r *benchRunner) run(ctx context.Context, name string) (scenarioStats, error) {
	switch name {
	case scenarioAppend1:
		return r.appends(ctx, name, 1, max(r.o.events/40, 10))
	case scenarioAppend16:
		return r.appends(ctx, name, r.o.clients, max(r.o.events/20, r.o.clients))
	case scenarioAppendBatch:
		return r.appendBatch(ctx, max(r.o.events/2000, 1))
	case scenarioRead:
		return r.read(ctx)
	case scenarioRebuild:
		return r.rebuild(ctx)
	default:
		return r.query(ctx)
	}
}

// probeEntry is event i of the write scenarios: an agent event like the
// fill's, a third of them failing enforce results with three failing
// controls.
func probeEntry(i int, eventID string) eventlog.Entry {
	status := "pass"
	if i%3 == 0 {
		status = "fail"
	}
	return eventlog.Entry{
		Kind: eventlog.KindAgentEvent, TS: benchEpoch.Add(time.Duration(i) * time.Second),
		HostID: "host-" + strconv.Itoa(i%2000), RolloutID: "rollout-" + strconv.Itoa(i%40), EventID: eventID,
		Payload: json.RawMessage(fmt.Sprintf(`{"type":"ProbeResult","mode":"enforce","status":%q,"probe_name":"probe-%d","observed_at":"2026-05-16T01:00:00Z","sub_results":[`+
			`{"control_id":"C-%d","framework":"cis","status":%q},{"control_id":"C-%d","framework":"cis","status":%q},{"control_id":"N-%d","framework":"nist","status":%q}]}`,
			status, i%7, i%50, status, i%50+1, status, i%20, status)),
	}
}

var benchEpoch = time.Date(2026, 5, 16, 0, 0, 0, 0, time.UTC)

// rawTS is how the raw side sends a timestamp: PostgreSQL takes a
// time.Time; SQLite's schema wants fixed-width UTC text.
func rawTS(d dialect.Dialect, t time.Time) any {
	if d == dialect.SQLite {
		return t.UTC().Format("2006-01-02T15:04:05.000000Z")
	}
	return t
}

// appends measures single appends from clients goroutines, per events per
// side per round. Each side appends into a fresh database of its own (the
// canonlog side through a log without hook — the core's cost, as in
// eventlog's benchmarks), so table and index sizes grow alike on both.
// Both carry an event id, so both maintain the unique index on it.
func (r *benchRunner) appends(ctx context.Context, name string, clients, per int) (scenarioStats, error) {
	ours, err := r.sc.fresh(ctx)
	if err != nil {
		return scenarioStats{}, err
	}
	theirs, err := r.sc.fresh(ctx)
	if err != nil {
		return scenarioStats{}, err
	}
	// The raw INSERT is prepared once, as canonlog prepares its own:
	// unprepared, lib/pq would spend a second round trip per INSERT.
	stmt, err := theirs.db.PreparexContext(ctx, theirs.db.Rebind(`INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
VALUES (?, ?, ?, ?, ?, ?) RETURNING seq`))
	if err != nil {
		return scenarioStats{}, err
	}
	defer stmt.Close()
	var nOurs, nRaw int
	ourAppend := func(ctx context.Context, i int) error {
		_, err := ours.bare.Append(ctx, probeEntry(i, "evt-"+strconv.Itoa(i)))
		return err
	}
	rawAppend := func(ctx context.Context, i int) error {
		e := probeEntry(i, "evt-"+strconv.Itoa(i))
		tx, err := theirs.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		var seq int64
		if err := tx.StmtContext(ctx, stmt.Stmt).QueryRowContext(ctx, rawTS(theirs.d, e.TS), string(e.Kind), e.HostID, e.RolloutID, string(e.Payload), e.EventID).Scan(&seq); err != nil {
			return err
		}
		return tx.Commit()
	}
	// Untimed warm-up: opens the clients' connections and prepares.
	if err := fanOut(ctx, clients, clients, &nOurs, ourAppend); err != nil {
		return scenarioStats{}, err
	}
	if err := fanOut(ctx, clients, clients, &nRaw, rawAppend); err != nil {
		return scenarioStats{}, err
	}
	return r.alternate(ctx, name, "events",
		func(ctx context.Context) (int, error) { return per, fanOut(ctx, clients, per, &nOurs, ourAppend) },
		func(ctx context.Context) (int, error) { return per, fanOut(ctx, clients, per, &nRaw, rawAppend) })
}

// fanOut calls f n times from clients goroutines with numbers *next,
// *next+1, … and advances *next.
func fanOut(ctx context.Context, clients, n int, next *int, f func(context.Context, int) error) error {
	first := *next
	*next += n
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for c := range clients {
		wg.Go(func() {
			for i := c; i < n; i += clients {
				if err := f(ctx, first+i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

const benchBatch = 1000

// appendBatch measures batches of 1,000 probe results with probe_failures
// derived in the same transaction. Each side writes into a fresh database
// of its own. The raw side is what one would write by hand: on PostgreSQL
// COPY of the events then one set-based INSERT … SELECT deriving their
// rows; on SQLite (no COPY) one prepared INSERT per event then the same
// set-based insert; one transaction per batch.
func (r *benchRunner) appendBatch(ctx context.Context, batches int) (scenarioStats, error) {
	ours, err := r.sc.fresh(ctx)
	if err != nil {
		return scenarioStats{}, err
	}
	theirs, err := r.sc.fresh(ctx)
	if err != nil {
		return scenarioStats{}, err
	}
	var nOurs, nRaw int
	ourBatch := func(ctx context.Context) error {
		batch := make([]eventlog.Entry, benchBatch)
		for j := range batch {
			batch[j] = probeEntry(nOurs+j, "")
		}
		nOurs += benchBatch
		_, err := ours.log.AppendBatch(ctx, batch)
		return err
	}
	rawBatch := func(ctx context.Context) error {
		batch := make([]eventlog.Entry, benchBatch)
		for j := range batch {
			batch[j] = probeEntry(nRaw+j, "")
		}
		nRaw += benchBatch
		return rawAppendBatch(ctx, theirs, batch)
	}
	if err := ourBatch(ctx); err != nil {
		return scenarioStats{}, err
	}
	if err := rawBatch(ctx); err != nil {
		return scenarioStats{}, err
	}
	loop := func(f func(context.Context) error) side {
		return func(ctx context.Context) (int, error) {
			for range batches {
				if err := f(ctx); err != nil {
					return 0, err
				}
			}
			return batches * benchBatch, nil
		}
	}
	return r.alternate(ctx, scenarioAppendBatch, "events", loop(ourBatch), loop(rawBatch))
}

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
	// observed_at is rewritten into the schema's fixed-width text; the
	// bench's payloads carry whole seconds.
	deriveRowsSQLite = `INSERT INTO probe_failures (event_log_seq, rollout_id, host_id, probe_name, control_id, framework, observed_at)
SELECT e.seq, e.rollout_id, e.host_id, json_extract(e.payload, '$.probe_name'), json_extract(s.value, '$.control_id'),
       json_extract(s.value, '$.framework'),
       COALESCE(strftime('%Y-%m-%dT%H:%M:%S', json_extract(e.payload, '$.observed_at')) || '.000000Z', e.ts)
FROM event_log e, json_each(e.payload, '$.sub_results') AS s
WHERE e.seq > ? AND e.kind = 'agent_event' AND json_extract(e.payload, '$.type') = 'ProbeResult'
  AND json_extract(e.payload, '$.mode') = 'enforce' AND json_extract(e.payload, '$.status') = 'fail'
  AND json_extract(s.value, '$.status') = 'fail'`
)

func deriveRows(d dialect.Dialect) string {
	if d == dialect.SQLite {
		return deriveRowsSQLite
	}
	return deriveRowsPostgres
}

func rawAppendBatch(ctx context.Context, b *benchDB, batch []eventlog.Entry) error {
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var last int64
	if err := tx.GetContext(ctx, &last, `SELECT COALESCE(MAX(seq), 0) FROM event_log`); err != nil {
		return err
	}
	query := `COPY event_log (ts, kind, host_id, rollout_id, payload) FROM STDIN`
	if b.d == dialect.SQLite {
		query = `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload) VALUES (?, ?, ?, ?, ?)`
	}
	stmt, err := tx.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	for _, e := range batch {
		if _, err := stmt.ExecContext(ctx, rawTS(b.d, e.TS), string(e.Kind), e.HostID, e.RolloutID, string(e.Payload)); err != nil {
			_ = stmt.Close()
			return err
		}
	}
	if b.d == dialect.Postgres {
		if _, err := stmt.ExecContext(ctx); err != nil { // ends the COPY
			_ = stmt.Close()
			return err
		}
	}
	if err := stmt.Close(); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, deriveRows(b.d), last); err != nil {
		return err
	}
	return tx.Commit()
}

// fill returns the shared log of the read, rebuild and query scenarios:
// N agent events inserted in SQL (a third failing enforce results with
// three failing controls, 40 rollouts, 2,000 hosts, as probefailures'
// benchmarks), probe_failures derived by one untimed rebuild, statistics
// fresh and the WAL checkpointed. Reads change nothing and the rebuilds
// of both sides leave the same rows, so the sides share it.
func (r *benchRunner) fill(ctx context.Context) (*benchDB, error) {
	if r.filled != nil {
		return r.filled, nil
	}
	b, err := r.sc.fresh(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	query, post := fillPostgresSQL, []string{`VACUUM (ANALYZE) event_log`, `CHECKPOINT`}
	if b.d == dialect.SQLite {
		query, post = fillSQLiteSQL, []string{`ANALYZE`, `PRAGMA wal_checkpoint(TRUNCATE)`}
	}
	const chunk = 100000
	for first := 1; first <= r.o.events; first += chunk {
		if _, err := b.db.ExecContext(ctx, b.db.Rebind(query), first, min(first+chunk-1, r.o.events)); err != nil {
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
	fmt.Fprintf(r.stderr, "bench: filled %d events in %s\n", r.o.events, time.Since(start).Round(time.Millisecond))
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

// read measures streaming the whole log: log.Events against the keyset
// loop one would write, with the same page size, scanning into the types
// an Event holds.
func (r *benchRunner) read(ctx context.Context) (scenarioStats, error) {
	b, err := r.fill(ctx)
	if err != nil {
		return scenarioStats{}, err
	}
	ours := func(ctx context.Context) (int, error) {
		n := 0
		for _, err := range b.bare.Events(ctx, 0, nil) {
			if err != nil {
				return n, err
			}
			n++
		}
		return n, nil
	}
	query := b.db.Rebind(`SELECT seq, ts, kind, host_id, rollout_id, payload, event_id FROM event_log WHERE seq > ? ORDER BY seq LIMIT ?`)
	raw := func(ctx context.Context) (int, error) {
		var after int64
		n := 0
		for {
			rows, err := b.db.QueryContext(ctx, query, after, eventlog.DefaultPageSize)
			if err != nil {
				return n, err
			}
			got := 0
			for rows.Next() {
				var (
					ts                     time.Time
					kind                   string
					host, rollout, eventID sql.NullString
					payload                []byte
				)
				if err := rows.Scan(&after, dbtime.Dest{T: &ts}, &kind, &host, &rollout, &payload, &eventID); err != nil {
					_ = rows.Close()
					return n, err
				}
				got++
			}
			if err := errors.Join(rows.Close(), rows.Err()); err != nil {
				return n, err
			}
			n += got
			if got < eventlog.DefaultPageSize {
				return n, nil
			}
		}
	}
	if _, err := ours(ctx); err != nil { // warms the caches
		return scenarioStats{}, err
	}
	return r.alternate(ctx, scenarioRead, "events", ours, raw)
}

// rebuild measures rebuilding probe_failures over the filled log:
// projection.Rebuild against DELETE plus the set-based INSERT … SELECT in
// one transaction. Both leave the same rows, so they share the log.
// Rates are log events per second. The peak RSS is the process's VmHWM,
// reset before each canonlog rebuild where Linux allows.
func (r *benchRunner) rebuild(ctx context.Context) (scenarioStats, error) {
	b, err := r.fill(ctx)
	if err != nil {
		return scenarioStats{}, err
	}
	var peak uint64
	ours := func(ctx context.Context) (int, error) {
		_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
		_, err := projection.Rebuild(ctx, b.log, b.reg, &projection.RebuildOptions{Names: []string{probefailures.Name}})
		peak = max(peak, vmHWM())
		return r.o.events, err
	}
	raw := func(ctx context.Context) (int, error) {
		tx, err := b.db.BeginTxx(ctx, nil)
		if err != nil {
			return 0, err
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx, `DELETE FROM probe_failures`); err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, deriveRows(b.d), 0); err != nil {
			return 0, err
		}
		return r.o.events, tx.Commit()
	}
	st, err := r.alternate(ctx, scenarioRebuild, "events", ours, raw)
	st.PeakRSS = peak
	return st, err
}

// vmHWM returns the process's peak resident set size, 0 where
// /proc/self/status is missing.
func vmHWM() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// query measures the compliance gate's queries and a query by host: a set
// is probefailures.Store's Failures (a page of 100), FailingHosts,
// CountFailingHosts and Summary for one rollout plus Log.Query of one
// host's events (up to 100), against the same SELECTs by hand, unprepared
// as canonlog sends them, scanned into the same Go types. Rates are
// queries per second.
func (r *benchRunner) query(ctx context.Context) (scenarioStats, error) {
	b, err := r.fill(ctx)
	if err != nil {
		return scenarioStats{}, err
	}
	sets := max(r.o.events/100, 10)
	store := probefailures.NewStore(b.db)
	ours := func(ctx context.Context) (int, error) {
		for i := range sets {
			rollout, control, host := benchQueryArgs(i)
			if _, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: rollout, Limit: 100}); err != nil {
				return 0, err
			}
			if _, err := store.FailingHosts(ctx, rollout, control); err != nil {
				return 0, err
			}
			if _, err := store.CountFailingHosts(ctx, rollout); err != nil {
				return 0, err
			}
			if _, err := store.Summary(ctx, rollout); err != nil {
				return 0, err
			}
			if _, err := b.bare.Query(ctx, eventlog.Filter{HostID: host, Limit: 100}); err != nil {
				return 0, err
			}
		}
		return sets * 5, nil
	}
	db := b.db
	var (
		qFailures = db.Rebind(`SELECT event_log_seq, COALESCE(rollout_id, ''), host_id, probe_name, control_id, framework, observed_at
FROM probe_failures WHERE rollout_id = ? ORDER BY host_id, control_id, event_log_seq, framework LIMIT ?`)
		qHosts   = db.Rebind(`SELECT DISTINCT host_id FROM probe_failures WHERE rollout_id = ? AND control_id = ? ORDER BY host_id`)
		qCount   = db.Rebind(`SELECT COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = ?`)
		qSummary = db.Rebind(`SELECT control_id, framework, COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = ?
GROUP BY control_id, framework ORDER BY control_id, framework`)
		qByHost = db.Rebind(`SELECT seq, ts, kind, host_id, rollout_id, payload, event_id FROM event_log WHERE host_id = ? ORDER BY seq LIMIT ?`)
	)
	type failure struct {
		seq                                      int64
		rollout, host, probe, control, framework string
		observed                                 time.Time
	}
	type summary struct {
		control, framework string
		hosts              int
	}
	raw := func(ctx context.Context) (int, error) {
		for i := range sets {
			rollout, control, host := benchQueryArgs(i)
			fs := make([]failure, 0, 100)
			err := scanAll(ctx, db, qFailures, []any{rollout, 100}, func(rows *sql.Rows) error {
				var f failure
				err := rows.Scan(&f.seq, &f.rollout, &f.host, &f.probe, &f.control, &f.framework, dbtime.Dest{T: &f.observed})
				fs = append(fs, f)
				return err
			})
			if err != nil {
				return 0, err
			}
			hosts := []string{}
			err = scanAll(ctx, db, qHosts, []any{rollout, control}, func(rows *sql.Rows) error {
				var h string
				err := rows.Scan(&h)
				hosts = append(hosts, h)
				return err
			})
			if err != nil {
				return 0, err
			}
			var n int
			if err := db.QueryRowContext(ctx, qCount, rollout).Scan(&n); err != nil {
				return 0, err
			}
			sums := []summary{}
			err = scanAll(ctx, db, qSummary, []any{rollout}, func(rows *sql.Rows) error {
				var s summary
				err := rows.Scan(&s.control, &s.framework, &s.hosts)
				sums = append(sums, s)
				return err
			})
			if err != nil {
				return 0, err
			}
			evs := make([]eventlog.Event, 0, 100)
			err = scanAll(ctx, db, qByHost, []any{host, 100}, func(rows *sql.Rows) error {
				var (
					ev                     eventlog.Event
					kind                   string
					hostID, rolloutID, eid sql.NullString
					payload                []byte
				)
				err := rows.Scan(&ev.Seq, dbtime.Dest{T: &ev.TS}, &kind, &hostID, &rolloutID, &payload, &eid)
				ev.Kind, ev.HostID, ev.RolloutID, ev.EventID = eventlog.Kind(kind), hostID.String, rolloutID.String, eid.String
				ev.Payload = payload
				evs = append(evs, ev)
				return err
			})
			if err != nil {
				return 0, err
			}
		}
		return sets * 5, nil
	}
	if _, err := ours(ctx); err != nil { // warms the caches
		return scenarioStats{}, err
	}
	return r.alternate(ctx, scenarioQuery, "queries", ours, raw)
}

// benchQueryArgs spreads the query sets over rollouts, controls and hosts
// (host h reports only in rollout h % 40).
func benchQueryArgs(i int) (rollout, control, host string) {
	return "rollout-" + strconv.Itoa(i%40), "C-" + strconv.Itoa(i*7%50), "host-" + strconv.Itoa(i*37%2000)
}

func scanAll(ctx context.Context, db *sqlx.DB, query string, args []any, scan func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
