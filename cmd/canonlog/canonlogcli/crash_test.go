package canonlogcli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/pglock"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// The crash test kills processes that write to the log with SIGKILL at
// random moments and checks, after each kill, what a restarted service
// would find. Environment:
//
//	CANONLOG_CRASH_KILLS  kills per backend (default 20; the long run is 200)
//	CANONLOG_CRASH_SEED   seed of the random choices (default: from the clock; logged)
const (
	envCrashMode  = "CANONLOG_CRASH_HELPER" // selects the helper's mode; unset in a normal test run
	envCrashURL   = "CANONLOG_CRASH_URL"
	envCrashRun   = "CANONLOG_CRASH_RUN"
	envCrashSeed  = "CANONLOG_CRASH_SEED"
	envCrashKills = "CANONLOG_CRASH_KILLS"
	// envCrashMigrate=1 makes the writer migrate on start, as a service
	// does. It is set while the database is new; later starts skip it, as
	// the migrations are a few goose queries per set that every cycle
	// would pay for.
	envCrashMigrate = "CANONLOG_CRASH_MIGRATE"

	defaultCrashKills = 20
)

var (
	// crashMaxEvents bounds the log of one database, per backend: every
	// check reads the log and derives probe_failures afresh, so a log that
	// only grew would make later cycles ever slower. Past it the test moves
	// on to a fresh database. SQLite's bound is lower: this process reads
	// it through modernc.org/sqlite under the race detector.
	crashMaxEvents = map[string]int{"postgres": 8000, "sqlite": 3000}
	// crashDeepEvery says how often (in cycles) the checks that read the
	// whole database in this process run, besides the last cycle (see
	// crashCheck).
	crashDeepEvery = map[string]int{"postgres": 4, "sqlite": 10}
)

// crashEventID encodes where an entry belongs: its batch, the batch's size
// and its index in the batch.
func crashEventID(batch string, size, i int) string {
	return fmt.Sprintf("crash/%s/%d/%d", batch, size, i)
}

func parseCrashEventID(id string) (batch string, size, i int, ok bool) {
	parts := strings.Split(id, "/")
	if len(parts) != 4 || parts[0] != "crash" {
		return "", 0, 0, false
	}
	size, err1 := strconv.Atoi(parts[2])
	i, err2 := strconv.Atoi(parts[3])
	return parts[1], size, i, err1 == nil && err2 == nil
}

// crashBatch returns the entries of batch id: a pure function of seed and
// id, so that the test can append again exactly what a killed process was
// appending. About half the entries are enforce-mode probe results, most
// of them with failing controls; the rest are other agent events and
// other kinds.
func crashBatch(seed uint64, id string, maxSize int) []eventlog.Entry {
	h := uint64(14695981039346656037)
	for _, c := range []byte(id) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	rng := rand.New(rand.NewPCG(seed, h))
	size := 1 + rng.IntN(maxSize)
	base := time.Date(2026, 5, 16, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(1e6)) * time.Second)
	out := make([]eventlog.Entry, size)
	for i := range out {
		e := eventlog.Entry{
			TS:        base.Add(time.Duration(i) * time.Millisecond),
			HostID:    fmt.Sprintf("host-%03d", rng.IntN(50)),
			RolloutID: fmt.Sprintf("r-%d", rng.IntN(4)),
			EventID:   crashEventID(id, size, i),
		}
		switch r := rng.IntN(10); {
		case r < 5:
			e.Kind = eventlog.KindAgentEvent
			status, subs := "fail", []string{}
			n := 1 + rng.IntN(4)
			failing := 0
			for c := range n {
				st := "pass"
				if rng.IntN(3) > 0 {
					st, failing = "fail", failing+1
				}
				subs = append(subs, fmt.Sprintf(`{"control_id":"CIS-5.2.%d","framework":"cis","status":%q}`, c, st))
			}
			if failing == 0 {
				status = "pass"
			}
			mode := "enforce"
			if rng.IntN(8) == 0 {
				mode = "observe"
			}
			e.Payload = json.RawMessage(fmt.Sprintf(`{"type":"ProbeResult","mode":%q,"status":%q,"probe_name":"probe-%d","sub_results":[%s]}`,
				mode, status, rng.IntN(5), strings.Join(subs, ",")))
		case r < 7:
			e.Kind = eventlog.KindAgentEvent
			e.Payload = json.RawMessage(fmt.Sprintf(`{"type":"Heartbeat","n":%d}`, rng.IntN(1000)))
		case r < 8:
			e.Kind = eventlog.KindEffect
			e.Payload = json.RawMessage(`{"effect":"restart","ok":true}`)
		case r < 9:
			e.Kind = eventlog.KindPlanAction
			e.Payload = json.RawMessage(`{"action":"apply"}`)
		default:
			e.Kind = "crash_note"
			e.HostID, e.RolloutID = "", ""
			e.Payload = json.RawMessage(fmt.Sprintf(`{"note":"n%d"}`, rng.IntN(100)))
		}
		out[i] = e
	}
	return out
}

// crashNDJSON renders entries as the input of 'canonlog append --file'.
func crashNDJSON(t *testing.T, entries []eventlog.Entry) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, e := range entries {
		line, err := json.Marshal(map[string]any{
			"kind": e.Kind, "ts": e.TS.Format(time.RFC3339Nano), "host_id": e.HostID, "rollout_id": e.RolloutID,
			"event_id": e.EventID, "payload": e.Payload,
		})
		require.NoError(t, err)
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// openCrashLog opens the log as the command line and a service do: the
// probe_failures projection registered as the append hook.
func openCrashLog(ctx context.Context, url string) (*sqlx.DB, *eventlog.Log, *projection.Registry, error) {
	db, err := eventlog.OpenDB(ctx, url)
	if err != nil {
		return nil, nil, nil, err
	}
	reg := projection.Must(projection.NewRegistry(probefailures.New()))
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	if err != nil {
		_ = db.Close()
		return nil, nil, nil, err
	}
	return db, log, reg, nil
}

// TestCrashHelperProcess is the writer TestCrashRecovery kills: it is not a
// test of its own and skips unless started by it. It opens the log the way
// a service does (migrating on start), then appends batches of 1..200
// entries and, now and then, rebuilds probe_failures, until it is killed.
// It reports on stdout, one line per Write:
//
//	ready                  the log is open and migrated
//	begin BATCH            AppendBatch of BATCH starts
//	ack BATCH SEQ,SEQ,…    AppendBatch of BATCH returned these seqs
//	rebuild / rebuilt      a rebuild starts / committed
func TestCrashHelperProcess(t *testing.T) {
	if os.Getenv(envCrashMode) != "writer" {
		t.Skip("started by TestCrashRecovery only")
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "crash helper: "+format+"\n", args...)
		os.Exit(1)
	}
	seed, err := strconv.ParseUint(os.Getenv(envCrashSeed), 10, 64)
	if err != nil {
		fail("%s: %v", envCrashSeed, err)
	}
	run := os.Getenv(envCrashRun)
	ctx := context.Background()
	db, log, reg, err := openCrashLog(ctx, os.Getenv(envCrashURL))
	if err != nil {
		fail("open: %v", err)
	}
	defer db.Close()
	if os.Getenv(envCrashMigrate) == "1" {
		if _, err := projection.Migrate(ctx, log, reg); err != nil {
			fail("migrate: %v", err)
		}
	}
	say := func(s string) {
		if _, err := os.Stdout.Write([]byte(s + "\n")); err != nil {
			fail("write: %v", err)
		}
	}
	say("ready")
	rng := rand.New(rand.NewPCG(seed, uint64(len(run))<<32|uint64(crashHash(run))))
	for k := 0; ; k++ {
		if rng.IntN(8) == 0 {
			say("rebuild")
			if _, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Names: []string{probefailures.Name}}); err != nil {
				fail("rebuild: %v", err)
			}
			say("rebuilt")
			continue
		}
		id := fmt.Sprintf("%s.%d", run, k)
		say("begin " + id)
		res, err := log.AppendBatch(ctx, crashBatch(seed, id, 200))
		if err != nil {
			fail("append %s: %v", id, err)
		}
		seqs := make([]string, len(res))
		for i, r := range res {
			if r.Duplicate {
				fail("append %s: entry %d is a duplicate", id, i)
			}
			seqs[i] = strconv.FormatInt(r.Event.Seq, 10)
		}
		say("ack " + id + " " + strings.Join(seqs, ","))
	}
}

func crashHash(s string) uint32 {
	h := uint32(2166136261)
	for _, c := range []byte(s) {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

// lineWriter collects a process's stdout and signals when a line has been
// seen.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  string
	found chan struct{}
}

func newLineWriter(want string) *lineWriter {
	return &lineWriter{want: want + "\n", found: make(chan struct{})}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := bytes.Contains(w.buf.Bytes(), []byte(w.want))
	w.buf.Write(p)
	if !had && bytes.Contains(w.buf.Bytes(), []byte(w.want)) {
		close(w.found)
	}
	return len(p), nil
}

// lines returns the complete lines written: a half-written last line is
// not a line.
func (w *lineWriter) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.buf.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

// crashTally counts where kills landed.
type crashTally struct {
	startup, append, rebuild, cliAppend, cliRebuild int
	missed                                          int // the process had exited before the signal
	retriedDup, retriedNew                          int // re-appended batches that were already in / not yet in the log
	databases                                       int
}

// since names where the kill counted after before landed.
func (c crashTally) since(before crashTally) string {
	switch {
	case c.startup > before.startup:
		return "writer killed in start-up"
	case c.append > before.append:
		return "writer killed appending"
	case c.rebuild > before.rebuild:
		return "writer killed rebuilding"
	case c.cliAppend > before.cliAppend:
		return "canonlog append killed"
	case c.cliRebuild > before.cliRebuild:
		return "canonlog rebuild killed"
	}
	return "process exited before the kill"
}

func (c crashTally) kills() int {
	return c.startup + c.append + c.rebuild + c.cliAppend + c.cliRebuild
}

// crashState is what the test knows of one database.
type crashState struct {
	b        dbtest.Backend
	acked    map[string][]int64 // batch id → seqs its process acknowledged
	events   int
	failures int64 // probe_failures rows
	migrated bool  // a check found every migration applied
	// Kill delays of the commands, which often finish in well under
	// 100 ms: a kill after a command exited tests nothing.
	cliAppend, cliRebuild killDelay
	cycle                 int
}

// sessionTag names the server sessions of the process this cycle kills
// (dbtest.Backend.SessionURL): the schema keeps it unique when two suites
// run side by side.
func (st *crashState) sessionTag(process string) string {
	return fmt.Sprintf("%s_%s%d", st.b.Schema, process, st.cycle)
}

// TestCrashRecovery SIGKILLs processes writing to the log — a writer that
// appends batches and rebuilds probe_failures (TestCrashHelperProcess),
// 'canonlog append --file' of a multi-line batch, and 'canonlog rebuild
// probe_failures' — at random moments, and after every kill checks with a
// fresh pool, as a restarted service would: no partial batch, every
// acknowledged batch present with its acknowledged seqs, no event id
// twice, probe_failures equal to a fresh derivation (the real 'canonlog
// verify' and projection.Verify), every migration applied, the checkpoint
// current and nothing stale ('canonlog status'), and a retry of the batch
// in flight lands exactly once. The next cycle proves the log still takes
// appends.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	kills := defaultCrashKills
	if s := os.Getenv(envCrashKills); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, envCrashKills)
		kills = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(envCrashSeed); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, envCrashSeed)
		seed = n
	}
	t.Logf("%s=%d %s=%d", envCrashSeed, seed, envCrashKills, kills)
	dbtest.Run(t, func(t *testing.T, backend string) {
		bin := binary(t)
		start := time.Now()
		rng := rand.New(rand.NewPCG(seed, uint64(crashHash(backend))))
		var tally crashTally
		var st *crashState
		// failures is the most probe_failures rows any database held: the
		// last cycles may run on a fresh database that has none yet.
		var failures int64
		for cycle := 0; tally.kills() < kills; cycle++ {
			require.Less(t, cycle, 4*kills+20, "too many cycles without a kill landing: %+v", tally)
			if st == nil || st.events > crashMaxEvents[backend] {
				st = &crashState{b: dbtest.New(t, backend), acked: map[string][]int64{}}
				tally.databases++
			}
			st.cycle = cycle
			cycleStart, before := time.Now(), tally
			inStartup := false
			// Six writer cycles in ten, two of each command: every kind of
			// process is killed whatever the seed.
			switch r := cycle % 10; {
			case r < 6:
				inStartup = crashWriter(t, st, seed, rng, &tally)
			case r < 8:
				crashCLIAppend(t, st, bin, seed, rng, &tally)
			default:
				crashCLIRebuild(t, st, bin, rng, &tally)
			}
			killedAt := time.Since(cycleStart)
			deep := cycle%crashDeepEvery[backend] == 0 || tally.kills() >= kills
			laps := crashCheck(t, st, bin, inStartup, deep)
			failures = max(failures, st.failures)
			t.Logf("cycle %d: %s after %s; %d events, %d probe_failures rows; checked in %s %v", cycle, tally.since(before),
				killedAt.Round(time.Millisecond), st.events, st.failures, (time.Since(cycleStart) - killedAt).Round(time.Millisecond), laps)
		}
		require.Positive(t, failures, "probe_failures never had a row: the test exercised nothing")
		t.Logf("%s: %d kills (startup %d, append %d, rebuild %d, CLI append %d, CLI rebuild %d), %d missed, retries %d already in / %d new, %d databases, %s",
			backend, tally.kills(), tally.startup, tally.append, tally.rebuild, tally.cliAppend, tally.cliRebuild,
			tally.missed, tally.retriedDup, tally.retriedNew, tally.databases, time.Since(start).Round(time.Millisecond))
	})
}

// killDelay picks kill delays for a command, uniformly below a bound that
// follows how long the command runs: a command that finished before its
// kill lowers the bound to the time it took; one killed raises it a little.
type killDelay struct{ bound time.Duration }

// kill sleeps for a random delay, kills cmd, waits for it and reports
// whether the kill ended it.
func (k *killDelay) kill(cmd *exec.Cmd, rng *rand.Rand) (bool, error) {
	if k.bound == 0 {
		k.bound = 150 * time.Millisecond
	}
	d := time.Millisecond + time.Duration(rng.Int64N(int64(k.bound)))
	time.Sleep(d)
	_ = cmd.Process.Kill()
	err := cmd.Wait()
	if killed(err) {
		k.bound += k.bound / 10
		return true, nil
	}
	k.bound = max(5*time.Millisecond, d)
	return false, err
}

// killed reports whether SIGKILL ended the process.
func killed(err error) bool {
	ee, ok := err.(*exec.ExitError)
	if !ok {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// crashWriter starts a writer, kills it and appends again the batch it was
// appending. It reports whether the kill landed before the writer was
// ready (it may have been migrating).
func crashWriter(t *testing.T, st *crashState, seed uint64, rng *rand.Rand, tally *crashTally) bool {
	t.Helper()
	run := fmt.Sprintf("w%d", st.cycle)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.count=1")
	tag := st.sessionTag("w")
	cmd.Env = append(os.Environ(), envCrashMode+"=writer", envCrashURL+"="+st.b.SessionURL(tag), envCrashRun+"="+run,
		fmt.Sprintf("%s=%d", envCrashSeed, seed))
	if !st.migrated {
		cmd.Env = append(cmd.Env, envCrashMigrate+"=1")
	}
	out := newLineWriter("ready")
	var errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &errOut
	require.NoError(t, cmd.Start())
	// Most kills wait for the writer to be working; some land while it
	// opens and migrates.
	if rng.IntN(6) > 0 {
		select {
		case <-out.found:
		case <-time.After(60 * time.Second):
		}
	}
	time.Sleep(time.Duration(5+rng.IntN(396)) * time.Millisecond)
	_ = cmd.Process.Kill()
	err := cmd.Wait()
	require.True(t, killed(err), "writer %s ended before the kill (%v): %s", run, err, errOut.String())
	st.b.WaitSessionsGone(t, tag)

	lines := out.lines()
	var inFlight, last string
	for _, l := range lines {
		f := strings.Fields(l)
		require.NotEmpty(t, f, "writer %s: empty line", run)
		switch f[0] {
		case "begin":
			inFlight = f[1]
		case "ack":
			require.Len(t, f, 3, "writer %s: %q", run, l)
			require.Equal(t, inFlight, f[1])
			inFlight = ""
			var seqs []int64
			for s := range strings.SplitSeq(f[2], ",") {
				n, err := strconv.ParseInt(s, 10, 64)
				require.NoError(t, err)
				seqs = append(seqs, n)
			}
			st.acked[f[1]] = seqs
		}
		last = f[0]
	}
	switch last {
	case "", "ready":
		if last == "" {
			tally.startup++
		} else {
			tally.append++ // between "ready" and the first "begin": on its way to append
		}
	case "rebuild":
		tally.rebuild++
	default:
		tally.append++
	}
	if inFlight != "" {
		crashRetry(t, st, crashBatch(seed, inFlight, 200), tally)
	}
	return last == ""
}

func crashCLIAppend(t *testing.T, st *crashState, bin string, seed uint64, rng *rand.Rand, tally *crashTally) {
	t.Helper()
	if !st.migrated {
		// 'canonlog append' refuses a database without the schema.
		crashMigrate(t, st, bin)
	}
	id := fmt.Sprintf("c%d", st.cycle)
	entries := crashBatch(seed, id, 1000)
	file := filepath.Join(t.TempDir(), "batch.ndjson")
	require.NoError(t, os.WriteFile(file, crashNDJSON(t, entries), 0o600))
	tag := st.sessionTag("a")
	cmd := exec.Command(bin, "--database-url", st.b.SessionURL(tag), "append", "--file", file, "-o", "json")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(t, cmd.Start())
	if ok, err := st.cliAppend.kill(cmd, rng); ok {
		tally.cliAppend++
	} else {
		require.NoError(t, err, "canonlog append: %s", errOut.String())
		tally.missed++
	}
	st.b.WaitSessionsGone(t, tag)
	// Append the same file again: the batch lands exactly once.
	retry := exec.Command(bin, "--database-url", st.b.URL, "append", "--file", file, "-o", "json")
	retry.Stderr = &errOut
	raw, err := retry.Output()
	require.NoError(t, err, "canonlog append again: %s", errOut.String())
	var rep struct{ Entries, New, Duplicates int }
	require.NoError(t, json.Unmarshal(raw, &rep), "%s", raw)
	require.Equal(t, len(entries), rep.Entries)
	require.True(t, rep.New == 0 || rep.Duplicates == 0, "a batch landed in part: %+v", rep)
	if rep.Duplicates > 0 {
		tally.retriedDup++
	} else {
		tally.retriedNew++
	}
	st.events += rep.New
}

func crashCLIRebuild(t *testing.T, st *crashState, bin string, rng *rand.Rand, tally *crashTally) {
	t.Helper()
	if !st.migrated {
		crashMigrate(t, st, bin)
	}
	tag := st.sessionTag("r")
	cmd := exec.Command(bin, "--database-url", st.b.SessionURL(tag), "rebuild", probefailures.Name)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	require.NoError(t, cmd.Start())
	if ok, err := st.cliRebuild.kill(cmd, rng); ok {
		tally.cliRebuild++
	} else {
		require.NoError(t, err, "canonlog rebuild: %s", errOut.String())
		tally.missed++
	}
	st.b.WaitSessionsGone(t, tag)
}

func crashMigrate(t *testing.T, st *crashState, bin string) {
	t.Helper()
	out, err := exec.Command(bin, "--database-url", st.b.URL, "migrate", "up").CombinedOutput()
	require.NoError(t, err, "canonlog migrate up: %s", out)
}

// crashRetry appends again the batch a killed writer was appending: it
// lands exactly once, whether or not the killed process committed it.
func crashRetry(t *testing.T, st *crashState, entries []eventlog.Entry, tally *crashTally) {
	t.Helper()
	ctx := context.Background()
	db, log, _, err := openCrashLog(ctx, st.b.URL)
	require.NoError(t, err)
	defer db.Close()
	before := batchSeqs(t, db, entries)
	res, err := log.AppendBatch(ctx, entries)
	require.NoError(t, err)
	require.Len(t, res, len(entries))
	got := make([]int64, len(res))
	for i, r := range res {
		require.Equal(t, before != nil, r.Duplicate, "entry %d of %s", i, entries[i].EventID)
		got[i] = r.Event.Seq
	}
	if before != nil {
		require.Equal(t, before, got, "a duplicate returns the stored seqs")
		tally.retriedDup++
	} else {
		tally.retriedNew++
	}
	require.Equal(t, got, batchSeqs(t, db, entries))
	// And once more: everything is a duplicate now.
	res, err = log.AppendBatch(ctx, entries)
	require.NoError(t, err)
	for i, r := range res {
		require.True(t, r.Duplicate)
		require.Equal(t, got[i], r.Event.Seq)
	}
}

// batchSeqs returns the seqs of entries in the log, in entry order, or nil
// when none is there; a batch present in part fails the test.
func batchSeqs(t *testing.T, db *sqlx.DB, entries []eventlog.Entry) []int64 {
	t.Helper()
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.EventID
	}
	q, args, err := sqlx.In(`SELECT event_id, seq FROM event_log WHERE event_id IN (?)`, ids)
	require.NoError(t, err)
	rows, err := db.Queryx(db.Rebind(q), args...)
	require.NoError(t, err)
	defer rows.Close()
	byID := map[string]int64{}
	for rows.Next() {
		var id string
		var seq int64
		require.NoError(t, rows.Scan(&id, &seq))
		byID[id] = seq
	}
	require.NoError(t, rows.Err())
	if len(byID) == 0 {
		return nil
	}
	require.Len(t, byID, len(entries), "batch present in part")
	out := make([]int64, len(entries))
	for i, id := range ids {
		out[i] = byID[id]
	}
	return out
}

// crashCheck is what a restarted service checks after a kill, with a
// fresh pool. deep adds the checks that read the whole database in this
// process: modernc.org/sqlite under the race detector is slow, so on
// SQLite they run every few cycles (the real binary, built without the race
// detector, runs its checks every cycle).
//
// It returns how long each step took, for the test's log.
func crashCheck(t *testing.T, st *crashState, bin string, inStartup, deep bool) (laps []string) {
	t.Helper()
	ctx := context.Background()
	lapAt := time.Now()
	lap := func(name string) {
		laps = append(laps, fmt.Sprintf("%s %s", name, time.Since(lapAt).Round(time.Millisecond)))
		lapAt = time.Now()
	}
	db, log, reg, err := openCrashLog(ctx, st.b.URL)
	require.NoError(t, err)
	defer db.Close()
	runBin := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--database-url", st.b.URL}, args...)...)
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		out, err := cmd.Output()
		require.NoError(t, err, "canonlog %v: %s%s", args, out, errOut.String())
		return out
	}

	var tables int
	require.NoError(t, db.Get(&tables, db.Rebind(crashTableQuery(st.b.Name)), "event_log"))
	if tables == 0 {
		// Killed before its migrations created the log: nothing can be
		// there yet, and the next process migrates.
		require.True(t, inStartup, "event_log is gone")
		return []string{"no log yet"}
	}
	if deep && st.b.Name == "sqlite" {
		var ok string
		require.NoError(t, db.Get(&ok, `PRAGMA integrity_check`))
		require.Equal(t, "ok", ok, "SQLite file after the kill")
	}

	// Every migration applied: those applied when the kill landed still
	// are; a writer killed while it migrated leaves the rest to the next
	// start, which applies them as a restarted service does.
	pending := func() []string {
		var sts []migrationStatusReport
		require.NoError(t, json.Unmarshal(runBin("migrate", "status", "-o", "json"), &sts))
		require.NotEmpty(t, sts)
		var out []string
		for _, s := range sts {
			if !s.Applied {
				out = append(out, s.Set+" "+s.Source)
			}
		}
		return out
	}
	if p := pending(); len(p) > 0 {
		require.True(t, inStartup, "migrations pending after a kill outside start-up: %v", p)
		runBin("migrate", "up")
		require.Empty(t, pending())
	}
	st.migrated = true
	lap("migrations")

	// The log: whole batches, acknowledged seqs, ids once, seqs in order.
	type row struct {
		Seq     int64
		EventID string `db:"event_id"`
	}
	var rows []row
	require.NoError(t, db.Select(&rows, `SELECT seq, event_id FROM event_log ORDER BY seq`))
	st.events = len(rows)
	batches := map[string][]int64{}
	for _, r := range rows {
		batch, size, i, ok := parseCrashEventID(r.EventID)
		require.True(t, ok, "unexpected event id %q", r.EventID)
		if batches[batch] == nil {
			batches[batch] = make([]int64, size)
		}
		if len(batches[batch]) != size || i >= size || batches[batch][i] != 0 {
			require.Failf(t, "event id twice or malformed", "%s (seq %d)", r.EventID, r.Seq)
		}
		batches[batch][i] = r.Seq
	}
	for batch, seqs := range batches {
		require.NotContains(t, seqs, int64(0), "batch %s present in part", batch)
		for i := 1; i < len(seqs); i++ {
			require.Less(t, seqs[i-1], seqs[i], "batch %s: seqs out of index order", batch)
		}
	}
	for batch, seqs := range st.acked {
		require.Equal(t, seqs, batches[batch], "acknowledged batch %s", batch)
	}
	lap("log")
	var last int64
	if len(rows) > 0 {

		last = rows[len(rows)-1].Seq
	}

	// The checkpoint: current version, not past the log's end, not stale.
	pst, err := projection.ReadStatus(ctx, log, reg)
	require.NoError(t, err)
	require.Len(t, pst, 1)
	for _, s := range pst {
		require.False(t, s.Stale, "projection %s stale after the kill: %+v", s.Name, s)
		require.Equal(t, s.Version, s.BuiltVersion)
		require.LessOrEqual(t, s.BuiltSeq, last)
	}
	var rep statusReport
	require.NoError(t, json.Unmarshal(runBin("status", "-o", "json"), &rep))
	require.Equal(t, last, rep.LastSeq)
	require.Equal(t, int64(len(rows)), rep.Events)
	require.Len(t, rep.Projections, 1)
	var failures int64
	require.NoError(t, db.Get(&failures, `SELECT COUNT(*) FROM probe_failures`))
	for _, p := range rep.Projections {
		require.False(t, p.Stale, "canonlog status: %s stale", p.Name)
		require.Equal(t, p.Version, p.BuiltVersion)
		require.Equal(t, pst[0].BuiltSeq, p.BuiltSeq)
		require.Equal(t, failures, p.Rows)
	}
	st.failures = failures
	lap("status")

	// probe_failures equals a fresh derivation: with the real binary, and
	// in this process.
	runBin("verify", probefailures.Name)
	lap("verifybin")
	if deep {
		vr, err := projection.Verify(ctx, log, reg, []string{probefailures.Name})
		require.NoError(t, err)
		require.Len(t, vr, 1)
		require.True(t, vr[0].Equal, "projection.Verify: %+v", vr[0])
		lap("verify")
	}
	return laps
}

func crashTableQuery(backend string) string {
	if backend == "sqlite" {
		return `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`
	}
	return `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?`
}

// TestCrashMigrateBeforeCheckpoint kills 'canonlog migrate up' at the point
// where it installs probe_failures' checkpoint, then appends and restarts as
// a user would: the projection must not be left stale. The kill is placed
// by holding the projection's advisory lock, which the install waits for;
// the SIGKILL lands while it waits. (Before the checkpoint was written ahead
// of the projection's tables, a kill there left the tables without a
// checkpoint: appends filled them, and every later migrate found events and
// left probe_failures "never built".) PostgreSQL only: SQLite offers no lock
// the test could hold without also stopping the migrations before it.
func TestCrashMigrateBeforeCheckpoint(t *testing.T) {
	t.Parallel()
	dbtest.Admin(t)
	b := dbtest.New(t, "postgres")
	bin := binary(t)
	db := b.Open(t)
	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	var key int64
	require.NoError(t, tx.Get(&key, `SELECT `+pglock.KeyExpr("$1::text"), pglock.ProjectionLock(probefailures.Name)))
	_, err = tx.Exec(`SELECT pg_advisory_xact_lock_shared($1)`, key)
	require.NoError(t, err)

	tag := b.Schema + "_migrate"
	migrate := exec.Command(bin, "--database-url", b.SessionURL(tag), "migrate", "up")
	out := newLineWriter("")
	migrate.Stdout, migrate.Stderr = out, out
	require.NoError(t, migrate.Start())
	waiting := func() bool {
		var n int
		require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1`, int64(uint64(key)>>32), int64(uint32(key))))
		return n > 0
	}
	deadline := time.Now().Add(60 * time.Second)
	for !waiting() {
		if time.Now().After(deadline) {
			_ = migrate.Process.Kill()
			_ = migrate.Wait()
			t.Fatalf("canonlog migrate up never waited for the projection lock: %q", out.lines())
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, migrate.Process.Kill())
	err = migrate.Wait()
	require.True(t, killed(err), "canonlog migrate up: %v %q", err, out.lines())
	require.NoError(t, tx.Rollback())
	// The killed migration's session gets the lock now and ends; what it
	// leaves is settled only once it has gone.
	b.WaitSessionsGone(t, tag)

	u := newUser(t, b.URL)
	file := filepath.Join(t.TempDir(), "batch.ndjson")
	entries := crashBatch(1, "m0", 200)
	require.NoError(t, os.WriteFile(file, crashNDJSON(t, entries), 0o600))
	if r := u.run("", "append", "--file", file); r.code != 0 {
		// The kill left the projection's tables uncreated: the command
		// says what to do.
		require.Contains(t, r.err, "run 'migrate up' first")
		u.ok("", "migrate", "up")
		u.ok("", "append", "--file", file)
	}
	u.ok("", "migrate", "up") // a restart
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(u.ok("", "status", "-o", "json")), &rep))
	require.Equal(t, int64(len(entries)), rep.Events)
	require.Len(t, rep.Projections, 1)
	require.False(t, rep.Projections[0].Stale, "probe_failures stale after a kill in migrate up: %+v", rep.Projections[0])
	require.Positive(t, rep.Projections[0].Rows)
	u.ok("", "verify", probefailures.Name)
}
