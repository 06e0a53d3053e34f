package consumer_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
)

// The kill test SIGKILLs consumer processes while writers append, and
// checks that the consumer's effects in the database are exactly once.
// Environment:
//
//	CANONLOG_CONSUMER_KILLS      kills per backend (default 3; the long run is 50)
//	CANONLOG_CONSUMER_KILL_SEED  seed of the random choices (default: from the clock; logged)
const (
	envKillHelper = "CANONLOG_CONSUMER_KILL_HELPER" // "1" in a helper process; unset in a normal test run
	envKillURL    = "CANONLOG_CONSUMER_KILL_URL"
	envKillProc   = "CANONLOG_CONSUMER_KILL_PROC"
	envKillSeed   = "CANONLOG_CONSUMER_KILL_SEED"
	envKills      = "CANONLOG_CONSUMER_KILLS"

	defaultKills = 3
	// maxFailover is the product's bound: a standby takes over within it
	// once the active instance is killed.
	maxFailover = 5 * time.Second
	// killWriters append while consumers are killed: 8 on PostgreSQL. On
	// SQLite, where every write takes the one write lock, 4: with 8 a
	// starting consumer waited seconds for the lock, and the run took
	// three times as long for no more coverage.
	killWritersPostgres = 8
	killWritersSQLite   = 4
	// killConsumerName is the consumer every helper process runs.
	killConsumerName = "kill_effects"
)

// killKinds are the consumer's kinds; the writers append a third one it
// must skip.
var killKinds = []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindEffect}

// killTables are the consumer's view: one row per handled event in
// consumer_effects, deliberately without a unique key so that an event
// handled twice shows as two rows; a per-host count, upserted; and per
// process the pages it handled, which tells the test which process is
// active (it commits with the effects, so it is exactly once with them).
var killTables = []string{
	`CREATE TABLE consumer_effects (seq BIGINT NOT NULL, event_id TEXT NOT NULL, host_id TEXT NOT NULL, proc TEXT NOT NULL)`,
	`CREATE INDEX consumer_effects_seq ON consumer_effects (seq)`,
	`CREATE TABLE consumer_host_counts (host_id TEXT PRIMARY KEY, n BIGINT NOT NULL)`,
	`CREATE TABLE consumer_procs (proc TEXT PRIMARY KEY, pages BIGINT NOT NULL)`,
}

// killHandleTx is the helper's transactional handler: it records each
// event, counts it for its host, notes that proc handled a page, and
// lingers a little, so that kills land inside its transaction too.
func killHandleTx(proc string, rng *rand.Rand) consumer.TxHandlerFunc {
	return func(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
		counts := map[string]int{}
		for _, ev := range events {
			if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO consumer_effects (seq, event_id, host_id, proc) VALUES (?, ?, ?, ?)`),
				ev.Seq, ev.EventID, ev.HostID, proc); err != nil {
				return err
			}
			counts[ev.HostID]++
		}
		for _, host := range slices.Sorted(maps.Keys(counts)) {
			if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO consumer_host_counts (host_id, n) VALUES (?, ?)
ON CONFLICT (host_id) DO UPDATE SET n = consumer_host_counts.n + excluded.n`), host, counts[host]); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO consumer_procs (proc, pages) VALUES (?, 1)
ON CONFLICT (proc) DO UPDATE SET pages = consumer_procs.pages + 1`), proc); err != nil {
			return err
		}
		time.Sleep(time.Duration(rng.IntN(4000)) * time.Microsecond)
		return nil
	}
}

// TestConsumerKillHelper is the consumer process TestConsumerKill starts
// and kills: it is not a test of its own and skips unless started by it.
// It runs the consumer until it is killed, or until SIGTERM, when Run
// must return nil; it exits when its stdin closes (the test is gone).
func TestConsumerKillHelper(t *testing.T) {
	if os.Getenv(envKillHelper) != "1" {
		t.Skip("started by TestConsumerKill only")
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "consumer kill helper: "+format+"\n", args...)
		os.Exit(1)
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		fail("stdin closed: the test is gone")
	}()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	proc := os.Getenv(envKillProc)
	db, err := eventlog.OpenDB(ctx, os.Getenv(envKillURL))
	if err != nil {
		fail("open: %v", err)
	}
	defer db.Close()
	if db.DriverName() == "postgres" {
		db.SetMaxOpenConns(4)
	}
	log, err := eventlog.New(db, nil)
	if err != nil {
		fail("log: %v", err)
	}
	c, err := consumer.New(log, &consumer.Config{
		Name: killConsumerName, Kinds: killKinds, HandleTx: killHandleTx(proc, rand.New(rand.NewPCG(uint64(os.Getpid()), 0))),
		PageSize: 25, PollInterval: 20 * time.Millisecond, MinBackoff: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		fail("new: %v", err)
	}
	if err := c.Run(ctx); err != nil {
		fail("run: %v", err)
	}
}

// killProc is one helper process.
type killProc struct {
	name, tag string
	cmd       *exec.Cmd
	stdin     io.Closer
	stderr    *testio.SyncBuffer
	done      chan struct{} // closed when the process has exited
	err       error         // cmd.Wait's, once done is closed
}

// exited reports whether the process has exited.
func (p *killProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// killedBySIGKILL reports whether SIGKILL ended the process.
func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// killRun is one backend's run of TestConsumerKill.
type killRun struct {
	t       *testing.T
	b       dbtest.Backend
	log     *eventlog.Log
	mon     *sqlx.DB // the test's own queries, beside the writers' pool
	rng     *rand.Rand
	procs   []*killProc
	late    atomic.Int64 // AppendTx commits with a lower seq than an event committed before them
	retries atomic.Int64 // appends retried after a Retryable error
}

// start starts helper process name.
func (k *killRun) start(name string) *killProc {
	t := k.t
	t.Helper()
	p := &killProc{name: name, tag: k.b.Schema + "_" + name, stderr: &testio.SyncBuffer{}, done: make(chan struct{})}
	if k.b.Schema == "" {
		p.tag = name
	}
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestConsumerKillHelper$", "-test.count=1")
	p.cmd.Env = append(os.Environ(), envKillHelper+"=1", envKillURL+"="+k.b.SessionURL(p.tag), envKillProc+"="+name)
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, p.stderr
	stdin, err := p.cmd.StdinPipe()
	require.NoError(t, err)
	p.stdin = stdin
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	k.procs = append(k.procs, p)
	return p
}

// kill SIGKILLs p and waits for it to exit.
func (k *killRun) kill(p *killProc) {
	k.t.Helper()
	_ = p.cmd.Process.Kill()
	<-p.done
	require.True(k.t, killedBySIGKILL(p.err), "consumer %s ended before the kill (%v): %s", p.name, p.err, p.stderr.String())
}

// stop ends p with SIGTERM: Run must return nil, and the helper exit 0.
func (k *killRun) stop(p *killProc) {
	k.t.Helper()
	require.NoError(k.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		k.t.Fatalf("consumer %s did not stop within a minute of SIGTERM", p.name)
	}
	require.NoError(k.t, p.err, "consumer %s: %s", p.name, p.stderr.String())
}

// waitFor polls cond every few milliseconds until it holds and returns
// how long that took. It fails the test after a minute, or when one of
// watch exits.
func (k *killRun) waitFor(what string, cond func() bool, watch ...*killProc) time.Duration {
	k.t.Helper()
	start := time.Now()
	for !cond() {
		for _, p := range watch {
			if p.exited() {
				k.t.Fatalf("waiting for %s: consumer %s exited (%v): %s", what, p.name, p.err, p.stderr.String())
			}
		}
		if time.Since(start) > time.Minute {
			k.t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(3 * time.Millisecond)
	}
	return time.Since(start)
}

// count runs a query returning one number on the test's own pool.
func (k *killRun) count(query string, args ...any) int64 {
	k.t.Helper()
	var n int64
	require.NoError(k.t, k.mon.Get(&n, k.mon.Rebind(query), args...))
	return n
}

// handled reports whether p has committed a page of events.
func (k *killRun) handled(p *killProc) bool {
	return k.count(`SELECT COUNT(*) FROM consumer_procs WHERE proc = ?`, p.name) > 0
}

// waitingOnLock reports whether p waits for the consumer's advisory lock
// (PostgreSQL): it is the standby.
func (k *killRun) waitingOnLock(p *killProc) bool {
	return k.count(`SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = ?`, p.tag) > 0
}

// write appends until ctx ends: single events, batches, and (on
// PostgreSQL) transactions held open for 50–300 ms, so that their lower
// seqs commit after higher ones. Entries carry event ids, so a retry after
// a Retryable error lands once.
func (k *killRun) write(ctx context.Context, w int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, uint64(w)))
	entry := func(op, i int) eventlog.Entry {
		kind := eventlog.KindAgentEvent
		switch r := rng.IntN(10); {
		case r >= 8:
			kind = eventlog.KindPlanAction // not the consumer's
		case r >= 5:
			kind = eventlog.KindEffect
		}
		return eventlog.Entry{Kind: kind, HostID: fmt.Sprintf("h%02d", rng.IntN(16)), EventID: fmt.Sprintf("kill/w%d/%d/%d", w, op, i),
			Payload: json.RawMessage(fmt.Sprintf(`{"w":%d,"op":%d,"i":%d}`, w, op, i))}
	}
	for op := 0; ctx.Err() == nil; op++ {
		var entries []eventlog.Entry
		mode := rng.IntN(10)
		n := 1
		if mode >= 4 {
			n = 1 + rng.IntN(8)
		}
		for i := range n {
			entries = append(entries, entry(op, i))
		}
		hold := time.Duration(0)
		if mode >= 8 && k.b.Dialect == eventlog.Postgres {
			hold = time.Duration(50+rng.IntN(251)) * time.Millisecond
		}
		var err error
		for attempt := 0; ; attempt++ {
			switch {
			case mode < 4:
				_, err = k.log.Append(ctx, entries[0])
			case mode < 8:
				_, err = k.log.AppendBatch(ctx, entries)
			default:
				err = k.appendHeld(ctx, entries, hold)
			}
			if err == nil || !eventlog.Retryable(err) || attempt == 20 || ctx.Err() != nil {
				break
			}
			k.retries.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // cancelled mid-append: it may or may not have landed, which the checks do not mind
			}
			return fmt.Errorf("writer %d: %w", w, err)
		}
		time.Sleep(time.Duration(1+rng.IntN(15)) * time.Millisecond)
	}
	return nil
}

// appendHeld appends entries with AppendTx in a transaction it holds open
// for hold before it commits, and counts the commit as late when an event
// with a higher seq committed meanwhile.
func (k *killRun) appendHeld(ctx context.Context, entries []eventlog.Entry, hold time.Duration) error {
	tx, err := k.log.DB().BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	res, err := k.log.AppendTx(ctx, tx, entries...)
	if err != nil {
		return err
	}
	time.Sleep(hold)
	last, err := k.log.LastSeqTx(ctx, tx) // READ COMMITTED: the committed events and this transaction's
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if last > res[len(res)-1].Event.Seq {
		k.late.Add(1)
	}
	return nil
}

// TestConsumerKill SIGKILLs transactional consumer processes
// (TestConsumerKillHelper) at random moments while 8 writers append, and
// checks that the consumer's effects are exactly once: every event of its
// kinds recorded once in consumer_effects — a table without a unique key,
// so a second delivery would show — none lost, and its per-host counts
// equal to a fresh derivation from the log.
//
// On PostgreSQL two processes run at a time: the active one, and a
// standby waiting for the consumer's advisory lock. Each kill hits the
// active one, and the test measures the failover: from the kill until the
// standby commits its first page. Some writers hold their transaction
// open 50–300 ms, so lower seqs commit late, and the follower must still
// deliver them. On SQLite (no advisory lock, one instance at a time) the
// killed process is replaced by a new one.
func TestConsumerKill(t *testing.T) {
	t.Parallel()
	kills := defaultKills
	if s := os.Getenv(envKills); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, envKills)
		kills = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(envKillSeed); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, envKillSeed)
		seed = n
	}
	t.Logf("%s=%d %s=%d", envKillSeed, seed, envKills, kills)
	dbtest.Run(t, func(t *testing.T, backend string) {
		b := dbtest.New(t, backend)
		db := b.Migrated(t)
		for _, q := range killTables {
			_, err := db.Exec(q)
			require.NoError(t, err)
		}
		log, err := eventlog.New(db, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = log.Close() })
		k := &killRun{t: t, b: b, log: log, mon: b.Open(t), rng: rand.New(rand.NewPCG(seed, uint64(len(backend))))}
		// Registered after the schema's cleanup, so it runs before it: no
		// helper outlives the test.
		t.Cleanup(func() {
			for _, p := range k.procs {
				_ = p.cmd.Process.Kill()
				<-p.done
				_ = p.stdin.Close()
				b.WaitSessionsGone(t, p.tag)
			}
		})
		began := time.Now()

		ctx, stopWriters := context.WithCancel(context.Background())
		defer stopWriters()
		var writers sync.WaitGroup
		nWriters := killWritersPostgres
		if backend == "sqlite" {
			nWriters = killWritersSQLite
		}
		writeErrs := make(chan error, nWriters)
		for w := range nWriters {
			writers.Go(func() { writeErrs <- k.write(ctx, w, seed) })
		}

		// gaps are the failovers (PostgreSQL) or restarts (SQLite);
		// takeovers the part of each until the new process had bumped the
		// generation (the lock, then its takeover transaction).
		var gaps, takeovers []time.Duration
		generation := func() int64 {
			return k.count(`SELECT COALESCE(MAX(generation), 0) FROM canonlog_consumers WHERE name = ?`, killConsumerName)
		}
		active := k.start("c0")
		k.waitFor("the first consumer to handle events", func() bool { return k.handled(active) }, active)
		for i := 1; i <= kills; i++ {
			var standby *killProc
			if backend == "postgres" {
				standby = k.start(fmt.Sprintf("c%d", i))
				k.waitFor("consumer "+standby.name+" to wait for the lock", func() bool { return k.waitingOnLock(standby) }, standby, active)
				require.False(t, k.handled(standby), "the standby handled events while %s held the lock", active.name)
			}
			time.Sleep(time.Duration(k.rng.IntN(600)) * time.Millisecond)
			require.False(t, active.exited(), "consumer %s exited before its kill (%v): %s", active.name, active.err, active.stderr.String())
			gen := generation()
			killedAt := time.Now()
			k.kill(active)
			if standby == nil {
				standby = k.start(fmt.Sprintf("c%d", i))
			}
			var takeover time.Duration
			k.waitFor("consumer "+standby.name+" to handle events", func() bool {
				if takeover == 0 && generation() > gen {
					takeover = time.Since(killedAt)
				}
				return k.handled(standby)
			}, standby)
			gap := time.Since(killedAt)
			gaps, takeovers = append(gaps, gap), append(takeovers, cmp.Or(takeover, gap))
			if backend == "postgres" {
				require.LessOrEqual(t, gap, maxFailover, "failover after killing %s", active.name)
			}
			active = standby
		}

		stopWriters()
		writers.Wait()
		close(writeErrs)
		for err := range writeErrs {
			require.NoError(t, err)
		}
		kindsIn := `kind IN ('agent_event', 'effect')`
		k.waitFor("the consumer to catch up", func() bool {
			return k.count(`SELECT COUNT(*) FROM consumer_effects`) >= k.count(`SELECT COUNT(*) FROM event_log WHERE `+kindsIn)
		}, active)
		k.stop(active)
		for _, p := range k.procs {
			b.WaitSessionsGone(t, p.tag)
		}

		// Exactly once: no event twice, none missing, none that is not the
		// consumer's, each row the event it names.
		events := k.count(`SELECT COUNT(*) FROM event_log WHERE ` + kindsIn)
		dups := k.count(`SELECT COUNT(*) - COUNT(DISTINCT seq) FROM consumer_effects`)
		lost := k.count(`SELECT COUNT(*) FROM event_log e WHERE e.` + kindsIn + ` AND NOT EXISTS (SELECT 1 FROM consumer_effects c WHERE c.seq = e.seq)`)
		foreign := k.count(`SELECT COUNT(*) FROM consumer_effects c LEFT JOIN event_log e ON e.seq = c.seq AND e.` + kindsIn + `
WHERE e.seq IS NULL OR e.event_id <> c.event_id OR e.host_id <> c.host_id`)
		require.Zero(t, dups, "events handled twice")
		require.Zero(t, lost, "events never handled")
		require.Zero(t, foreign, "effects that are not the consumer's events")
		require.Equal(t, events, k.count(`SELECT COUNT(*) FROM consumer_effects`))

		// The view equals a fresh derivation from the log.
		type hostCount struct {
			Host string `db:"host_id"`
			N    int64  `db:"n"`
		}
		var view, fresh []hostCount
		require.NoError(t, k.mon.Select(&view, `SELECT host_id, n FROM consumer_host_counts ORDER BY host_id`))
		require.NoError(t, k.mon.Select(&fresh, `SELECT host_id, COUNT(*) AS n FROM event_log WHERE `+kindsIn+` GROUP BY host_id ORDER BY host_id`))
		require.NotEmpty(t, fresh)
		require.Equal(t, fresh, view)

		// Every process took the consumer over once, and every killed one
		// had handled events.
		sts, err := consumer.ReadStatus(context.Background(), log)
		require.NoError(t, err)
		require.Len(t, sts, 1)
		require.EqualValues(t, kills+1, sts[0].Generation)
		require.Zero(t, sts[0].LagEvents)
		require.Zero(t, sts[0].FailedSeq)
		require.EqualValues(t, kills+1, k.count(`SELECT COUNT(*) FROM consumer_procs`))
		if backend == "postgres" {
			require.Positive(t, k.late.Load(), "no transaction committed a lower seq late: the test exercised nothing")
		}

		what := "failover (kill to the standby's first commit)"
		if backend == "sqlite" {
			what = "restart (kill to the new process's first commit, process start included)"
		}
		t.Logf("%s: %d kills; %d events appended (%d of the consumer's kinds, %d late commits, %d retries); duplicates %d, lost %d; %s %s; of which to the takeover %s; %s",
			backend, kills, k.count(`SELECT COUNT(*) FROM event_log`), events, k.late.Load(), k.retries.Load(), dups, lost,
			what, medianMax(gaps), medianMax(takeovers), time.Since(began).Round(time.Millisecond))
		t.Logf("%s: gaps %s", backend, strings.Trim(fmt.Sprint(roundAll(gaps)), "[]"))
	})
}

// medianMax renders the median and the maximum of ds.
func medianMax(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	sorted := slices.Sorted(slices.Values(ds))
	return fmt.Sprintf("median %s, max %s", sorted[len(sorted)/2].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond))
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
