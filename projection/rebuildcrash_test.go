package projection_test

import (
	"bufio"
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"modernc.org/sqlite"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// The rebuild crash test SIGKILLs a process in the middle of an online
// rebuild of probe_failures, at a point of each phase, and checks what it
// left. Environment:
//
//	CANONLOG_REBUILD_CRASH_ROUNDS  rounds per backend, each killing one rebuild at every point (default 1; the long run is 20)
const (
	envRebuildCrashPoint  = "CANONLOG_REBUILD_CRASH_POINT" // where the helper stops; unset in a normal test run
	envRebuildCrashURL    = "CANONLOG_REBUILD_CRASH_URL"
	envRebuildCrashRounds = "CANONLOG_REBUILD_CRASH_ROUNDS"

	// rebuildCrashBatch is the helper's BatchSize: its build takes a few
	// dozen pages.
	rebuildCrashBatch = 100
	// rebuildCrashWait bounds every wait for the helper, on a machine
	// that may run a second copy of the suite beside this one.
	rebuildCrashWait = 2 * time.Minute
)

// rebuildCrashEvents is the log's size before the first kill, per
// backend. The kills land where the test places them whatever the size;
// SQLite's is smaller because this process reads it through
// modernc.org/sqlite under the race detector, slowly, to verify it after
// every kill.
var rebuildCrashEvents = map[string]int64{"postgres": 3000, "sqlite": 1500}

// rebuildCrashPoints are where the test kills the rebuilding process.
// Each is named after the phase it lands in; backend limits it to one.
var rebuildCrashPoints = []struct{ name, backend string }{
	// The helper stops in its Progress callback: halfway through the
	// build, and after a catch-up page (the test appends before the build
	// ends, so catch-up always has work).
	{"build", ""},
	{"catch-up", ""},
	// Inside the swap's transaction, under the projection's exclusive
	// lock (on SQLite: the write lock), while it applies the last events:
	// the helper's projection stops in ApplyBatch.
	{"swap-drain", ""},
	// The swap waiting for SQLite's write lock, which the test holds; and
	// the swap having emptied the live table, copying the new rows in: a
	// trigger of the test's on the live table stops the helper there.
	{"swap-begin", "sqlite"},
	{"swap-copy", "sqlite"},
	// The swap waiting to move the live table out, which the test reads
	// in an open transaction; and, the test reading the new table instead,
	// having moved the live table out and waiting to move the new one in.
	// The test sees the wait in pg_locks before it kills.
	{"swap-out", "postgres"},
	{"swap-in", "postgres"},
	// After the swap committed: dropping the emptied shadow schema, which
	// the test holds up by reading the progress table in it. The new view
	// is in place; the old tables are left behind.
	{"swap-done", "postgres"},
}

// TestRebuildCrash SIGKILLs a process rebuilding probe_failures online in
// each phase — build, catch-up, swap — while writers append, and checks
// after each kill what a restarted service would find: the live view
// equal to a fresh derivation, its checkpoint as it was before the
// rebuild (and on PostgreSQL the live table the same table: nothing was
// half-swapped), appends still applied to it, on PostgreSQL the killed
// rebuild's shadow schema left behind, and the next rebuild removing it
// and succeeding, leaving no rebuild schema.
func TestRebuildCrash(t *testing.T) {
	t.Parallel()
	rounds := 1
	if s := os.Getenv(envRebuildCrashRounds); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, envRebuildCrashRounds)
		rounds = n
	}
	dbtest.Run(t, func(t *testing.T, backend string) {
		rc := newRebuildCrash(t, backend)
		start := time.Now()
		kills := 0
		for range rounds {
			for _, p := range rebuildCrashPoints {
				if p.backend != "" && p.backend != backend {
					continue
				}
				// Each kill starts from what the one before left: after a
				// failure, the rest would judge that.
				if !t.Run(p.name, func(t *testing.T) { rc.kill(t, p.name) }) {
					t.FailNow()
				}
				kills++
			}
		}
		// The next kill's checks verify the view the last rebuild made;
		// the last one's is left.
		rc.verify(t, "after the last rebuild")
		t.Logf("%s: %d kills, %d events, %s", backend, kills, rc.next.Load(), time.Since(start).Round(time.Millisecond))
	})
}

// rebuildCrash is one database and what the test knows of it.
type rebuildCrash struct {
	b    dbtest.Backend
	db   *sqlx.DB
	log  *eventlog.Log
	reg  *projection.Registry
	next atomic.Int64 // entries made so far: the next entry's number
	// kills counts the helpers started, naming their sessions.
	kills int
}

func newRebuildCrash(t *testing.T, backend string) *rebuildCrash {
	ctx := context.Background()
	rc := &rebuildCrash{b: dbtest.New(t, backend)}
	if backend == "sqlite" {
		registerRebuildCrashStall(t) // before the pool opens its connections
	}
	rc.db = rc.b.Open(t)
	rc.reg = projection.Must(projection.NewRegistry(probefailures.New()))
	var err error
	rc.log, err = eventlog.New(rc.db, &eventlog.Config{Hook: rc.reg})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rc.log.Close() })
	_, err = projection.Migrate(ctx, rc.log, rc.reg)
	require.NoError(t, err)
	if backend == "sqlite" {
		// In the helper stopping at swap-copy, the trigger stops the swap
		// at its first row copied into the live table; elsewhere it does
		// nothing.
		_, err = rc.db.Exec(`CREATE TRIGGER rebuild_crash_stall AFTER INSERT ON probe_failures BEGIN SELECT rebuild_crash_stall(); END`)
		require.NoError(t, err)
	}
	for rc.next.Load() < rebuildCrashEvents[backend] {
		require.NoError(t, rc.append(ctx, 500))
	}
	_, err = projection.Rebuild(ctx, rc.log, rc.reg, &projection.RebuildOptions{Names: []string{probefailures.Name}})
	require.NoError(t, err)
	return rc
}

// rebuildCrashStall is what the SQL function rebuild_crash_stall() does
// in this process: nothing unless set (the helper sets it).
var (
	rebuildCrashStall     atomic.Pointer[func()]
	rebuildCrashStallOnce sync.Once
	rebuildCrashStallErr  error
)

// registerRebuildCrashStall registers the SQL function
// rebuild_crash_stall() with the SQLite driver, for the connections
// opened after it: the test's trigger on probe_failures calls it for each
// row inserted.
func registerRebuildCrashStall(t testing.TB) {
	rebuildCrashStallOnce.Do(func() {
		rebuildCrashStallErr = sqlite.RegisterScalarFunction("rebuild_crash_stall", 0, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
			if f := rebuildCrashStall.Load(); f != nil {
				(*f)()
			}
			return nil, nil
		})
	})
	if rebuildCrashStallErr != nil {
		t.Fatalf("register rebuild_crash_stall: %v", rebuildCrashStallErr)
	}
}

// rebuildCrashEntry returns entry i: half of them enforce-mode probe
// results failing one to three controls, the rest other agent events
// (which probe_failures reads and skips) and events of another kind.
func rebuildCrashEntry(i int64) eventlog.Entry {
	e := eventlog.Entry{
		Kind: eventlog.KindAgentEvent, HostID: fmt.Sprintf("host-%03d", i%40), RolloutID: fmt.Sprintf("r-%d", i%3),
		EventID: fmt.Sprintf("rc-%d", i),
	}
	switch i % 4 {
	case 0, 1:
		var subs []string
		for c := range 1 + i%3 {
			subs = append(subs, fmt.Sprintf(`{"control_id":"CIS-%d.%d","framework":"cis","status":"fail"}`, i%7, c))
		}
		subs = append(subs, `{"control_id":"CIS-9.9","framework":"cis","status":"pass"}`)
		e.Payload = json.RawMessage(fmt.Sprintf(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"probe-%d","sub_results":[%s]}`,
			i%5, strings.Join(subs, ",")))
	case 2:
		e.Payload = json.RawMessage(fmt.Sprintf(`{"type":"Heartbeat","n":%d}`, i))
	default:
		e.Kind = eventlog.KindEffect
		e.Payload = json.RawMessage(`{"effect":"restart","ok":true}`)
	}
	return e
}

// append appends the next n entries as one batch, again while the error
// is retryable (on SQLite a writer may wait out its busy timeout behind
// the test's own lock and the helper's swap): the event ids make it land
// once.
func (rc *rebuildCrash) append(ctx context.Context, n int) error {
	first := rc.next.Add(int64(n)) - int64(n)
	batch := make([]eventlog.Entry, n)
	for i := range batch {
		batch[i] = rebuildCrashEntry(first + int64(i))
	}
	_, err := rc.log.AppendBatch(ctx, batch)
	for err != nil && eventlog.Retryable(err) {
		_, err = rc.log.AppendBatch(ctx, batch)
	}
	return err
}

// writer appends small batches until the returned function is called;
// that function waits for it and fails t on its error.
func (rc *rebuildCrash) writer(t *testing.T) func() {
	stop, errc := make(chan struct{}), make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if err := rc.append(context.Background(), 1+i%3); err != nil {
				errc <- err
				return
			}
		}
	})
	return func() {
		close(stop)
		wg.Wait()
		select {
		case err := <-errc:
			require.NoError(t, err, "writer")
		default:
		}
	}
}

func (rc *rebuildCrash) shadow() string { return rc.b.Schema + "__rebuild_" + probefailures.Name }

// oid returns the oid of table on PostgreSQL (0 when there is none), and
// 0 on SQLite.
func (rc *rebuildCrash) oid(t *testing.T, table string) int64 {
	t.Helper()
	if rc.b.Dialect != eventlog.Postgres {
		return 0
	}
	var oid *int64
	require.NoError(t, rc.db.Get(&oid, `SELECT to_regclass($1)::oid::bigint`, table))
	if oid == nil {
		return 0
	}
	return *oid
}

// rebuildSchemas lists the schemas of rebuilds of the test's schema.
func (rc *rebuildCrash) rebuildSchemas(t *testing.T) []string {
	t.Helper()
	if rc.b.Dialect != eventlog.Postgres {
		return nil
	}
	var names []string
	require.NoError(t, rc.db.Select(&names, `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) AND nspname <> $2 ORDER BY 1`,
		rc.b.Schema+"__", rc.b.Schema))
	return names
}

func (rc *rebuildCrash) status(t *testing.T) projection.Status {
	t.Helper()
	sts, err := projection.ReadStatus(context.Background(), rc.log, rc.reg)
	require.NoError(t, err)
	st, ok := sts.Get(probefailures.Name)
	require.True(t, ok)
	return st
}

func (rc *rebuildCrash) verify(t *testing.T, when string) {
	t.Helper()
	res, err := projection.Verify(context.Background(), rc.log, rc.reg, []string{probefailures.Name})
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.True(t, res[0].Equal, "%s: probe_failures differs from a fresh derivation: %+v", when, res[0])
}

// kill starts a helper rebuilding probe_failures, kills it at point and
// checks what it left.
func (rc *rebuildCrash) kill(t *testing.T, point string) {
	ctx := context.Background()
	pg := rc.b.Dialect == eventlog.Postgres
	require.LessOrEqual(t, len(rc.shadow()), 63, "the shadow schema's name would be hashed: %s", rc.shadow())
	before := rc.status(t)
	liveOID := rc.oid(t, "probe_failures")

	var laps []string
	lapAt := time.Now()
	lap := func(name string) {
		laps = append(laps, fmt.Sprintf("%s %s", name, time.Since(lapAt).Round(time.Millisecond)))
		lapAt = time.Now()
	}

	rc.kills++
	tag := fmt.Sprintf("%s_rc%d", rc.b.Schema, rc.kills)
	h := startRebuildHelper(t, point, rc.b.SessionURL(tag))
	stopWriter := sync.OnceFunc(rc.writer(t))
	// However the test ends, the helper and the writer end with it, and
	// the lock the test holds is released.
	var (
		holder *sqlx.Tx
		waited bool
	)
	defer func() {
		if holder != nil {
			_ = holder.Rollback()
		}
		if !waited {
			_ = h.cmd.Process.Kill()
			_ = h.cmd.Wait()
		}
		stopWriter()
	}()

	// The helper has made its copy and is about to take its start
	// position: it goes on with "go".
	h.expect(t, "started")
	lap("start")
	require.NoError(t, rc.append(ctx, 20))
	goLine := "go"
	if point == "catch-up" {
		// At its first catch-up round, before it reads, the helper waits
		// again: what the test appends now is for the catch-up. "go
		// page" makes it stop after its first catch-up page, which these
		// events guarantee; but on PostgreSQL only once the followers'
		// horizon has passed them, which a transaction elsewhere on the
		// server can hold up. Then "go round" makes it stop at the start
		// of its first catch-up round instead.
		h.send(t, "go")
		h.expect(t, "catch-up")
		require.NoError(t, rc.append(ctx, 20))
		goLine = "go page"
		if pg && !rc.waitHorizon(t, 10*time.Second) {
			goLine = "go round"
		}
	}
	hold := func(stmt string) {
		var err error
		holder, err = rc.db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		if stmt != "" {
			_, err = holder.Exec(stmt)
			require.NoError(t, err)
		}
	}
	switch point {
	case "swap-begin":
		hold("") // BEGIN IMMEDIATE: SQLite's write lock
	case "swap-out":
		hold(`LOCK TABLE probe_failures IN ACCESS SHARE MODE`)
	case "swap-in":
		hold(`LOCK TABLE ` + rc.shadow() + `.probe_failures IN ACCESS SHARE MODE`)
	case "swap-done":
		// canonlog_rebuild: the progress table the rebuild keeps in its
		// shadow schema, which the swap leaves there.
		hold(`LOCK TABLE ` + rc.shadow() + `.canonlog_rebuild IN ACCESS SHARE MODE`)
	}
	h.send(t, goLine)
	switch point {
	case "build", "catch-up":
		h.expect(t, "killme "+point)
	case "swap-drain":
		// The helper is about to take the lock: these are for the swap
		// to apply.
		h.expect(t, "swap")
		require.NoError(t, rc.append(ctx, 5))
		h.send(t, "go")
		h.expect(t, "killme swap")
	case "swap-copy":
		h.expect(t, "swap")
		h.expect(t, "killme swap")
	case "swap-begin":
		// The helper says "swap" just before BEGIN IMMEDIATE, which
		// waits up to its busy timeout (10 s) for the test's lock.
		h.expect(t, "swap")
		time.Sleep(100 * time.Millisecond)
	case "swap-out":
		h.expect(t, "swap")
		rc.waitLock(t, h, tag, liveOID, 0)
	case "swap-in":
		h.expect(t, "swap")
		held := rc.waitLock(t, h, tag, rc.oid(t, rc.shadow()+".probe_failures"), liveOID)
		require.True(t, held, "the swap waiting to move the new table in has not moved the live one out in the same transaction")
	case "swap-done":
		h.expect(t, "swap")
		rc.waitLock(t, h, tag, rc.oid(t, rc.shadow()+".canonlog_rebuild"), 0)
	}
	lap("run")
	require.NoError(t, h.cmd.Process.Kill())
	err := h.cmd.Wait()
	waited = true
	require.True(t, rebuildCrashKilled(err), "helper at %s: %v; lines %q; stderr: %s", point, err, h.seen, h.stderr.String())
	if holder != nil {
		// Released at once. The killed helper's backend waiting for it
		// then finishes its statement, and starts no other: in a
		// transaction (swap-out, swap-in) that rolls back; at swap-done
		// the statement is DROP SCHEMA of the shadow, on its own, and
		// it commits.
		require.NoError(t, holder.Rollback())
		holder = nil
	}
	rc.b.WaitSessionsGone(t, tag)
	stopWriter()

	after := rc.status(t)
	require.False(t, after.Stale, "%+v", after)
	left := rc.rebuildSchemas(t)
	if point == "swap-done" {
		// The swap committed: the new view is in place, with its
		// checkpoint; the old tables were left behind.
		require.Equal(t, before.Version, after.BuiltVersion)
		require.Greater(t, after.BuiltSeq, before.BuiltSeq, "checkpoint after the swap committed")
		require.True(t, after.BuiltAt.After(before.BuiltAt), "checkpoint after the swap committed: built at %s, was %s", after.BuiltAt, before.BuiltAt)
		require.NotEqual(t, liveOID, rc.oid(t, "probe_failures"), "the live table after the swap committed is the old one")
		require.Contains(t, left, rc.b.Schema+"__retired_"+probefailures.Name, "the killed rebuild's old tables")
		require.Subset(t, []string{rc.shadow(), rc.b.Schema + "__retired_" + probefailures.Name}, left)
	} else {
		// The live view as it was: the killed rebuild changed nothing.
		require.Equal(t, before.BuiltVersion, after.BuiltVersion, "checkpoint after a kill at %s", point)
		require.Equal(t, before.BuiltSeq, after.BuiltSeq, "checkpoint after a kill at %s", point)
		require.True(t, before.BuiltAt.Equal(after.BuiltAt), "checkpoint after a kill at %s: built at %s, was %s", point, after.BuiltAt, before.BuiltAt)
		if pg {
			require.Equal(t, liveOID, rc.oid(t, "probe_failures"), "the live table after a kill at %s is another table", point)
			require.Equal(t, []string{rc.shadow()}, left, "the killed rebuild's shadow schema")
		}
	}
	if point == "swap-copy" {
		// The one point where the killed process had written the
		// database file.
		var ok string
		require.NoError(t, rc.db.Get(&ok, `PRAGMA integrity_check`))
		require.Equal(t, "ok", ok)
	}
	// Equal to a fresh derivation.
	lap("kill")
	rc.verify(t, "after the kill")
	lap("verify")

	// Appends go on, and reach the live view.
	seq, err := rc.log.Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "host-after", RolloutID: "r-after",
		Payload: json.RawMessage(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"after-kill","sub_results":[` +
			`{"control_id":"A-1","framework":"cis","status":"fail"},{"control_id":"A-2","framework":"cis","status":"fail"}]}`)})
	require.NoError(t, err)
	var rows int
	require.NoError(t, rc.db.Get(&rows, rc.db.Rebind(`SELECT COUNT(*) FROM probe_failures WHERE event_log_seq = ?`), seq.Event.Seq))
	require.Equal(t, 2, rows, "an append after a kill at %s", point)

	lap("append")
	// The next rebuild removes what the killed one left and succeeds.
	res, err := projection.Rebuild(ctx, rc.log, rc.reg, &projection.RebuildOptions{Names: []string{probefailures.Name}})
	require.NoError(t, err, "the rebuild after a kill at %s", point)
	require.Len(t, res, 1)
	require.True(t, res[0].Online, "%+v", res[0])
	require.Empty(t, rc.rebuildSchemas(t), "rebuild schemas after the next rebuild")
	last, err := rc.log.LastSeq(ctx)
	require.NoError(t, err)
	rebuilt := rc.status(t)
	require.Equal(t, last, rebuilt.BuiltSeq)
	require.False(t, rebuilt.Stale)
	lap("rebuild")
	t.Logf("killed at %s (%s; lines %q), leaving schemas %q; the next rebuild: %d events, %d catch-up rounds; %v",
		point, goLine, h.seen, left, res[0].Events, res[0].CatchUpRounds, laps)
}

// waitHorizon waits up to limit until a follower on PostgreSQL can read
// every event in the log, and reports whether it can: until no
// transaction older than the last append's is still running anywhere on
// the server. The followers' horizon is the server's oldest running
// transaction, and other tests or databases may hold one open for a
// while (an append waiting for a projection's lock holds one); until it
// moves, a catch-up finds nothing to do and leaves the events to the
// swap.
func (rc *rebuildCrash) waitHorizon(t *testing.T, limit time.Duration) bool {
	t.Helper()
	var last string
	require.NoError(t, rc.db.Get(&last, `SELECT max(tx_id)::text FROM event_log`))
	deadline := time.Now().Add(limit)
	for {
		var past bool
		require.NoError(t, rc.db.Get(&past, `SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::xid8`, last))
		if past {
			return true
		}
		if time.Now().After(deadline) {
			var oldest []string
			_ = rc.db.Select(&oldest, `SELECT pid || ' ' || datname || ' ' || coalesce(application_name, '') || ': ' || left(query, 60)
FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY age(backend_xid) DESC LIMIT 3`)
			t.Logf("transactions older than the last append still run after %s: %q", limit, oldest)
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLock waits until a session tagged tag waits for a lock on the table
// whose oid is waitOID, and reports whether one of them then held the
// exclusive lock on the table whose oid is heldOID.
func (rc *rebuildCrash) waitLock(t *testing.T, h *rebuildHelper, tag string, waitOID, heldOID int64) bool {
	t.Helper()
	require.NotZero(t, waitOID)
	deadline := time.Now().Add(rebuildCrashWait)
	for {
		var waiting, held int
		require.NoError(t, rc.db.QueryRowx(`SELECT
  COUNT(*) FILTER (WHERE NOT l.granted AND l.relation = $2::oid),
  COUNT(*) FILTER (WHERE l.granted AND l.relation = $3::oid AND l.mode = 'AccessExclusiveLock')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE a.application_name = $1 AND l.locktype = 'relation'`, tag, waitOID, heldOID).Scan(&waiting, &held))
		if waiting > 0 {
			return held > 0
		}
		select {
		case <-h.exited:
			t.Fatalf("helper ended before its swap waited for the lock: lines %q; stderr: %s", h.seen, h.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the helper's swap never waited for the lock: lines %q; stderr: %s", h.seen, h.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rebuildHelper is a running TestRebuildCrashHelperProcess.
type rebuildHelper struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // its stdout, line by line; closed when it ends
	exited chan struct{} // closed when its stdout ends
	stderr *testio.SyncBuffer
	seen   []string
}

func startRebuildHelper(t *testing.T, point, url string) *rebuildHelper {
	t.Helper()
	h := &rebuildHelper{lines: make(chan string, 64), exited: make(chan struct{}), stderr: &testio.SyncBuffer{}}
	h.cmd = exec.Command(os.Args[0], "-test.run=^TestRebuildCrashHelperProcess$", "-test.count=1")
	h.cmd.Env = append(os.Environ(), envRebuildCrashPoint+"="+point, envRebuildCrashURL+"="+url)
	h.cmd.Stderr = h.stderr
	var err error
	h.stdin, err = h.cmd.StdinPipe()
	require.NoError(t, err)
	out, err := h.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, h.cmd.Start())
	go func() {
		defer close(h.exited)
		defer close(h.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	return h
}

// expect waits for the helper to say want.
func (h *rebuildHelper) expect(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(rebuildCrashWait)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper ended before it said %q: lines %q; stderr: %s", want, h.seen, h.stderr.String())
			}
			h.seen = append(h.seen, l)
			if l == want {
				return
			}
		case <-timeout:
			t.Fatalf("helper did not say %q in %s: lines %q; stderr: %s", want, rebuildCrashWait, h.seen, h.stderr.String())
		}
	}
}

func (h *rebuildHelper) send(t *testing.T, line string) {
	t.Helper()
	_, err := io.WriteString(h.stdin, line+"\n")
	require.NoError(t, err)
}

// rebuildCrashKilled reports whether SIGKILL ended the process.
func rebuildCrashKilled(err error) bool {
	ee, ok := err.(*exec.ExitError)
	if !ok {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestRebuildCrashHelperProcess is the process TestRebuildCrash kills: it
// is not a test of its own and skips unless started by it. It rebuilds
// probe_failures online and talks to the test, a line at a time: it says
// "started" once its copy is made and its start position taken, and waits
// for "go"; at catch-up it says "catch-up" at the first round, before
// reading, and waits again ("go page" to stop after a catch-up page, "go
// round" to stop at the start of the round); it says "swap" when
// the swap begins (at swap-drain it then waits for "go" again); at build,
// catch-up, swap-drain and swap-copy it says "killme PHASE" at its point
// and waits for the kill. When its stdin
// ends (the test is gone) it exits.
func TestRebuildCrashHelperProcess(t *testing.T) {
	point := os.Getenv(envRebuildCrashPoint)
	if point == "" {
		t.Skip("started by TestRebuildCrash only")
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "rebuild crash helper: "+format+"\n", args...)
		os.Exit(1)
	}
	say := func(s string) {
		if _, err := os.Stdout.WriteString(s + "\n"); err != nil {
			fail("write: %v", err)
		}
	}
	in := bufio.NewReader(os.Stdin)
	wait := func() string {
		line, err := in.ReadString('\n')
		if err != nil {
			fail("read: %v", err)
		}
		return strings.TrimSpace(line)
	}
	stop := func(phase string) {
		say("killme " + phase)
		wait() // the test sends nothing more: the kill comes first
		fail("the test wrote instead of killing")
	}
	var swapping atomic.Bool
	if point == "swap-copy" {
		// Before the database is opened: its connections get the
		// function the test's trigger calls.
		registerRebuildCrashStall(t)
		stall := func() {
			if swapping.Load() {
				stop("swap")
			}
		}
		rebuildCrashStall.Store(&stall)
	}
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, os.Getenv(envRebuildCrashURL))
	if err != nil {
		fail("open: %v", err)
	}
	defer db.Close()
	view := &stallingFailures{Projection: probefailures.New(), stall: func() {
		if point == "swap-drain" && swapping.Load() {
			stop("swap")
		}
	}}
	reg := projection.Must(projection.NewRegistry(view))
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	if err != nil {
		fail("log: %v", err)
	}
	var (
		started, catchingUp bool
		goLine              string
		built               int64
	)
	progress := func(p projection.Progress) {
		switch p.Phase {
		case projection.PhaseBuild:
			if !started {
				started = true
				say("started")
				goLine = wait()
				return
			}
			built = p.Done
			if point == "build" && p.Done > 0 && p.Done >= p.Total/2 {
				stop("build")
			}
		case projection.PhaseCatchUp:
			if point != "catch-up" {
				return
			}
			if !catchingUp {
				catchingUp = true
				say("catch-up")
				goLine = wait()
			}
			if p.Done > built || goLine == "go round" {
				stop("catch-up")
			}
		case projection.PhaseSwap:
			if !swapping.Swap(true) {
				say("swap")
				if point == "swap-drain" {
					wait()
				}
			}
		default:
			fail("phase %q: the rebuild is not online", p.Phase)
		}
	}
	res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Names: []string{probefailures.Name}, BatchSize: rebuildCrashBatch, Progress: progress})
	if err != nil {
		fail("rebuild: %v", err)
	}
	fail("the rebuild ended before the kill: %+v", res)
}

// stallingFailures is probe_failures calling stall before it applies
// events.
type stallingFailures struct {
	*probefailures.Projection
	stall func()
}

func (p *stallingFailures) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	p.stall()
	return p.Projection.Apply(ctx, tx, ev)
}

func (p *stallingFailures) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	p.stall()
	return p.Projection.ApplyBatch(ctx, tx, events)
}
