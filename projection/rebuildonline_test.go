package projection_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

// setupIn is setup on a database the test made itself, for the tests
// that need its PostgreSQL schema.
func setupIn(t *testing.T, b dbtest.Backend, ps ...projection.Projection) (*eventlog.Log, *projection.Registry, *sqlx.DB) {
	t.Helper()
	db := b.Open(t)
	reg, err := projection.NewRegistry(ps...)
	require.NoError(t, err)
	clock := eventlogtest.NewFakeClock(t0)
	clock.SetStep(time.Millisecond)
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg, Clock: clock})
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	_, err = projection.Migrate(context.Background(), log, reg)
	require.NoError(t, err)
	return log, reg, db
}

// rebuildSchemas lists the schemas an online rebuild in schema works in
// ("<schema>__rebuild_<name>", "<schema>__retired_<name>") that exist.
func rebuildSchemas(t *testing.T, db *sqlx.DB, schema string) []string {
	t.Helper()
	var out []string
	require.NoError(t, db.Select(&out, `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY nspname`, schema+"__"))
	return out
}

func agentEvents(n int) []eventlog.Entry {
	batch := make([]eventlog.Entry, n)
	for i := range batch {
		batch[i] = ev(eventlog.KindAgentEvent, fmt.Sprint("h", i%7), fmt.Sprintf(`{"i":%d}`, i))
	}
	return batch
}

func requireVerified(t *testing.T, log *eventlog.Log, reg *projection.Registry) {
	t.Helper()
	res, err := projection.Verify(context.Background(), log, reg, nil)
	require.NoError(t, err)
	for _, r := range res {
		require.True(t, r.Equal, "%+v", r)
	}
}

// An append held open takes a seq below events that commit after it,
// and commits after they were read. Held open across the online
// rebuild's start, it commits after the build read the log, and the
// catch-up applies it. Opened during the catch-up, it holds the rounds'
// horizon back, commits as the swap begins, and the swap drains it.
// Either way it is applied exactly once, however low its seq: reading
// "seq > the last seq read" would skip it.
func TestOnlineRebuildLateCommit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ openIn, commitIn projection.Phase }{
		{projection.PhaseBuild, projection.PhaseCatchUp},
		{projection.PhaseCatchUp, projection.PhaseSwap},
	} {
		t.Run(string(tc.commitIn), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			view := &kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}
			log, reg, db := setup(t, "postgres", view)
			_, err := log.AppendBatch(ctx, agentEvents(120))
			require.NoError(t, err)

			var (
				late       *sqlx.Tx
				lateSeq    int64
				afterSeq   int64
				builtDone  int64
				committed  bool
				progressed []projection.Phase
			)
			t.Cleanup(func() {
				if late != nil {
					_ = late.Rollback()
				}
			})
			res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 50, Progress: func(p projection.Progress) {
				if len(progressed) == 0 || progressed[len(progressed)-1] != p.Phase {
					progressed = append(progressed, p.Phase)
				}
				if p.Phase == projection.PhaseBuild {
					builtDone = p.Done
				}
				switch {
				case p.Phase == tc.openIn && late == nil:
					// An append that stays open, then one that commits,
					// with a higher seq. In PhaseBuild: before the start.
					var err error
					late, err = db.BeginTxx(ctx, nil)
					require.NoError(t, err)
					r, err := log.AppendTx(ctx, late, ev(eventlog.KindAgentEvent, "late", `{"late":true}`))
					require.NoError(t, err)
					lateSeq = r[0].Event.Seq
					after, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "after", `{"after":true}`))
					require.NoError(t, err)
					afterSeq = after.Event.Seq
				case p.Phase == tc.commitIn && !committed:
					// PhaseCatchUp: before the first round reads. PhaseSwap:
					// the rounds have passed it by (the late transaction
					// held their horizon back); the swap must drain it.
					committed = true
					require.NoError(t, late.Commit())
				}
			}})
			require.NoError(t, err)
			require.True(t, committed)
			require.Equal(t, []projection.Phase{projection.PhaseBuild, projection.PhaseCatchUp, projection.PhaseSwap}, progressed)
			require.Less(t, lateSeq, afterSeq)
			r := res[0]
			require.True(t, r.Online, "%+v", r)
			if tc.openIn == projection.PhaseBuild {
				require.EqualValues(t, 121, builtDone, "the build covers what committed before the start: the 120 and the later seq %d", afterSeq)
				require.EqualValues(t, 1, r.CatchUpEvents+r.SwapEvents, "%+v", r)
			} else {
				require.EqualValues(t, 120, builtDone)
				require.EqualValues(t, 2, r.CatchUpEvents+r.SwapEvents, "%+v", r)
				require.GreaterOrEqual(t, r.SwapEvents, int64(1), "the late event is the swap's: %+v", r)
			}
			require.EqualValues(t, 122, r.Events)
			require.EqualValues(t, 122, r.Rows)
			require.EqualValues(t, afterSeq, r.Seq)
			var n int
			require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM test_view WHERE event_log_seq = $1`, lateSeq))
			require.Equal(t, 1, n, "the late event is in the view once")
			requireVerified(t, log, reg)
		})
	}
}

// A reader never sees a partial view: whatever moment of a rebuild its
// snapshot falls in, the view holds one row per event of its kind that
// the snapshot sees. The readers run throughout several online rebuilds,
// while writers append; each rebuild waits (Progress) until every reader
// has read during its catch-up, and appends one event just before its
// swap, so that each swap applies rows of its own.
//
// On PostgreSQL readers read in one statement (READ COMMITTED), or in a
// REPEATABLE READ transaction that locks the view's table before its
// first query takes the snapshot: the swap replaces the table, and a
// snapshot taken before the swap that looks at the table only after it
// sees the new table's rows as of that snapshot (PostgreSQL's MVCC
// caveat for commands that replace a table's contents; see
// TestOnlineRebuildOldSnapshotReader).
func TestOnlineRebuildReaders(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		view := &kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}
		log, reg, db := setup(t, backend, view)
		_, err := log.AppendBatch(ctx, agentEvents(200))
		require.NoError(t, err)

		type reader struct {
			name string
			read func(ctx context.Context, viewFirst bool) (events, rows int64, err error)
		}
		const eventsQ, rowsQ = `SELECT COUNT(*) FROM event_log WHERE kind = 'agent_event'`, `SELECT COUNT(*) FROM test_view`
		inTx := func(opts *sql.TxOptions, first string) func(context.Context, bool) (int64, int64, error) {
			return func(ctx context.Context, viewFirst bool) (events, rows int64, err error) {
				tx, err := db.BeginTxx(ctx, opts)
				if err != nil {
					return 0, 0, err
				}
				defer func() { _ = tx.Rollback() }()
				if first != "" {
					if _, err := tx.ExecContext(ctx, first); err != nil {
						return 0, 0, err
					}
				}
				if viewFirst {
					err = tx.GetContext(ctx, &rows, rowsQ)
				} else {
					err = tx.GetContext(ctx, &events, eventsQ)
				}
				if err == nil && viewFirst {
					err = tx.GetContext(ctx, &events, eventsQ)
				} else if err == nil {
					err = tx.GetContext(ctx, &rows, rowsQ)
				}
				return events, rows, err
			}
		}
		var readers []reader
		if backend == "sqlite" {
			// A read transaction reads one snapshot of the database.
			readers = []reader{{"read transaction", inTx(&sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}, "")}}
		} else {
			readers = []reader{
				{"one statement", func(ctx context.Context, viewFirst bool) (events, rows int64, err error) {
					q := `SELECT (` + eventsQ + `), (` + rowsQ + `)`
					if viewFirst {
						q = `SELECT e, r FROM (SELECT (` + rowsQ + `) AS r, (` + eventsQ + `) AS e) AS c`
					}
					err = db.QueryRowxContext(ctx, q).Scan(&events, &rows)
					return events, rows, err
				}},
				{"repeatable read after LOCK TABLE", inTx(&sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
					`LOCK TABLE test_view IN ACCESS SHARE MODE`)},
			}
		}

		var (
			stop     = make(chan struct{})
			wg       sync.WaitGroup
			mu       sync.Mutex
			cond     = sync.NewCond(&mu)
			reads    = make([]int, len(readers))
			appended int
			failures []string
			errs     []error
		)
		fail := func(err error) {
			mu.Lock()
			errs = append(errs, err)
			cond.Broadcast()
			mu.Unlock()
		}
		stopped := func() bool {
			select {
			case <-stop:
				return true
			default:
				return false
			}
		}
		for i, r := range readers {
			wg.Go(func() {
				for n := 0; !stopped(); n++ {
					events, rows, err := r.read(ctx, n%2 == 0)
					if err != nil {
						fail(fmt.Errorf("reader %s: %w", r.name, err))
						return
					}
					mu.Lock()
					if events != rows {
						failures = append(failures, fmt.Sprintf("%s saw %d events and %d rows", r.name, events, rows))
					}
					reads[i]++
					cond.Broadcast()
					mu.Unlock()
				}
			})
		}
		for w := range 2 {
			wg.Go(func() {
				for i := 0; !stopped(); i++ {
					batch := []eventlog.Entry{ev(eventlog.KindAgentEvent, fmt.Sprint("w", w), fmt.Sprintf(`{"i":%d}`, i))}
					if i%3 == 0 {
						batch = append(batch, ev(eventlog.KindPlanAction, fmt.Sprint("w", w), `{}`), ev(eventlog.KindAgentEvent, "x", `{}`))
					}
					_, err := log.AppendBatch(ctx, batch)
					for eventlog.Retryable(err) {
						_, err = log.AppendBatch(ctx, batch)
					}
					if err != nil {
						fail(fmt.Errorf("writer %d: %w", w, err))
						return
					}
					mu.Lock()
					appended++
					cond.Broadcast()
					mu.Unlock()
				}
			})
		}
		// waitFor waits until every reader has read once more and a writer
		// has appended, or something failed.
		waitFor := func() {
			mu.Lock()
			defer mu.Unlock()
			want := slices.Clone(reads)
			wantAppended := appended + 1
			for len(errs) == 0 {
				done := appended >= wantAppended
				for i := range reads {
					done = done && reads[i] > want[i]
				}
				if done {
					return
				}
				cond.Wait()
			}
		}

		for range 4 {
			var inCatchUp, beforeSwap bool
			res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 64, Progress: func(p projection.Progress) {
				switch {
				case p.Phase == projection.PhaseCatchUp && !inCatchUp:
					inCatchUp = true
					waitFor()
				case p.Phase == projection.PhaseSwap && !beforeSwap:
					beforeSwap = true
					_, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "swap", `{}`))
					for eventlog.Retryable(err) {
						_, err = log.Append(ctx, ev(eventlog.KindAgentEvent, "swap", `{}`))
					}
					require.NoError(t, err)
				}
			}})
			require.NoError(t, err)
			require.True(t, res[0].Online, "%+v", res[0])
			require.Positive(t, res[0].SwapEvents, "the swap applied rows: %+v", res[0])
			waitFor() // and read after it
		}
		close(stop)
		wg.Wait()
		require.Empty(t, errs)
		require.Empty(t, failures, "readers saw a partial view")
		require.Equal(t, count(t, db, "test_view"), countKind(t, db, eventlog.KindAgentEvent))
		requireVerified(t, log, reg)
		t.Logf("%s: reads %v, %d appends", backend, reads, appended)
	})
}

func countKind(t *testing.T, db *sqlx.DB, kind eventlog.Kind) int {
	t.Helper()
	var n int
	require.NoError(t, db.Get(&n, db.Rebind(`SELECT COUNT(*) FROM event_log WHERE kind = ?`), string(kind)))
	return n
}

// On PostgreSQL a REPEATABLE READ transaction whose snapshot was taken
// before a swap, and that first reads the view after it, reads the new
// table as of its old snapshot: the rows the swap (and the catch-up
// after the snapshot) wrote are invisible to it, while the events they
// come from are not. It sees a partial view.
func TestOnlineRebuildOldSnapshotReader(t *testing.T) {
	t.Parallel()
	t.Skip("known: an online swap on PostgreSQL replaces the view's tables, which is not MVCC-safe for a snapshot taken before it " +
		"(a transaction that has not read the view before the swap then sees the new table as of its old snapshot); " +
		"readers that need one snapshot of log and view must LOCK TABLE the view first (TestOnlineRebuildReaders)")
	ctx := context.Background()
	view := &kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}
	log, reg, db := setup(t, "postgres", view)
	_, err := log.AppendBatch(ctx, agentEvents(50))
	require.NoError(t, err)
	cpBefore := checkpoints(t, db)

	var (
		once         sync.Once
		wg           sync.WaitGroup
		events, rows int64
		readErr      error
	)
	_, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Progress: func(p projection.Progress) {
		if p.Phase != projection.PhaseSwap {
			return
		}
		once.Do(func() {
			_, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "h", `{}`)) // for the swap to apply
			require.NoError(t, err)
			snapshot := make(chan struct{})
			wg.Go(func() {
				readErr = func() error {
					tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
					if err != nil {
						close(snapshot)
						return err
					}
					defer func() { _ = tx.Rollback() }()
					err = tx.GetContext(ctx, &events, `SELECT COUNT(*) FROM event_log WHERE kind = 'agent_event'`)
					close(snapshot)
					if err != nil {
						return err
					}
					// Read the view once the swap has committed.
					for {
						var cp []string
						if err := db.SelectContext(ctx, &cp, `SELECT name || ':' || CAST(version AS TEXT) || ':' || CAST(built_seq AS TEXT) || ':' || CAST(built_at AS TEXT) FROM canonlog_projections ORDER BY name`); err != nil {
							return err
						}
						if !slices.Equal(cp, cpBefore) {
							break
						}
						time.Sleep(5 * time.Millisecond)
					}
					return tx.GetContext(ctx, &rows, `SELECT COUNT(*) FROM test_view`)
				}()
			})
			<-snapshot
		})
	}})
	wg.Wait()
	require.NoError(t, err)
	require.NoError(t, readErr)
	require.Equal(t, events, rows, "a snapshot taken before the swap saw a partial view")
}

// contractView is a projection of two tables with what an operator or a
// migration puts on tables: keys and unique constraints, a check, plain,
// partial and expression indexes, foreign keys to the log and from one
// table to the other. PostgreSQL only.
type contractView struct{}

func (contractView) Name() string           { return "contract_view" }
func (contractView) Version() int           { return 1 }
func (contractView) Kinds() []eventlog.Kind { return []eventlog.Kind{eventlog.KindAgentEvent} }
func (contractView) Tables() []string       { return []string{"cv_hosts", "cv_reports"} }
func (contractView) Migrations() migrations.Set {
	return migrations.Set{Postgres: fstest.MapFS{"00001_contract_view.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE cv_hosts (
    host_id  TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL CONSTRAINT cv_hosts_last_seq_fk REFERENCES event_log (seq),
    reports  INTEGER NOT NULL DEFAULT 0 CONSTRAINT cv_hosts_reports_positive CHECK (reports > 0)
);
CREATE UNIQUE INDEX cv_hosts_lower_key ON cv_hosts (lower(host_id));
CREATE TABLE cv_reports (
    event_log_seq BIGINT NOT NULL CONSTRAINT cv_reports_seq_fk REFERENCES event_log (seq),
    host_id       TEXT NOT NULL CONSTRAINT cv_reports_host_fk REFERENCES cv_hosts (host_id) ON DELETE CASCADE,
    size          INTEGER NOT NULL,
    CONSTRAINT cv_reports_pk PRIMARY KEY (event_log_seq),
    CONSTRAINT cv_reports_host_seq_key UNIQUE (host_id, event_log_seq)
);
CREATE INDEX cv_reports_host_idx ON cv_reports (host_id, event_log_seq DESC);
CREATE INDEX cv_reports_big_idx ON cv_reports (size) WHERE size > 10;
-- +goose Down
DROP TABLE cv_reports;
DROP TABLE cv_hosts;
`)}}}
}

func (contractView) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM cv_reports; DELETE FROM cv_hosts`)
	return err
}

func (contractView) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO cv_hosts (host_id, last_seq, reports) VALUES ($1, $2, 1)
ON CONFLICT (host_id) DO UPDATE SET reports = cv_hosts.reports + 1, last_seq = GREATEST(cv_hosts.last_seq, excluded.last_seq)`, ev.HostID, ev.Seq); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO cv_reports (event_log_seq, host_id, size) VALUES ($1, $2, $3)`, ev.Seq, ev.HostID, len(ev.Payload))
	return err
}

// What an online rebuild's swap keeps of the live tables on PostgreSQL:
// index and constraint names and definitions, foreign keys (to the log
// and between the projection's tables), owner, privileges and storage
// parameters (autovacuum settings, fillfactor). The tables
// themselves are new (their OIDs change), and the checkpoint records the
// rebuild.
func TestOnlineRebuildKeepsTheTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := dbtest.Admin(t)
	b := dbtest.New(t, "postgres")
	role := dbtest.NewName()
	// Registered after the schema's, so it runs first: DROP OWNED BY
	// revokes the role's privileges in the schema before it goes.
	t.Cleanup(func() {
		for _, stmt := range []string{`DROP OWNED BY `, `DROP ROLE IF EXISTS `} {
			if _, err := admin.ExecContext(context.Background(), stmt+pq.QuoteIdentifier(role)); err != nil && !strings.Contains(err.Error(), "does not exist") {
				t.Errorf("%s%s: %v", stmt, role, err)
			}
		}
	})
	log, reg, db := setupIn(t, b, contractView{})
	_, err := admin.ExecContext(ctx, `CREATE ROLE `+pq.QuoteIdentifier(role)+` NOLOGIN`)
	require.NoError(t, err)
	r, s := pq.QuoteIdentifier(role), pq.QuoteIdentifier(b.Schema)
	_, err = db.ExecContext(ctx, `GRANT USAGE ON SCHEMA `+s+` TO `+r+`;
GRANT SELECT ON cv_hosts, cv_reports TO `+r+`;
GRANT INSERT, UPDATE ON cv_reports TO `+r+` WITH GRANT OPTION;
GRANT SELECT ON cv_hosts TO PUBLIC;
ALTER TABLE cv_reports SET (autovacuum_enabled = false, fillfactor = 90)`)
	require.NoError(t, err)
	var batch []eventlog.Entry
	for i := range 150 {
		batch = append(batch, ev(eventlog.KindAgentEvent, fmt.Sprint("host-", i%9), fmt.Sprintf(`{"n":%d}`, i*i)))
	}
	_, err = log.AppendBatch(ctx, batch)
	require.NoError(t, err)

	type shape struct {
		Indexes, Constraints, Grants, Owners, Options []string
		OIDs                                          []int64
	}
	read := func() shape {
		var sh shape
		require.NoError(t, db.Select(&sh.Indexes, `SELECT tablename || ' ' || indexname || ': ' || indexdef FROM pg_indexes
WHERE schemaname = current_schema() AND tablename IN ('cv_hosts', 'cv_reports') ORDER BY tablename, indexname`))
		require.NoError(t, db.Select(&sh.Constraints, `SELECT conrelid::regclass::text || ' ' || conname || ' ' || contype::text || ': ' || pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid IN ('cv_hosts'::regclass, 'cv_reports'::regclass) ORDER BY 1`))
		require.NoError(t, db.Select(&sh.Grants, `SELECT table_name || ' ' || grantor || ' -> ' || grantee || ': ' || privilege_type || ' ' || is_grantable FROM information_schema.role_table_grants
WHERE table_schema = current_schema() AND table_name IN ('cv_hosts', 'cv_reports') ORDER BY 1`))
		require.NoError(t, db.Select(&sh.Owners, `SELECT tablename || ' ' || tableowner FROM pg_tables
WHERE schemaname = current_schema() AND tablename IN ('cv_hosts', 'cv_reports') ORDER BY 1`))
		require.NoError(t, db.Select(&sh.Options, `SELECT relname || ' ' || COALESCE(array_to_string(reloptions, ','), '') FROM pg_class
WHERE oid IN ('cv_hosts'::regclass, 'cv_reports'::regclass) ORDER BY relname`))
		require.NoError(t, db.Select(&sh.OIDs, `SELECT oid::bigint FROM pg_class WHERE oid IN ('cv_hosts'::regclass, 'cv_reports'::regclass) ORDER BY relname`))
		return sh
	}
	before := read()
	require.Len(t, before.Indexes, 6)
	require.Len(t, before.Constraints, 7)
	require.Contains(t, before.Grants, "cv_reports postgres -> "+role+": INSERT YES")
	require.Contains(t, before.Grants, "cv_hosts postgres -> PUBLIC: SELECT NO")
	require.Equal(t, []string{"cv_hosts ", "cv_reports autovacuum_enabled=false,fillfactor=90"}, before.Options)

	res, err := projection.Rebuild(ctx, log, reg, nil)
	require.NoError(t, err)
	require.True(t, res[0].Online, "%+v", res[0])
	require.EqualValues(t, 150, res[0].Events)
	require.EqualValues(t, 159, res[0].Rows)

	after := read()
	require.Equal(t, before.Indexes, after.Indexes)
	require.Equal(t, before.Constraints, after.Constraints)
	require.Equal(t, before.Grants, after.Grants)
	require.Equal(t, before.Owners, after.Owners)
	require.Equal(t, before.Options, after.Options, "storage parameters")
	// The new tables come with planner statistics (the old ones had
	// none: nothing analyzed them).
	var analyzed []string
	require.NoError(t, db.Select(&analyzed, `SELECT DISTINCT tablename FROM pg_stats
WHERE schemaname = current_schema() AND tablename IN ('cv_hosts', 'cv_reports') ORDER BY 1`))
	require.Equal(t, []string{"cv_hosts", "cv_reports"}, analyzed)
	for i := range before.OIDs {
		require.NotEqual(t, before.OIDs[i], after.OIDs[i], "the tables were swapped")
	}
	// The foreign keys hold on the new tables.
	other, err := log.Append(ctx, ev(eventlog.KindPlanAction, "", `{}`))
	require.NoError(t, err)
	_, err = db.Exec(`INSERT INTO cv_reports (event_log_seq, host_id, size) VALUES ($1, 'nobody', 1)`, other.Event.Seq)
	require.ErrorContains(t, err, "cv_reports_host_fk")
	_, err = db.Exec(`INSERT INTO cv_hosts (host_id, last_seq, reports) VALUES ('x', 999999, 1)`)
	require.ErrorContains(t, err, "cv_hosts_last_seq_fk")
	_, err = db.Exec(`INSERT INTO cv_hosts (host_id, last_seq) VALUES ('x', $1)`, other.Event.Seq)
	require.ErrorContains(t, err, "cv_hosts_reports_positive")
	_, err = db.Exec(`INSERT INTO cv_hosts (host_id, last_seq, reports) VALUES ('HOST-1', $1, 1)`, other.Event.Seq)
	require.ErrorContains(t, err, "cv_hosts_lower_key")
	// The role reads the new tables.
	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	_, err = tx.Exec(`SET LOCAL ROLE ` + r)
	require.NoError(t, err)
	var n int
	require.NoError(t, tx.Get(&n, `SELECT COUNT(*) FROM cv_reports`))
	require.Equal(t, 150, n)
	require.NoError(t, tx.Rollback())

	sts, err := projection.ReadStatus(ctx, log, reg)
	require.NoError(t, err)
	require.Equal(t, 1, sts[0].BuiltVersion)
	require.EqualValues(t, 150, sts[0].BuiltSeq, "the log's last seq when rebuilt")
	require.False(t, sts[0].Stale)
	requireVerified(t, log, reg)
	require.Empty(t, rebuildSchemas(t, db, b.Schema))
}

// untabled is testView without Tabler: nothing tells the rebuild which
// tables it writes.
type untabled struct{ v *testView }

func (u untabled) Name() string { return u.v.Name() }
func (u untabled) Version() int { return u.v.Version() }
func (u untabled) Apply(ctx context.Context, tx *sqlx.Tx, e eventlog.Event) error {
	return u.v.Apply(ctx, tx, e)
}
func (u untabled) Reset(ctx context.Context, tx *sqlx.Tx) error { return u.v.Reset(ctx, tx) }
func (u untabled) Migrations() migrations.Set                   { return u.v.Migrations() }

// qualifiedView writes its table by a qualified name: the live one, even
// when an online rebuild puts its copy first.
type qualifiedView struct {
	kindView
	qualifier string // `"schema".` or `main.`
}

func (v *qualifiedView) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO `+v.qualifier+`test_view (event_log_seq, kind, host_id, payload_len) VALUES (?, ?, ?, ?)`),
		ev.Seq, string(ev.Kind), ev.HostID, len(ev.Payload))
	return err
}

func (v *qualifiedView) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	for _, e := range events {
		if err := v.Apply(ctx, tx, e); err != nil {
			return projection.EventError(e.Seq, err)
		}
	}
	return nil
}

// A projection the online rebuild cannot carry is rebuilt offline, and
// the result says why; one that writes outside its copy fails the
// rebuild and leaves the live view as it was.
func TestOnlineRebuildFallbacks(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()

		t.Run("WithoutTables", func(t *testing.T) {
			log, reg, db := setup(t, backend, untabled{&testView{}})
			_, err := log.AppendBatch(ctx, agentEvents(30))
			require.NoError(t, err)
			want := viewRows(t, db)
			_, err = db.Exec(`DELETE FROM test_view WHERE event_log_seq > 20`)
			require.NoError(t, err)
			res, err := projection.Rebuild(ctx, log, reg, nil)
			require.NoError(t, err)
			require.False(t, res[0].Online)
			require.Contains(t, res[0].OfflineReason, "Tabler")
			require.Positive(t, res[0].LockHeld)
			require.Zero(t, res[0].CatchUpRounds)
			require.Equal(t, want, viewRows(t, db))
			// Gentle, as app's background rebuild asks, falls back the
			// same way rather than failing: it only shapes online rebuilds.
			res, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Gentle: true})
			require.NoError(t, err)
			require.False(t, res[0].Online)
			require.False(t, res[0].Gentle)
			require.Contains(t, res[0].OfflineReason, "Tabler")
			require.Equal(t, want, viewRows(t, db))
		})

		if backend == "postgres" {
			for _, c := range []struct{ name, ddl, reason string }{
				{"Trigger", `CREATE FUNCTION tv_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER tv_audit BEFORE INSERT ON test_view FOR EACH ROW EXECUTE FUNCTION tv_noop()`, "table test_view has trigger tv_audit"},
				{"View", `CREATE VIEW tv_hosts AS SELECT DISTINCT host_id FROM test_view`, "view tv_hosts depends on table test_view"},
			} {
				t.Run(c.name, func(t *testing.T) {
					b := dbtest.New(t, backend)
					log, reg, db := setupIn(t, b, &testView{})
					_, err := db.Exec(c.ddl)
					require.NoError(t, err)
					_, err = log.AppendBatch(ctx, agentEvents(30))
					require.NoError(t, err)
					res, err := projection.Rebuild(ctx, log, reg, nil)
					require.NoError(t, err)
					require.False(t, res[0].Online)
					require.Contains(t, res[0].OfflineReason, c.reason)
					require.EqualValues(t, 30, res[0].Rows)
					requireVerified(t, log, reg)
					require.Empty(t, rebuildSchemas(t, db, b.Schema))
				})
			}
		}

		t.Run("QualifiedWrite", func(t *testing.T) {
			b := dbtest.New(t, backend)
			v := &qualifiedView{kindView: kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}, qualifier: "main."}
			if backend == "postgres" {
				v.qualifier = pq.QuoteIdentifier(b.Schema) + "."
			}
			log, reg, db := setupIn(t, b, v)
			_, err := log.AppendBatch(ctx, agentEvents(40))
			require.NoError(t, err)
			// A live view that the build's writes to the live table do
			// not collide with (as after a change of logic), and that a
			// swap would visibly replace: one row, of an event of another
			// kind.
			_, err = db.Exec(`DELETE FROM test_view`)
			require.NoError(t, err)
			other, err := log.Append(ctx, ev(eventlog.KindPlanAction, "kept", `{}`))
			require.NoError(t, err)
			_, err = db.Exec(db.Rebind(`INSERT INTO test_view (event_log_seq, kind, host_id, payload_len) VALUES (?, 'plan_action', 'kept', 2)`), other.Event.Seq)
			require.NoError(t, err)
			before, cpBefore := viewRows(t, db), checkpoints(t, db)
			require.Len(t, before, 1)

			_, err = projection.Rebuild(ctx, log, reg, nil)
			require.ErrorIs(t, err, projection.ErrInvalidProjection)
			require.ErrorContains(t, err, "test_view")
			require.Equal(t, before, viewRows(t, db))
			require.Equal(t, cpBefore, checkpoints(t, db))
			if backend == "postgres" {
				require.Empty(t, rebuildSchemas(t, db, b.Schema))
			}
			// Offline, the qualified name is the live table: that works.
			res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Offline: true})
			require.NoError(t, err)
			require.EqualValues(t, 40, res[0].Rows)
		})
	})
}

// Cancelling an online rebuild, in any phase, returns the context's error
// and leaves the live view and checkpoint as they were; appends go on
// meanwhile and after, and on PostgreSQL no shadow or retired schema
// remains once Rebuild returns.
func TestOnlineRebuildCancelled(t *testing.T) {
	t.Parallel()
	type when struct {
		name string
		at   func(p projection.Progress, seen []projection.Progress) bool
	}
	first := func(phase projection.Phase) func(projection.Progress, []projection.Progress) bool {
		return func(p projection.Progress, seen []projection.Progress) bool {
			return p.Phase == phase
		}
	}
	// afterWork is true at the phase's first report after it applied
	// something.
	afterWork := func(phase projection.Phase) func(projection.Progress, []projection.Progress) bool {
		return func(p projection.Progress, seen []projection.Progress) bool {
			for _, s := range seen[:len(seen)-1] {
				if s.Phase == phase && p.Phase == phase && p.Done > s.Done {
					return true
				}
			}
			return false
		}
	}
	for _, w := range []when{
		{"BuildStart", first(projection.PhaseBuild)},
		{"BuildPage", afterWork(projection.PhaseBuild)},
		{"CatchUpStart", first(projection.PhaseCatchUp)},
		{"CatchUpPage", afterWork(projection.PhaseCatchUp)},
		{"Swap", first(projection.PhaseSwap)},
	} {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			dbtest.Run(t, func(t *testing.T, backend string) {
				ctx := context.Background()
				b := dbtest.New(t, backend)
				log, reg, db := setupIn(t, b, &testView{})
				_, err := log.AppendBatch(ctx, agentEvents(300))
				require.NoError(t, err)
				_, err = db.Exec(`DELETE FROM test_view WHERE event_log_seq > 290`) // a recognizably old state
				require.NoError(t, err)
				before, cpBefore := viewRows(t, db), checkpoints(t, db)

				cctx, cancel := context.WithCancel(ctx)
				defer cancel()
				var (
					seen     []projection.Progress
					appended []int64
					// One append after the build's first page: committed
					// after the start, it gives the catch-up a page.
					appendOnce sync.Once
				)
				_, err = projection.Rebuild(cctx, log, reg, &projection.RebuildOptions{BatchSize: 50, Progress: func(p projection.Progress) {
					seen = append(seen, p)
					if p.Phase == projection.PhaseBuild && p.Done > 0 {
						appendOnce.Do(func() {
							res, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "during", `{}`))
							require.NoError(t, err)
							appended = append(appended, res.Event.Seq)
						})
					}
					if p.Phase == projection.PhaseCatchUp && len(appended) > 0 && backend == "postgres" {
						// A follower reads only below the oldest transaction
						// running on the server, which other tests' may hold
						// back: wait until the catch-up can read the event.
						waitHorizon(t, db, appended[0])
					}
					if w.at(p, seen) {
						cancel()
					}
				}})
				require.ErrorIs(t, err, context.Canceled, "phases seen: %v", seen)
				require.Equal(t, context.Canceled, cctx.Err(), "cancelled by the test, not finished: %v", seen)
				if backend == "postgres" {
					require.Empty(t, rebuildSchemas(t, db, b.Schema))
				}
				// The old state, with the rows of what was appended meanwhile.
				want := slices.Clone(before)
				for _, seq := range appended {
					want = append(want, fmt.Sprintf("%d:%s:during", seq, eventlog.KindAgentEvent))
				}
				require.Equal(t, want, viewRows(t, db))
				require.Equal(t, cpBefore, checkpoints(t, db))

				res, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "after", `{}`))
				require.NoError(t, err)
				want = append(want, fmt.Sprintf("%d:%s:after", res.Event.Seq, eventlog.KindAgentEvent))
				require.Equal(t, want, viewRows(t, db))

				rebuilt, err := projection.Rebuild(ctx, log, reg, nil)
				require.NoError(t, err)
				require.True(t, rebuilt[0].Online)
				requireVerified(t, log, reg)
				if backend == "postgres" {
					require.Empty(t, rebuildSchemas(t, db, b.Schema))
				}
			})
		})
	}
}

// waitHorizon waits until the PostgreSQL server has no transaction
// running that is older than the one that appended seq: until a follower
// can read it.
func waitHorizon(t *testing.T, db *sqlx.DB, seq int64) {
	t.Helper()
	for {
		var past bool
		require.NoError(t, db.Get(&past, `SELECT pg_snapshot_xmin(pg_current_snapshot()) > tx_id FROM event_log WHERE seq = $1`, seq))
		if past {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Dropping the old tables after a swap takes event_log's strongest lock
// (their foreign key to it), which waits for every reader of the log: a
// long one (here a REPEATABLE READ transaction that read it, as a verify
// holds) would make every append queue behind the drop until it ends.
// The drop waits a moment at a time instead: appends go on meanwhile, the
// old tables go once the reader is done, and Status shows them until
// then.
func TestOnlineRebuildDropWaitsForLongReaders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	view := &kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}
	log, reg, db := setup(t, "postgres", view)
	_, err := log.AppendBatch(ctx, agentEvents(50))
	require.NoError(t, err)
	var schema string
	require.NoError(t, db.Get(&schema, `SELECT current_schema()`))

	reader, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = reader.Rollback() })
	var n int
	require.NoError(t, reader.Get(&n, `SELECT COUNT(*) FROM event_log`))
	require.Equal(t, 50, n)

	type result struct {
		res []projection.RebuildResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := projection.Rebuild(ctx, log, reg, nil)
		done <- result{res, err}
	}()
	// The swap has committed once the old tables are visible aside; the
	// drop cannot take them while the reader runs.
	require.Eventually(t, func() bool {
		var aside bool
		return db.Get(&aside, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1 || '__retired_test_view')`, schema) == nil && aside
	}, 30*time.Second, 10*time.Millisecond, "the swap never committed")

	// Appends are not held back behind the drop (with a plain DROP this
	// one would wait for the reader, which ends only after it).
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	r, err := log.Append(actx, ev(eventlog.KindAgentEvent, "h1", `{"during":"drop"}`))
	require.NoError(t, err, "an append waited behind the drop of the old tables")

	require.NoError(t, reader.Rollback())
	got := <-done
	require.NoError(t, got.err)
	require.True(t, got.res[0].Online, "%+v", got.res[0])
	require.Empty(t, rebuildSchemas(t, db, schema), "the old tables are dropped once the reader is done")
	var rows int
	require.NoError(t, db.Get(&rows, `SELECT COUNT(*) FROM test_view WHERE event_log_seq = $1`, r.Event.Seq))
	require.Equal(t, 1, rows)
	requireVerified(t, log, reg)
}

// Adding the copy's foreign key to event_log waits for every transaction
// writing event_log, and appends queue behind it: an append transaction
// left open would make every append wait for it. The key waits a moment
// at a time instead: appends go on, and the rebuild starts once the open
// transaction is done.
func TestOnlineRebuildForeignKeyWaitsForOpenAppends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	view := &kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}
	log, reg, db := setup(t, "postgres", view)
	_, err := log.AppendBatch(ctx, agentEvents(20))
	require.NoError(t, err)

	open, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = open.Rollback() })
	_, err = log.AppendTx(ctx, open, ev(eventlog.KindPlanAction, "", `{"open":true}`))
	require.NoError(t, err)

	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		_, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Progress: func(p projection.Progress) {
			if p.Phase == projection.PhaseBuild && p.Done == 0 {
				select {
				case <-started:
				default:
					close(started)
				}
			}
		}})
		done <- err
	}()
	// The rebuild is trying to add its key: its shadow schema exists.
	var schema string
	require.NoError(t, db.Get(&schema, `SELECT current_schema()`))
	require.Eventually(t, func() bool { return len(rebuildSchemas(t, db, schema)) > 0 }, 30*time.Second, 10*time.Millisecond)

	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = log.Append(actx, ev(eventlog.KindAgentEvent, "h1", `{"during":"prepare"}`))
	require.NoError(t, err, "an append waited behind the copy's foreign key")
	select {
	case <-started:
		t.Fatal("the build began while a transaction writing event_log was open")
	default:
	}

	require.NoError(t, open.Commit())
	require.NoError(t, <-done)
	require.Empty(t, rebuildSchemas(t, db, schema))
	requireVerified(t, log, reg)
}

// danglingView is kindView that, while dangle is set, writes rows whose
// event_log_seq no event has.
type danglingView struct {
	kindView
	dangle atomic.Bool
}

func (v *danglingView) Apply(ctx context.Context, tx *sqlx.Tx, e eventlog.Event) error {
	return v.ApplyBatch(ctx, tx, []eventlog.Event{e})
}

func (v *danglingView) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	if v.dangle.Load() {
		events = slices.Clone(events)
		for i := range events {
			events[i].Seq += 1_000_000
		}
	}
	return v.kindView.ApplyBatch(ctx, tx, events)
}

// A role that may set session_replication_role (the tests' superuser)
// builds the copy without the server checking its foreign keys row by
// row, and checks them once after the build: a copy that breaks one fails
// the rebuild and leaves the live view; one that keeps them swaps in
// with the keys valid and enforced. A copy whose keys carry referential
// actions (contract_view's ON DELETE CASCADE) is built with the checks on.
func TestOnlineRebuildChecksKeysAfterTheBuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	view := &danglingView{kindView: kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}}
	log, reg, db := setupIn(t, b, view, contractView{})
	var batch []eventlog.Entry
	for i := range 120 {
		batch = append(batch, ev(eventlog.KindAgentEvent, fmt.Sprint("host-", i%7), fmt.Sprintf(`{"n":%d}`, i)))
	}
	_, err := log.AppendBatch(ctx, batch)
	require.NoError(t, err)

	res, err := projection.Rebuild(ctx, log, reg, nil)
	require.NoError(t, err)
	require.Len(t, res, 2)
	byName := map[string]projection.RebuildResult{}
	for _, r := range res {
		require.True(t, r.Online, "%+v", r)
		byName[r.Name] = r
	}
	require.True(t, byName["test_view"].UncheckedKeys)
	require.False(t, byName["contract_view"].UncheckedKeys, "ON DELETE CASCADE needs the triggers")
	requireVerified(t, log, reg)
	var valid []bool
	require.NoError(t, db.Select(&valid, `SELECT convalidated FROM pg_constraint WHERE conrelid = 'test_view'::regclass AND contype = 'f'`))
	require.Equal(t, []bool{true}, valid)
	_, err = db.Exec(`INSERT INTO test_view (event_log_seq, kind, host_id, payload_len) VALUES (999999, 'x', 'h', 1)`)
	require.ErrorContains(t, err, "test_view_event_log_seq_fkey")

	before, err := projection.ReadStatus(ctx, log, reg)
	require.NoError(t, err)
	view.dangle.Store(true)
	_, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Names: []string{"test_view"}})
	require.ErrorContains(t, err, "the copy breaks foreign key test_view_event_log_seq_fkey: key (event_log_seq)=(1000001)")
	view.dangle.Store(false)
	after, err := projection.ReadStatus(ctx, log, reg)
	require.NoError(t, err)
	require.Equal(t, before, after, "the live view and its checkpoint as they were")
	requireVerified(t, log, reg)
	require.Empty(t, rebuildSchemas(t, db, b.Schema))
	_, err = log.Append(ctx, ev(eventlog.KindAgentEvent, "host-1", `{"n":-1}`))
	require.NoError(t, err)
	requireVerified(t, log, reg)
}

// pacedView is a testView that prepares its pages apart from writing
// them (projection.Pipeliner), and records when it does each, so that a
// test can see whether a rebuild read ahead.
type pacedView struct {
	testView
	mu       sync.Mutex
	prepared int // pages prepared so far
	// write, when set, runs at the start of each page's write with the
	// page's number (from 1) and the pages prepared by then.
	write   func(page, prepared int) error
	written int
}

func (v *pacedView) PrepareBatch(events []eventlog.Event) (projection.PreparedBatch, error) {
	v.mu.Lock()
	v.prepared++
	v.mu.Unlock()
	return pacedBatch{v, events}, nil
}

func (v *pacedView) preparedPages() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.prepared
}

type pacedBatch struct {
	v      *pacedView
	events []eventlog.Event
}

func (b pacedBatch) WriteTx(ctx context.Context, tx *sqlx.Tx) error {
	b.v.written++
	if b.v.write != nil {
		if err := b.v.write(b.v.written, b.v.preparedPages()); err != nil {
			return err
		}
	}
	return b.v.ApplyBatch(ctx, tx, b.events)
}

// A gentle online rebuild reads the next page only once the last is
// written; by default it reads ahead while writing. SQLite's rebuild
// never reads ahead, and has no pipeline to test; on both backends
// gentle rebuilds online, and gentle with offline is refused.
func TestOnlineRebuildGentle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const pages = 4
	for _, gentle := range []bool{false, true} {
		t.Run(fmt.Sprintf("gentle=%v", gentle), func(t *testing.T) {
			v := &pacedView{}
			log, reg, db := setup(t, "postgres", v)
			_, err := log.AppendBatch(ctx, agentEvents(pages*10))
			require.NoError(t, err)
			want := viewRows(t, db)
			v.write = func(page, prepared int) error {
				if gentle {
					// Time for a read ahead to happen, were there one.
					time.Sleep(50 * time.Millisecond)
					if now := v.preparedPages(); now != page {
						return fmt.Errorf("page %d: %d pages prepared while it was written", page, now)
					}
					return nil
				}
				if page == pages {
					return nil
				}
				// The next page is prepared while this one is written.
				deadline := time.Now().Add(30 * time.Second)
				for v.preparedPages() <= page {
					if time.Now().After(deadline) {
						return fmt.Errorf("page %d: the next page was not read while it was written", page)
					}
					time.Sleep(time.Millisecond)
				}
				return nil
			}
			res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 10, Gentle: gentle})
			require.NoError(t, err)
			require.True(t, res[0].Online)
			require.Equal(t, gentle, res[0].Gentle, "RebuildResult.Gentle")
			require.Equal(t, pages, v.written)
			require.Equal(t, want, viewRows(t, db))
		})
	}

	t.Run("BothBackends", func(t *testing.T) {
		dbtest.Run(t, func(t *testing.T, backend string) {
			v := &pacedView{}
			log, reg, db := setup(t, backend, v)
			_, err := log.AppendBatch(ctx, agentEvents(10))
			require.NoError(t, err)
			want := viewRows(t, db)
			_, err = db.Exec(`DELETE FROM test_view`)
			require.NoError(t, err)
			_, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Gentle: true, Offline: true})
			require.ErrorContains(t, err, "Gentle applies to online rebuilds")
			require.Zero(t, v.written)
			require.Empty(t, viewRows(t, db), "the refused rebuild changed the view")
			// Gentle alone rebuilds online on either backend.
			res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Gentle: true})
			require.NoError(t, err)
			require.True(t, res[0].Online)
			require.True(t, res[0].Gentle)
			require.Equal(t, want, viewRows(t, db))
			// The result says how each rebuild ran: SQLite's online
			// rebuild is always gentle, an offline one never.
			res, err = projection.Rebuild(ctx, log, reg, nil)
			require.NoError(t, err)
			require.True(t, res[0].Online)
			require.Equal(t, backend == "sqlite", res[0].Gentle)
			res, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Offline: true})
			require.NoError(t, err)
			require.False(t, res[0].Online)
			require.False(t, res[0].Gentle)
			require.Equal(t, want, viewRows(t, db))
		})
	})
}
