package eventlog_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// The documented queries (by host, by rollout, by kind, each with or
// without an AfterSeq cursor) are answered in seq order straight from an
// index: no Sort, no Seq Scan. Proven with EXPLAIN on the statements
// Log.Query really sends, captured at the driver, over 100,000 events; and
// likewise for Log.TailStart, which reads the same indexes backwards.
//
// Which index is the planner's call. For a selective value (a host, a small
// rollout, a rare kind) it must be the matching (column, seq) index, read
// forward with every condition in the index condition. For a value most
// events carry (a busy rollout, a common kind) walking the primary key and
// filtering finds a page sooner than random heap reads through the matching
// index do, and PostgreSQL rightly picks that: still seq order, no Sort.
// On the last page of a history, when fewer matches than the limit remain,
// it may fetch them through a bitmap on the matching index and sort those
// few rows.
func TestExplainQueries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	fillLog(t, db, 100_000, true)

	rec := &recorder{}
	log, err := eventlog.New(recordingDB(t, b.URL, rec), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })

	const (
		limit     = 100
		selective = "selective" // the matching index, no Sort
		dense     = "dense"     // the matching index or the primary key, no Sort
		lastPage  = "lastPage"  // as dense, or a bitmap on the matching index and a Sort of under a page
	)
	host := func(h string) eventlog.Filter { return eventlog.Filter{HostID: h} }
	rollout := func(r string) eventlog.Filter { return eventlog.Filter{RolloutID: r} }
	kind := func(k eventlog.Kind) eventlog.Filter { return eventlog.Filter{Kinds: []eventlog.Kind{k}} }
	cases := []struct {
		name   string
		filter eventlog.Filter
		after  int64
		want   string
		index  string
	}{
		{"Host", host("host-123"), 0, selective, "event_log_host_id_seq_idx"},
		{"HostAfterSeq", host("host-123"), 20_000, selective, "event_log_host_id_seq_idx"},
		{"HostLastPage", host("host-123"), 60_000, lastPage, "event_log_host_id_seq_idx"},
		{"Rollout", rollout("rollout-canary"), 0, selective, "event_log_rollout_id_seq_idx"},
		{"RolloutAfterSeq", rollout("rollout-canary"), 20_000, selective, "event_log_rollout_id_seq_idx"},
		{"Kind", kind(eventlog.KindGateDecision), 0, selective, "event_log_kind_seq_idx"},
		{"KindAfterSeq", kind(eventlog.KindGateDecision), 50_000, selective, "event_log_kind_seq_idx"},
		{"BusyRollout", rollout("rollout-17"), 0, dense, "event_log_rollout_id_seq_idx"},
		{"BusyRolloutAfterSeq", rollout("rollout-17"), 50_000, dense, "event_log_rollout_id_seq_idx"},
		{"CommonKind", kind(eventlog.KindEffect), 0, dense, "event_log_kind_seq_idx"},
		{"CommonKindAfterSeq", kind(eventlog.KindEffect), 50_000, dense, "event_log_kind_seq_idx"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.filter
			f.AfterSeq, f.Limit = c.after, limit
			column, value := filterColumn(f)

			// The plain-SQL truth the query is checked against.
			var count int
			require.NoError(t, db.Get(&count, `SELECT COUNT(*) FROM event_log WHERE seq > $1 AND `+column+` = $2`, c.after, value))
			var want []int64
			require.NoError(t, db.Select(&want, `SELECT seq FROM event_log WHERE seq > $1 AND `+column+` = $2
ORDER BY seq LIMIT $3`, c.after, value, limit))
			if c.want == lastPage {
				require.Less(t, count, limit, "the fill should leave less than a page")
			} else {
				require.Greater(t, count, limit, "the fill should leave more than a page")
			}

			conds := []string{column + " = "}
			if c.after > 0 {
				conds = append(conds, "seq > ")
			}
			// checkPlan requires plan to read the matches in seq order
			// (direction "Forward" or "Backward") from an index, as the
			// comment above the test says.
			checkPlan := func(plan planNode, direction string) {
				t.Helper()
				require.Equal(t, "Limit", plan.NodeType, "plan:\n%s", plan)
				require.Len(t, plan.Plans, 1, "plan:\n%s", plan)
				require.Empty(t, plan.find("Seq Scan"), "plan:\n%s", plan)
				top := plan.Plans[0]
				switch {
				case top.NodeType == "Sort" && c.want == lastPage:
					// Only ever the few remaining rows, found through the
					// matching index.
					require.LessOrEqual(t, top.PlanRows, float64(limit), "plan:\n%s", plan)
					bitmaps := top.find("Bitmap Index Scan")
					require.Len(t, bitmaps, 1, "plan:\n%s", plan)
					require.Equal(t, c.index, bitmaps[0].IndexName, "plan:\n%s", plan)
					for _, cond := range conds {
						require.Contains(t, bitmaps[0].IndexCond, cond, "plan:\n%s", plan)
					}
				default:
					require.Empty(t, plan.find("Sort", "Incremental Sort"), "plan sorts:\n%s", plan)
					require.Contains(t, []string{"Index Scan", "Index Only Scan"}, top.NodeType, "plan:\n%s", plan)
					require.Equal(t, direction, top.ScanDirection, "plan:\n%s", plan)
					if c.want != selective && top.IndexName == "event_log_pkey" {
						// Walks the log from the cursor, not from its start.
						if c.after > 0 {
							require.Contains(t, top.IndexCond, "seq > ", "plan:\n%s", plan)
						}
						require.Contains(t, top.Filter, column+" = ", "plan:\n%s", plan)
						break
					}
					require.Equal(t, c.index, top.IndexName, "plan:\n%s", plan)
					for _, cond := range conds {
						require.Contains(t, top.IndexCond, cond, "plan:\n%s", plan)
					}
					require.Empty(t, top.Filter, "every condition is an index condition; plan:\n%s", plan)
				}
			}

			rec.reset()
			events, err := log.Query(ctx, f)
			require.NoError(t, err)
			q := rec.only(t)

			// EXPLAIN with the values Query sent gets the same custom plan
			// as lib/pq's unnamed statement does.
			plan := explain(t, db, q.sql, q.args)
			checkPlan(plan, "Forward")
			t.Logf("%d matches; plan:\n%s", count, plan)

			// The results are the first page of matches, in seq order.
			got := make([]int64, len(events))
			for i, ev := range events {
				got[i] = ev.Seq
				switch column {
				case "host_id":
					require.Equal(t, value, ev.HostID)
				case "rollout_id":
					require.Equal(t, value, ev.RolloutID)
				default:
					require.Equal(t, value, string(ev.Kind))
				}
			}
			require.Equal(t, want, got)

			// Paging with the cursor reads every match once, in order.
			var paged int
			last := c.after
			for page := f; ; {
				evs, err := log.Query(ctx, page)
				require.NoError(t, err)
				if len(evs) == 0 {
					break
				}
				for _, ev := range evs {
					require.Greater(t, ev.Seq, last)
					last = ev.Seq
				}
				paged += len(evs)
				page.AfterSeq = last
			}
			require.Equal(t, count, paged)

			// TailStart walks the same index backwards from the head to
			// the limit-th last match.
			var wantStart int64
			err = db.Get(&wantStart, `SELECT seq FROM event_log WHERE seq > $1 AND `+column+` = $2
ORDER BY seq DESC LIMIT 1 OFFSET $3`, c.after, value, limit)
			if errors.Is(err, sql.ErrNoRows) {
				wantStart = c.after
			} else {
				require.NoError(t, err)
			}
			rec.reset()
			f.Limit = 0
			start, err := log.TailStart(ctx, f, limit)
			require.NoError(t, err)
			require.Equal(t, wantStart, start)
			q = rec.only(t)
			plan = explain(t, db, q.sql, q.args)
			checkPlan(plan, "Backward")
			t.Logf("TailStart plan:\n%s", plan)
		})
	}
}

// filterColumn returns the one column f filters on (besides the cursor) and
// its value.
func filterColumn(f eventlog.Filter) (string, string) {
	switch {
	case f.HostID != "":
		return "host_id", f.HostID
	case f.RolloutID != "":
		return "rollout_id", f.RolloutID
	default:
		return "kind", string(f.Kinds[0])
	}
}

// fillLog inserts n events in one statement, spread like a control plane's
// log: 499 hosts, each with events throughout; 50 rollouts of about 2% of
// the events each, and a small canary rollout (every 400th event); kinds
// skewed from agent events (half the log) down to gate decisions (every
// 200th event). Rollout events carry no host, manifest polls no rollout.
// fillLog inserts n events in SQL, with every predefined kind. With
// analyze the table then has statistics; without, it has none, as after a
// bulk load or a restore with autovacuum behind (which is switched off
// for the table, so that it stays so).
func fillLog(t *testing.T, db *sqlx.DB, n int, analyze bool) {
	t.Helper()
	if !analyze {
		_, err := db.Exec(`ALTER TABLE event_log SET (autovacuum_enabled = false)`)
		require.NoError(t, err)
	}
	// kinds[i % 200] is event i's kind.
	weights := []struct {
		kind eventlog.Kind
		n    int
	}{
		{eventlog.KindAgentEvent, 100},
		{eventlog.KindPlanAction, 30},
		{eventlog.KindEffect, 30},
		{eventlog.KindManifestPoll, 20},
		{eventlog.KindRolloutEvent, 10},
		{eventlog.KindVerifyOutcome, 9},
		{eventlog.KindGateDecision, 1},
	}
	var kinds []string
	for _, w := range weights {
		for range w.n {
			kinds = append(kinds, string(w.kind))
		}
	}
	require.Len(t, kinds, 200)
	_, err := db.Exec(`INSERT INTO event_log (ts, kind, host_id, rollout_id, payload)
SELECT timestamptz '2026-05-16 00:00:00+00' + i * interval '10 milliseconds',
       kind,
       CASE WHEN kind = 'rollout_event' THEN NULL ELSE 'host-' || lpad((i % 499)::text, 3, '0') END,
       CASE WHEN kind = 'manifest_poll' THEN NULL
            WHEN i % 400 = 3 THEN 'rollout-canary'
            ELSE 'rollout-' || lpad(((i / 7) % 50)::text, 2, '0') END,
       ('{"i":' || i || '}')::json
FROM (SELECT i, ($1::text[])[1 + i % 200] AS kind FROM generate_series(1, $2::int) AS i) AS g`, pq.Array(kinds), n)
	require.NoError(t, err)
	if analyze {
		_, err = db.Exec(`ANALYZE event_log`)
		require.NoError(t, err)
	} else {
		var analyzed bool
		require.NoError(t, db.Get(&analyzed, `SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'event_log')`))
		require.False(t, analyzed, "event_log has statistics")
	}

	var got []string
	require.NoError(t, db.Select(&got, `SELECT DISTINCT kind FROM event_log ORDER BY kind`))
	var all []string
	for _, k := range eventlog.PredefinedKinds() {
		all = append(all, string(k))
	}
	slices.Sort(all)
	require.Equal(t, all, got, "every predefined kind occurs")
}

// planNode is one node of EXPLAIN (FORMAT JSON).
type planNode struct {
	NodeType      string     `json:"Node Type"`
	IndexName     string     `json:"Index Name"`
	ScanDirection string     `json:"Scan Direction"`
	IndexCond     string     `json:"Index Cond"`
	Filter        string     `json:"Filter"`
	PlanRows      float64    `json:"Plan Rows"`
	Plans         []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

func (n planNode) find(types ...string) []planNode {
	var out []planNode
	n.walk(func(c planNode) {
		for _, typ := range types {
			if c.NodeType == typ {
				out = append(out, c)
			}
		}
	})
	return out
}

func (n planNode) String() string {
	var b strings.Builder
	var write func(n planNode, depth int)
	write = func(n planNode, depth int) {
		fmt.Fprintf(&b, "%s%s", strings.Repeat("  ", depth), n.NodeType)
		if n.IndexName != "" {
			fmt.Fprintf(&b, " using %s (%s)", n.IndexName, n.ScanDirection)
		}
		if n.IndexCond != "" {
			fmt.Fprintf(&b, " index cond: %s", n.IndexCond)
		}
		if n.Filter != "" {
			fmt.Fprintf(&b, " filter: %s", n.Filter)
		}
		b.WriteByte('\n')
		for _, c := range n.Plans {
			write(c, depth+1)
		}
	}
	write(n, 0)
	return b.String()
}

func explain(t *testing.T, db *sqlx.DB, query string, args []any) planNode {
	t.Helper()
	var raw []byte
	require.NoError(t, db.QueryRow(`EXPLAIN (FORMAT JSON) `+query, args...).Scan(&raw))
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	require.NoError(t, json.Unmarshal(raw, &plans), "%s", raw)
	require.Len(t, plans, 1)
	return plans[0].Plan
}

// recordedQuery is one statement sent through a recording connection.
type recordedQuery struct {
	sql      string
	args     []any
	prepared bool // sent with PrepareContext (args then go to the statement)
}

// recorder keeps the statements a recording pool sends to PostgreSQL,
// and in trips every exchange with the server: BEGIN, COMMIT, ROLLBACK,
// each statement prepared, run, or run from a prepared statement.
type recorder struct {
	mu      sync.Mutex
	queries []recordedQuery
	trips   []string
	// lose, when set, picks unprepared statements whose answer is lost:
	// the server runs them to the end, and the driver then reports a bad
	// connection, as lib/pq does when the server's answer never comes.
	lose func(query string) bool
}

func (r *recorder) loses(query string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lose != nil && r.lose(query)
}

func (r *recorder) trip(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trips = append(r.trips, what)
}

func (r *recorder) roundTrips() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.trips)
}

// recordingTx records COMMIT and ROLLBACK.
type recordingTx struct {
	inner driver.Tx
	rec   *recorder
}

func (t recordingTx) Commit() error {
	t.rec.trip("COMMIT")
	return t.inner.Commit()
}

func (t recordingTx) Rollback() error {
	t.rec.trip("ROLLBACK")
	return t.inner.Rollback()
}

// recordingStmt records each run of a prepared statement.
type recordingStmt struct {
	inner interface {
		driver.Stmt
		driver.StmtQueryContext
		driver.StmtExecContext
	}
	query string
	rec   *recorder
}

func (s recordingStmt) Close() error  { return s.inner.Close() }
func (s recordingStmt) NumInput() int { return s.inner.NumInput() }

func (s recordingStmt) Exec(args []driver.Value) (driver.Result, error) { return s.inner.Exec(args) }

func (s recordingStmt) Query(args []driver.Value) (driver.Rows, error) { return s.inner.Query(args) }

func (s recordingStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	s.rec.trip("EXECUTE " + s.query)
	return s.inner.QueryContext(ctx, args)
}

func (s recordingStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	s.rec.trip("EXECUTE " + s.query)
	return s.inner.ExecContext(ctx, args)
}

func (r *recorder) add(q recordedQuery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries = append(r.queries, q)
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries, r.trips = nil, nil
}

// only returns the single statement recorded since the last reset.
func (r *recorder) only(t *testing.T) recordedQuery {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Len(t, r.queries, 1, "the call should send exactly one statement: %+v", r.queries)
	q := r.queries[0]
	require.False(t, q.prepared, "the call now prepares its statement: teach the recorder to capture statement arguments")
	return q
}

// recordingDB opens a pool on url whose connections record every statement
// in rec. It is registered under lib/pq's driver name, so canonlog treats it
// as PostgreSQL.
func recordingDB(t *testing.T, url string, rec *recorder) *sqlx.DB {
	t.Helper()
	connector, err := pq.NewConnector(url)
	require.NoError(t, err)
	db := sqlx.NewDb(sql.OpenDB(recordingConnector{inner: connector, rec: rec}), "postgres")
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, db.Ping())
	return db
}

type recordingConnector struct {
	inner driver.Connector
	rec   *recorder
}

func (c recordingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &recordingConn{inner: conn.(pqConn), rec: c.rec}, nil
}

func (c recordingConnector) Driver() driver.Driver { return c.inner.Driver() }

// pqConn is what database/sql uses of a lib/pq connection; the recording
// connection forwards all of it, so the pool behaves as a plain lib/pq one.
type pqConn interface {
	driver.Conn
	driver.QueryerContext
	driver.ExecerContext
	driver.ConnPrepareContext
	driver.ConnBeginTx
	driver.Pinger
	driver.NamedValueChecker
	driver.SessionResetter
	driver.Validator
}

type recordingConn struct {
	inner pqConn
	rec   *recorder
}

var _ pqConn = (*recordingConn)(nil)

func values(args []driver.NamedValue) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a.Value
	}
	return out
}

func (c *recordingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.rec.add(recordedQuery{sql: query, args: values(args)})
	c.rec.trip(query)
	rows, err := c.inner.QueryContext(ctx, query, args)
	if err != nil || !c.rec.loses(query) {
		return rows, err
	}
	dest := make([]driver.Value, len(rows.Columns()))
	for rows.Next(dest) == nil {
	}
	_ = rows.Close()
	return nil, driver.ErrBadConn
}

func (c *recordingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.rec.add(recordedQuery{sql: query, args: values(args)})
	c.rec.trip(query)
	res, err := c.inner.ExecContext(ctx, query, args)
	if err != nil || !c.rec.loses(query) {
		return res, err
	}
	return nil, driver.ErrBadConn
}

func (c *recordingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.rec.add(recordedQuery{sql: query, prepared: true})
	c.rec.trip("PREPARE " + query)
	st, err := c.inner.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	inner, ok := st.(interface {
		driver.Stmt
		driver.StmtQueryContext
		driver.StmtExecContext
	})
	if !ok {
		return st, nil
	}
	return recordingStmt{inner: inner, query: query, rec: c.rec}, nil
}

func (c *recordingConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *recordingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	c.rec.trip("BEGIN")
	tx, err := c.inner.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return recordingTx{inner: tx, rec: c.rec}, nil
}

// Begin is required by driver.Conn; database/sql calls BeginTx.
func (c *recordingConn) Begin() (driver.Tx, error) { return c.inner.Begin() }

func (c *recordingConn) Close() error                   { return c.inner.Close() }
func (c *recordingConn) Ping(ctx context.Context) error { return c.inner.Ping(ctx) }
func (c *recordingConn) CheckNamedValue(nv *driver.NamedValue) error {
	return c.inner.CheckNamedValue(nv)
}
func (c *recordingConn) ResetSession(ctx context.Context) error { return c.inner.ResetSession(ctx) }
func (c *recordingConn) IsValid() bool                          { return c.inner.IsValid() }

// A filtered streaming read (Pages with Kinds or Before: what a rebuild,
// a verify and Migrate's check read) stays linear in the log on a table
// that was never analyzed: each page reads a bounded range of seqs, and
// every scan of its plan — of the primary key, of the (kind, seq) index,
// or a bitmap of either — is bounded by that range in its index
// condition. Without the range, such a table gets a bitmap of every
// matching event after the cursor, sorted, on every page.
func TestExplainPagesWithoutStatistics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	fillLog(t, db, 100_000, false)

	rec := &recorder{}
	log, err := eventlog.New(recordingDB(t, b.URL, rec), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	start, err := log.PositionAtHead(ctx)
	require.NoError(t, err)

	for _, c := range []struct {
		name  string
		opts  eventlog.ReadOptions
		kinds []string
	}{
		{"CommonKind", eventlog.ReadOptions{Kinds: []eventlog.Kind{eventlog.KindAgentEvent}}, []string{"agent_event"}},
		{"RareKind", eventlog.ReadOptions{Kinds: []eventlog.Kind{eventlog.KindGateDecision}}, []string{"gate_decision"}},
		{"Kinds", eventlog.ReadOptions{Kinds: []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindEffect}}, []string{"agent_event", "effect"}},
		{"Before", eventlog.ReadOptions{Kinds: []eventlog.Kind{eventlog.KindPlanAction}, Before: &start}, []string{"plan_action"}},
		// A rebuild's read for a projection with payload markers: one
		// agent event in twenty carries one.
		{"PayloadContains", eventlog.ReadOptions{Kinds: []eventlog.Kind{eventlog.KindAgentEvent}, PayloadContains: []string{"7}", "5}"}}, []string{"agent_event"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var want []int64
			require.NoError(t, db.Select(&want, `SELECT seq FROM event_log WHERE kind = ANY($1)
  AND (COALESCE(cardinality($2::text[]), 0) = 0 OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS m WHERE strpos(payload::text, m) > 0)) ORDER BY seq`,
				pq.Array(c.kinds), pq.Array(c.opts.PayloadContains)))
			require.NotEmpty(t, want)

			rec.reset()
			opts := c.opts
			opts.PageSize = 500
			var got []int64
			for page, err := range log.Pages(ctx, 0, &opts) {
				require.NoError(t, err)
				for _, ev := range page {
					got = append(got, ev.Seq)
				}
			}
			require.Equal(t, want, got, "every matching event once, in seq order")

			rec.mu.Lock()
			queries := slices.Clone(rec.queries)
			rec.mu.Unlock()
			var pages []recordedQuery
			for _, q := range queries {
				if strings.Contains(q.sql, "ORDER BY seq LIMIT") {
					pages = append(pages, q)
				}
			}
			// Linear: about one page of matches per query, and not many
			// more queries than pages of matches, however rare the kind.
			require.LessOrEqual(t, len(pages), 2*(len(want)/opts.PageSize+1)+20, "%d queries for %d events", len(pages), len(want))
			for _, q := range []recordedQuery{pages[0], pages[len(pages)/2], pages[len(pages)-1]} {
				plan := explain(t, db, q.sql, q.args)
				require.Empty(t, plan.find("Seq Scan"), "plan:\n%s", plan)
				scans := plan.find("Index Scan", "Index Only Scan", "Bitmap Index Scan")
				require.NotEmpty(t, scans, "plan:\n%s", plan)
				for _, s := range scans {
					require.Contains(t, s.IndexCond, "seq > ", "the scan starts at the cursor; plan:\n%s", plan)
					require.Contains(t, s.IndexCond, "seq <= ", "the scan ends with the range; plan:\n%s", plan)
				}
				t.Logf("plan:\n%s", plan)
			}
		})
	}
}

// A COPY batch reads back its seqs at the cost of its own rows, however
// many the transaction wrote before and whatever the planner knows: on a
// table never analyzed, the read-back once scanned every row of the
// transaction and sorted them, per batch, so a long transaction of
// batches (append --file) was quadratic.
func TestCopiedSeqsReadOnlyTheBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t, "postgres").Migrated(t)
	_, err := db.Exec(`ALTER TABLE event_log SET (autovacuum_enabled = false)`)
	require.NoError(t, err)
	log, err := eventlog.New(db, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })

	const batch, before = 500, 20
	entries := func(n, from int) []eventlog.Entry {
		es := make([]eventlog.Entry, n)
		for i := range es {
			es[i] = eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "h1", EventID: fmt.Sprint("e", from+i), Payload: json.RawMessage(`{"i":1}`)}
		}
		return es
	}
	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	for i := range before {
		_, err := log.AppendTx(ctx, tx, entries(batch, i*batch)...)
		require.NoError(t, err)
	}
	fetched := func() int64 {
		var n int64
		require.NoError(t, tx.Get(&n, `SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables
WHERE relid = 'event_log'::regclass`))
		return n
	}
	start := fetched()
	res, err := log.AppendTx(ctx, tx, entries(batch, before*batch)...)
	require.NoError(t, err)
	require.Len(t, res, batch)
	for i := 1; i < len(res); i++ {
		require.Equal(t, res[i-1].Event.Seq+1, res[i].Event.Seq, "the batch's seqs, in its order")
	}
	read := fetched() - start
	require.LessOrEqual(t, read, int64(2*batch), "rows read back for a batch of %d after %d in the transaction", batch, before*batch)

	var analyzed bool
	require.NoError(t, db.Get(&analyzed, `SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'event_log')`))
	require.False(t, analyzed, "event_log has statistics")
}

// With a cached sequence a session hands out seqs below another
// session's: the batch's read-back then falls back to reading without
// its floor, and still finds the batch's seqs.
func TestCopiedSeqsCachedSequence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t, "postgres").Migrated(t)
	_, err := db.Exec(`ALTER SEQUENCE event_log_seq_seq CACHE 20`)
	require.NoError(t, err)
	log, err := eventlog.New(db, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })

	appendOn := func(conn *sqlx.Conn, n int, id string) []eventlog.Result {
		tx, err := conn.BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }() // on failure: the conn can close
		es := make([]eventlog.Entry, n)
		for i := range es {
			es[i] = eventlog.Entry{Kind: eventlog.KindEffect, EventID: fmt.Sprint(id, i), Payload: json.RawMessage(`{}`)}
		}
		res, err := log.AppendTx(ctx, tx, es...)
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		return res
	}
	a, err := db.Connx(ctx)
	require.NoError(t, err)
	defer a.Close()
	b, err := db.Connx(ctx)
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, int64(1), appendOn(a, 1, "a")[0].Event.Seq, "a takes 1-20")
	require.Equal(t, int64(21), appendOn(b, 1, "b")[0].Event.Seq, "b takes 21-40")
	var seqs []int64
	for _, r := range appendOn(a, 5, "c") {
		seqs = append(seqs, r.Event.Seq)
	}
	require.Equal(t, []int64{2, 3, 4, 5, 6}, seqs, "below b's, from a's cache")
	var stored []int64
	require.NoError(t, db.Select(&stored, `SELECT seq FROM event_log WHERE event_id LIKE 'c%' ORDER BY event_id`))
	require.Equal(t, seqs, stored)
}

// The floor costs a round trip, spent only where it bounds something:
// AppendTx, whose caller may have written rows before, reads it;
// AppendBatch, whose transaction holds only its COPY, does not.
func TestCopiedSeqsFloorOnlyInCallersTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	rec := &recorder{}
	log, err := eventlog.New(recordingDB(t, b.URL, rec), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	batch := []eventlog.Entry{
		{Kind: eventlog.KindEffect, EventID: "f-1", Payload: json.RawMessage(`{}`)},
		{Kind: eventlog.KindEffect, EventID: "f-2", Payload: json.RawMessage(`{}`)},
	}
	floorReads := func() int {
		n := 0
		for _, tr := range rec.roundTrips() {
			if strings.Contains(tr, "pg_sequence_last_value") {
				n++
			}
		}
		return n
	}
	rec.reset()
	res, err := log.AppendBatch(ctx, batch)
	require.NoError(t, err)
	require.Len(t, res, 2)
	require.Zero(t, floorReads(), "AppendBatch")

	rec.reset()
	tx, err := log.DB().BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	batch[0].EventID, batch[1].EventID = "f-3", "f-4"
	res, err = log.AppendTx(ctx, tx, batch...)
	require.NoError(t, err)
	require.Equal(t, res[0].Event.Seq+1, res[1].Event.Seq)
	require.Equal(t, 1, floorReads(), "AppendTx")
	require.NoError(t, tx.Commit())
	require.Equal(t, 4, countEvents(t, db))
}
