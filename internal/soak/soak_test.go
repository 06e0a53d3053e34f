package soak_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

const (
	// smokeDuration is the PostgreSQL writing phase when CANONLOG_SOAK is
	// unset; sqliteDuration is SQLite's, always.
	smokeDuration  = 4 * time.Second
	sqliteDuration = 2 * time.Second
	// writers is the number of concurrent appending goroutines.
	writers = 32
	// maxBatch bounds a batch append's size (drawn from 1..maxBatch).
	maxBatch = 50
	// rebuildEvery is the pause between probe_failures rebuilds (shorter
	// for a short run, so that it still sees at least minRebuilds).
	rebuildEvery = 3 * time.Second
	minRebuilds  = 2
	// killSmokeDuration is postgres_kills' writing phase when
	// CANONLOG_SOAK_KILLS is unset. Killed rebuilds start over, so that run
	// waits for one rebuild only (minKillRebuilds).
	killSmokeDuration = 3 * time.Second
	minKillRebuilds   = 1
	// smokeConns and longConns cap a PostgreSQL soak's pool (see TestSoak).
	smokeConns = 8
	longConns  = 40
	// followWait bounds the follower's catch-up once writers stop. On
	// PostgreSQL its horizon is server-wide: transactions of other tests
	// on the same server delay it (never make it skip), so it is generous.
	followWait = 3 * time.Minute
	// maxAttempts bounds the tries of one append failing with retryable
	// errors.
	maxAttempts = 1000
	// killEvery is the pause between two connection kills.
	killEvery = 300 * time.Millisecond
)

// TestSoak appends from 32 writers at once (singles and batches of mixed
// kinds, every entry with an event id, some deliberately re-sent), follows
// the log from seq 0 and rebuilds probe_failures every few seconds, then
// checks: every acknowledged event is stored once at its acknowledged seq,
// the follower saw exactly the log's events once each in (tx_id, seq)
// order, and probe_failures equals a fresh derivation.
//
// CANONLOG_SOAK (a Go duration) sets the PostgreSQL run's writing phase;
// unset, PostgreSQL runs a smoke version of smokeDuration. The SQLite run
// is always a short one (sqliteDuration), and skipped under -race:
// PostgreSQL is the backend under load, SQLite has one writer at a time.
// postgres_kills repeats the PostgreSQL run while terminating the soak's
// own connections; CANONLOG_SOAK_KILLS (a Go duration) sets its length,
// killSmokeDuration by default.
func TestSoak(t *testing.T) {
	dur, long := smokeDuration, false
	if s := os.Getenv("CANONLOG_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("CANONLOG_SOAK=%q: want a positive Go duration such as 5m", s)
		}
		dur, long = d, true
	}
	// The smoke runs side by side, to keep the test short; a long run has
	// the machine to itself, so that its figures are PostgreSQL's.
	// Connections: a long run's pool is sized for load; the smoke runs
	// share the server with the rest of the suite — and CI may run two
	// suites at once — so theirs stay small (writers queue for one, as a
	// service's would).
	conns := smokeConns
	if long {
		conns = longConns
	}
	parallel := func(t *testing.T) {
		if !long {
			t.Parallel()
		}
	}
	t.Run("postgres", func(t *testing.T) {
		parallel(t)
		dbtest.Admin(t) // skip (or fail) early when the server is unreachable
		runSoak(t, dbtest.New(t, "postgres"), dur, false, conns)
	})
	t.Run("sqlite", func(t *testing.T) {
		if raceEnabled {
			// modernc.org/sqlite is C translated to Go: under the race
			// detector every statement is instrumented, and 32 writers
			// contending through SQLite's busy handler take minutes.
			t.Skip("SQLite soak skipped under -race; run it without -race")
		}
		parallel(t)
		runSoak(t, dbtest.New(t, "sqlite"), sqliteDuration, false, conns)
	})
	// The same on PostgreSQL, while the soak's own connections are
	// terminated one at a time, every killEvery: appends must come through
	// by retrying (eventlog.Retryable), each entry landing exactly once.
	killDur, killConns := killSmokeDuration, smokeConns
	if s := os.Getenv("CANONLOG_SOAK_KILLS"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("CANONLOG_SOAK_KILLS=%q: want a positive Go duration such as 5m", s)
		}
		killDur, killConns = d, longConns
	}
	t.Run("postgres_kills", func(t *testing.T) {
		parallel(t)
		dbtest.Admin(t)
		runSoak(t, dbtest.New(t, "postgres"), killDur, true, killConns)
	})
}

// soak is one run's shared state.
type soak struct {
	t       *testing.T
	backend string
	log     *eventlog.Log
	reg     *projection.Registry
	db      *sqlx.DB
	base    time.Time

	failed  atomic.Bool
	stopped atomic.Bool

	// acks[w][n] is the seq acknowledged for writer w's n-th entry. Each
	// writer only touches its own slice; read after the writers end.
	acks [writers][]int64
	// latency[w] holds writer w's append latencies, retries included.
	latency [writers][]time.Duration

	appends         atomic.Int64 // successful append calls
	entriesSent     atomic.Int64 // entries in successful append calls
	newEvents       atomic.Int64 // results with Duplicate=false
	dupDetected     atomic.Int64 // results with Duplicate=true
	resentAcked     atomic.Int64 // acknowledged entries deliberately re-sent
	resentUnacked   atomic.Int64 // entries re-sent after an abandoned append failed
	unackedLanded   atomic.Int64 // ... of which the abandoned append had committed
	retriedLanded   atomic.Int64 // entries retried whose failed attempt had committed
	abandoned       atomic.Int64 // appends given a context too short to finish
	abandonedOK     atomic.Int64 // ... that finished anyway
	retries         atomic.Int64 // appends retried after a retryable error
	rebuildRetries  atomic.Int64
	followerResumes atomic.Int64

	errMu     sync.Mutex
	retryErrs []string // the first distinct retryable errors met
}

// noteRetryable records err's text among the first few distinct ones.
func (s *soak) noteRetryable(err error) {
	msg := err.Error()
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if len(s.retryErrs) < 8 && !slices.Contains(s.retryErrs, msg) {
		s.retryErrs = append(s.retryErrs, msg)
	}
}

func (s *soak) errorf(format string, args ...any) {
	s.t.Helper()
	s.t.Errorf(format, args...)
	s.failed.Store(true)
}

// runSoak runs one soak on b; conns caps its PostgreSQL pool.
func runSoak(t *testing.T, b dbtest.Backend, dur time.Duration, kill bool, conns int) {
	ctx := context.Background()
	var appName string
	if kill {
		// A name of its own tells the soak's connections from every other
		// session on the server: only they are terminated.
		appName = "canonlog_soak_" + b.Schema
		u, err := url.Parse(b.URL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("application_name", appName)
		u.RawQuery = q.Encode()
		b.URL = u.String()
	}
	db := b.Open(t)
	if b.Name == "postgres" {
		dbtest.SetPoolSize(db, conns)
	}
	reg := projection.Must(projection.NewRegistry(probefailures.New()))
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	if _, err := projection.Migrate(ctx, log, reg); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	s := &soak{t: t, backend: b.Name, log: log, reg: reg, db: db,
		base: time.Date(2026, 5, 16, 0, 0, 0, 0, time.UTC)}

	interval := min(rebuildEvery, dur/3)
	wantRebuilds := int64(minRebuilds)
	if kill {
		wantRebuilds = minKillRebuilds
	}

	// Peak Go heap, sampled every second (and once at the end).
	var peakHeap atomic.Uint64
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peakHeap.Load() {
			peakHeap.Store(ms.HeapInuse)
		}
	}
	samplerDone := make(chan struct{})
	samplerStop := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			sample()
			select {
			case <-samplerStop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() {
		select {
		case <-samplerStop:
		default:
			close(samplerStop)
		}
		<-samplerDone
	}()

	// The follower, from the start of the log.
	followCtx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	fs := &followState{}
	followDone := make(chan struct{})
	go func() {
		defer close(followDone)
		s.follow(followCtx, fs)
	}()

	// Rebuilds, every interval while writers run.
	var (
		rebuildMu  sync.Mutex
		rebuildDur []time.Duration
		firstBatch []time.Duration // until Rebuild's first progress report (Done=0, before any batch): the lock wait plus counting the events
		rebuilds   atomic.Int64
	)
	rebuildStop := make(chan struct{})
	rebuildDone := make(chan struct{})
	go func() {
		defer close(rebuildDone)
		timer := time.NewTimer(interval)
		defer timer.Stop()
		for {
			select {
			case <-rebuildStop:
				return
			case <-timer.C:
			}
			start := time.Now()
			var first time.Duration
			// Under kills the rebuild runs offline: an online rebuild keeps
			// one session for its build, catch-up and swap, the likeliest
			// victim of the killer, and at its rate rarely completes. Its
			// crash safety is projection's TestRebuildCrash.
			_, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Names: []string{probefailures.Name}, Offline: kill,
				Progress: func(projection.Progress) {
					if first == 0 {
						first = time.Since(start)
					}
				}})
			switch {
			case err == nil:
				rebuildMu.Lock()
				rebuildDur = append(rebuildDur, time.Since(start))
				firstBatch = append(firstBatch, first)
				rebuildMu.Unlock()
				rebuilds.Add(1)
			case eventlog.Retryable(err):
				s.rebuildRetries.Add(1)
				s.noteRetryable(err)
			default:
				s.errorf("rebuild: %v", err)
				s.stopped.Store(true)
				return
			}
			timer.Reset(interval)
		}
	}()

	// Connection kills, while writers run.
	var kills atomic.Int64
	killStop := make(chan struct{})
	killDone := make(chan struct{})
	if kill {
		admin := dbtest.Admin(t)
		go func() {
			defer close(killDone)
			tick := time.NewTicker(killEvery)
			defer tick.Stop()
			for {
				select {
				case <-killStop:
					return
				case <-tick.C:
				}
				// One statement: the pid terminated is one of the soak's
				// connections as of this very snapshot.
				var killed []bool
				if err := admin.SelectContext(ctx, &killed, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE application_name = $1 AND datname = current_database() AND pid <> pg_backend_pid()
ORDER BY random() LIMIT 1`, appName); err != nil {
					s.errorf("kill a connection: %v", err)
					return
				}
				if len(killed) == 1 && killed[0] {
					kills.Add(1)
				}
			}
		}()
	} else {
		close(killDone)
	}

	// Writers, until the duration is over and enough rebuilds ran.
	start := time.Now()
	stopWriting := func() bool {
		if s.stopped.Load() || s.failed.Load() {
			return true
		}
		if time.Since(start) >= dur && rebuilds.Load() >= wantRebuilds {
			s.stopped.Store(true)
			return true
		}
		return false
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.write(ctx, w, stopWriting)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(killStop)
	<-killDone
	phase := time.Now()
	close(rebuildStop)
	<-rebuildDone
	rebuildStopDur := time.Since(phase)
	if s.failed.Load() {
		stopFollow()
		<-followDone
		t.FailNow()
	}

	// Let the follower catch up with the log.
	var logCount, logMax int64
	if err := db.QueryRowxContext(ctx, `SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM event_log`).Scan(&logCount, &logMax); err != nil {
		t.Fatalf("count the log: %v", err)
	}
	catchUp := time.Now()
	for fs.count.Load() < logCount && !s.failed.Load() {
		if time.Since(catchUp) > followWait {
			stopFollow()
			<-followDone
			t.Fatalf("follower saw %d of %d events %s after writers stopped", fs.count.Load(), logCount, followWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	catchUpDur := time.Since(catchUp)
	// One more poll's worth: anything beyond the log's events would show.
	time.Sleep(2 * followPoll)
	stopFollow()
	<-followDone
	close(samplerStop)
	<-samplerDone
	sample()
	if s.failed.Load() {
		t.FailNow()
	}

	// Zero lost, zero duplicated: every row's event id is acknowledged at
	// its seq, no row lacks one, and there are as many rows as acks.
	phase = time.Now()
	s.checkLog(ctx, fs, logCount)
	checkDur := time.Since(phase)

	phase = time.Now()
	res, err := projection.Verify(ctx, log, reg, []string{probefailures.Name})
	verifyDur := time.Since(phase)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if len(res) != 1 || !res[0].Equal {
		t.Fatalf("verify probe_failures: %+v", res)
	}
	var failures int64
	if err := db.GetContext(ctx, &failures, `SELECT COUNT(*) FROM probe_failures`); err != nil {
		t.Fatal(err)
	}
	if failures == 0 {
		t.Fatalf("probe_failures is empty: the soak appended no failing control")
	}

	// Report.
	secs := elapsed.Seconds()
	rebuildMu.Lock()
	durs := slices.Clone(rebuildDur)
	firsts := slices.Clone(firstBatch)
	rebuildMu.Unlock()
	slices.Sort(durs)
	slices.Sort(firsts)
	var lat []time.Duration
	for w := range writers {
		lat = append(lat, s.latency[w]...)
	}
	slices.Sort(lat)
	pct := func(d []time.Duration, p float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		return d[min(len(d)-1, int(float64(len(d))*p))].Round(time.Millisecond)
	}
	t.Logf("soak: backend=%s duration=%s writers=%d", s.backend, elapsed.Round(time.Millisecond), writers)
	t.Logf("soak: events=%d appends=%d entries_sent=%d log_rows=%d max_seq=%d probe_failures_rows=%d",
		s.newEvents.Load(), s.appends.Load(), s.entriesSent.Load(), logCount, logMax, failures)
	t.Logf("soak: resent_acked=%d duplicates_detected=%d abandoned=%d abandoned_committed=%d resent_unacked=%d resent_unacked_already_stored=%d retries=%d retried_already_stored=%d",
		s.resentAcked.Load(), s.dupDetected.Load(), s.abandoned.Load(), s.abandonedOK.Load(),
		s.resentUnacked.Load(), s.unackedLanded.Load(), s.retries.Load(), s.retriedLanded.Load())
	t.Logf("soak: rate events_per_s=%.0f appends_per_s=%.0f", float64(s.newEvents.Load())/secs, float64(s.appends.Load())/secs)
	t.Logf("soak: follower events=%d seq_below_max_seen=%d resumes=%d catch_up=%s",
		fs.count.Load(), fs.inversions, s.followerResumes.Load(), catchUpDur.Round(time.Millisecond))
	if len(durs) > 0 {
		t.Logf("soak: rebuilds=%d retried=%d min=%s median=%s max=%s", len(durs), s.rebuildRetries.Load(),
			durs[0].Round(time.Millisecond), durs[len(durs)/2].Round(time.Millisecond), durs[len(durs)-1].Round(time.Millisecond))
		t.Logf("soak: rebuild_first_batch min=%s median=%s max=%s",
			firsts[0].Round(time.Millisecond), firsts[len(firsts)/2].Round(time.Millisecond), firsts[len(firsts)-1].Round(time.Millisecond))
	}
	t.Logf("soak: append_latency p50=%s p99=%s max=%s", pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1))
	t.Logf("soak: after_writers rebuild_stop=%s catch_up=%s check=%s verify=%s",
		rebuildStopDur.Round(time.Millisecond), catchUpDur.Round(time.Millisecond), checkDur.Round(time.Millisecond), verifyDur.Round(time.Millisecond))
	if kill {
		t.Logf("soak: kills=%d every=%s", kills.Load(), killEvery)
	}
	s.errMu.Lock()
	for _, e := range s.retryErrs {
		t.Logf("soak: retryable_error %q", e)
	}
	s.errMu.Unlock()
	t.Logf("soak: memory peak_heap_inuse_mib=%.1f peak_rss_mib=%.1f", float64(peakHeap.Load())/(1<<20), float64(vmHWM(t))/(1<<20))
	t.Logf("soak: lost=0 duplicated=0 follower_mismatch=0 verify=equal")
}

// followPoll is the follower's poll interval once caught up.
const followPoll = 20 * time.Millisecond

// followState is what the follower saw. count is read while it runs; the
// rest only after it ends.
type followState struct {
	count      atomic.Int64
	seen       []uint64 // bitset by seq
	inversions int64    // events whose seq is below one seen before (PostgreSQL: commit order is not seq order)
}

func (f *followState) mark(seq int64) bool {
	i := int(seq / 64)
	for i >= len(f.seen) {
		f.seen = append(f.seen, make([]uint64, max(len(f.seen), 1024))...)
	}
	bit := uint64(1) << (seq % 64)
	if f.seen[i]&bit != 0 {
		return false
	}
	f.seen[i] |= bit
	return true
}

func (f *followState) has(seq int64) bool {
	i := int(seq / 64)
	return i < len(f.seen) && f.seen[i]&(uint64(1)<<(seq%64)) != 0
}

// follow tails the log from its start until ctx ends: positions must
// strictly increase, and no seq may come twice.
func (s *soak) follow(ctx context.Context, fs *followState) {
	f, err := s.log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{PollInterval: followPoll})
	if err != nil {
		s.errorf("follower: %v", err)
		return
	}
	var prev eventlog.Position
	var maxSeq int64
	for ctx.Err() == nil {
		for ev, err := range f.Events(ctx) {
			if err != nil {
				if eventlog.Retryable(err) {
					s.followerResumes.Add(1)
					s.noteRetryable(err)
					break // resume from f's position
				}
				s.errorf("follower: %v", err)
				return
			}
			pos := f.Position()
			if !(prev.TxID < pos.TxID || prev.TxID == pos.TxID && prev.Seq < pos.Seq) {
				s.errorf("follower: position went from %s to %s (event %d)", prev, pos, ev.Seq)
				return
			}
			prev = pos
			if !fs.mark(ev.Seq) {
				s.errorf("follower: seq %d delivered twice", ev.Seq)
				return
			}
			if ev.Seq < maxSeq {
				fs.inversions++
			}
			maxSeq = max(maxSeq, ev.Seq)
			fs.count.Add(1)
		}
	}
}

// checkLog reads the whole log and compares it with the acks and with what
// the follower saw.
func (s *soak) checkLog(ctx context.Context, fs *followState, logCount int64) {
	t := s.t
	var acked int64
	found := make([][]bool, writers)
	for w := range writers {
		acked += int64(len(s.acks[w]))
		found[w] = make([]bool, len(s.acks[w]))
	}
	rows, err := s.db.QueryxContext(ctx, `SELECT seq, COALESCE(event_id, '') FROM event_log ORDER BY seq`)
	if err != nil {
		t.Fatalf("read the log: %v", err)
	}
	defer rows.Close()
	var n, lost, dup, notFollowed int64
	for rows.Next() {
		var (
			seq int64
			id  string
		)
		if err := rows.Scan(&seq, &id); err != nil {
			t.Fatal(err)
		}
		n++
		if !fs.has(seq) {
			notFollowed++
			if notFollowed <= 5 {
				t.Errorf("follower never saw seq %d (%s)", seq, id)
			}
		}
		w, i, ok := parseID(id)
		if !ok || w >= writers || i >= len(s.acks[w]) {
			t.Errorf("seq %d has event id %q, which no writer acknowledged", seq, id)
			continue
		}
		if found[w][i] {
			dup++
			t.Errorf("event id %q stored twice (again at seq %d)", id, seq)
			continue
		}
		found[w][i] = true
		if s.acks[w][i] != seq {
			t.Errorf("event id %q acknowledged at seq %d, stored at %d", id, s.acks[w][i], seq)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		for i, ok := range found[w] {
			if !ok {
				lost++
				if lost <= 5 {
					t.Errorf("acknowledged event %s (seq %d) is missing", eventID(w, i), s.acks[w][i])
				}
			}
		}
	}
	if n != logCount {
		t.Errorf("the log holds %d rows now, %d when the writers stopped", n, logCount)
	}
	if fs.count.Load() != n {
		t.Errorf("follower saw %d events, the log holds %d", fs.count.Load(), n)
	}
	if n != acked {
		t.Errorf("the log holds %d rows for %d acknowledged event ids", n, acked)
	}
	if lost+dup+notFollowed > 0 {
		t.Fatalf("lost=%d duplicated=%d not_followed=%d", lost, dup, notFollowed)
	}
	if t.Failed() {
		t.FailNow()
	}
}

func eventID(w, n int) string { return fmt.Sprintf("soak-%02d-%d", w, n) }

func parseID(id string) (w, n int, ok bool) {
	rest, ok := strings.CutPrefix(id, "soak-")
	if !ok {
		return 0, 0, false
	}
	ws, ns, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, 0, false
	}
	w, err1 := strconv.Atoi(ws)
	n, err2 := strconv.Atoi(ns)
	return w, n, err1 == nil && err2 == nil && w >= 0 && n >= 0
}

var otherKinds = []eventlog.Kind{eventlog.KindPlanAction, eventlog.KindEffect, eventlog.KindGateDecision,
	eventlog.KindVerifyOutcome, eventlog.KindManifestPoll, eventlog.KindRolloutEvent, "soak_note"}

// entry returns writer w's n-th entry. It is a pure function of (w, n), so
// a re-send is the very same entry.
func (s *soak) entry(w, n int) eventlog.Entry {
	r := rand.New(rand.NewPCG(uint64(w), uint64(n)))
	e := eventlog.Entry{EventID: eventID(w, n), HostID: fmt.Sprintf("host-%03d", r.IntN(200))}
	if r.IntN(8) > 0 {
		e.RolloutID = fmt.Sprintf("rollout-%d", r.IntN(8))
	}
	switch k := r.IntN(10); {
	case k < 4: // a probe result, explicitly timed
		e.Kind = eventlog.KindAgentEvent
		e.TS = s.base.Add(time.Duration(w)*time.Hour + time.Duration(n)*time.Millisecond + time.Duration(r.IntN(1000))*time.Nanosecond)
		mode, status := "enforce", "fail"
		if r.IntN(5) == 0 {
			mode = "observe"
		}
		if r.IntN(4) == 0 {
			status = "pass"
		}
		p := probefailures.ProbeResult{Type: probefailures.TypeProbeResult, Mode: mode, Status: status,
			ProbeName: fmt.Sprintf("probe-%d", r.IntN(20))}
		if r.IntN(2) == 0 {
			p.ObservedAt = e.TS.Add(-time.Second).Format(time.RFC3339Nano)
		}
		for range 1 + r.IntN(6) {
			sub := probefailures.SubResult{ControlID: fmt.Sprintf("CIS-5.2.%d", r.IntN(12)), Framework: "cis", Status: "fail"}
			if r.IntN(3) == 0 {
				sub.Framework, sub.ControlID = "nist", fmt.Sprintf("AC-%d", r.IntN(20))
			}
			if r.IntN(3) == 0 {
				sub.Status = "pass"
			}
			p.SubResults = append(p.SubResults, sub)
		}
		e.Payload, _ = json.Marshal(p)
	case k < 6: // another agent event, stamped by the log's clock
		e.Kind = eventlog.KindAgentEvent
		e.Payload = json.RawMessage(fmt.Sprintf(`{"type":"Heartbeat","writer":%d,"n":%d,"uptime_s":%d}`, w, n, r.IntN(1e6)))
	default:
		e.Kind = otherKinds[r.IntN(len(otherKinds))]
		e.Payload = json.RawMessage(fmt.Sprintf(`{"writer":%d,"n":%d,"note":%q}`, w, n, strings.Repeat("x", r.IntN(200))))
	}
	return e
}

// pending is one entry of an append and what its result must be.
type pending struct {
	n      int
	acked  bool  // a deliberate re-send of an acknowledged entry
	seq    int64 // its acknowledged seq, when acked
	unsure bool  // an abandoned append may or may not have stored it
	// retried: an attempt failed with a retryable error, which may or may
	// not have stored it (a connection lost during COMMIT).
	retried bool
}

// write is one writer's loop.
func (s *soak) write(ctx context.Context, w int, stop func() bool) {
	r := rand.New(rand.NewPCG(uint64(w), 0x50a4))
	next := 0 // the next entry never sent
	fresh := func(k int) []pending {
		out := make([]pending, k)
		for i := range out {
			out[i] = pending{n: next}
			next++
		}
		return out
	}
	old := func() pending {
		i := r.IntN(len(s.acks[w]))
		return pending{n: i, acked: true, seq: s.acks[w][i]}
	}
	for !stop() {
		var batch []pending
		single := r.IntN(2) == 0
		size := 1
		if !single {
			size = 1 + r.IntN(maxBatch)
		}
		switch x := r.IntN(100); {
		case x < 7 && len(s.acks[w]) > 0:
			// Re-send acknowledged entries, alone.
			for range 1 + r.IntN(3) {
				batch = append(batch, old())
			}
			if single {
				batch = batch[:1]
			}
		case x < 10 && len(s.acks[w]) > 0:
			// Re-send acknowledged entries among new ones.
			batch = fresh(size)
			for range 1 + r.IntN(3) {
				i := r.IntN(len(batch) + 1)
				batch = slices.Insert(batch, i, old())
			}
		case x < 12:
			// Abandon an append halfway (a client giving up), then re-send
			// the same entries: each must land exactly once.
			batch = fresh(size)
			s.abandoned.Add(1)
			actx, cancel := context.WithTimeout(ctx, time.Duration(r.IntN(20000))*time.Microsecond)
			res, err := s.appendOnce(actx, w, batch)
			cancel()
			if err == nil {
				s.abandonedOK.Add(1)
				s.appends.Add(1)
				s.entriesSent.Add(int64(len(batch)))
				if !s.check(w, batch, res) {
					return
				}
				for i := range batch {
					s.acks[w] = append(s.acks[w], res[i].Event.Seq)
					batch[i] = pending{n: batch[i].n, acked: true, seq: res[i].Event.Seq}
				}
			} else {
				for i := range batch {
					batch[i].unsure = true
				}
			}
		default:
			batch = fresh(size)
		}
		res, ok := s.appendRetry(ctx, w, batch)
		if !ok || !s.check(w, batch, res) {
			return
		}
		for i, p := range batch {
			switch {
			case p.acked:
				s.resentAcked.Add(1)
			case p.unsure:
				s.resentUnacked.Add(1)
				if res[i].Duplicate && !p.retried {
					s.unackedLanded.Add(1)
				}
			}
			if p.retried && res[i].Duplicate {
				s.retriedLanded.Add(1)
			}
			if !p.acked {
				s.acks[w] = append(s.acks[w], res[i].Event.Seq)
			}
		}
	}
}

func (s *soak) entries(w int, batch []pending) []eventlog.Entry {
	out := make([]eventlog.Entry, len(batch))
	for i, p := range batch {
		out[i] = s.entry(w, p.n)
	}
	return out
}

func (s *soak) appendOnce(ctx context.Context, w int, batch []pending) ([]eventlog.Result, error) {
	entries := s.entries(w, batch)
	if len(entries) == 1 {
		res, err := s.log.Append(ctx, entries[0])
		if err != nil {
			return nil, err
		}
		return []eventlog.Result{res}, nil
	}
	return s.log.AppendBatch(ctx, entries)
}

// appendRetry appends batch, retrying the same entries after a retryable
// error, with a growing backoff.
func (s *soak) appendRetry(ctx context.Context, w int, batch []pending) ([]eventlog.Result, bool) {
	backoff := 2 * time.Millisecond
	start := time.Now()
	for attempt := 1; ; attempt++ {
		res, err := s.appendOnce(ctx, w, batch)
		if err == nil {
			s.latency[w] = append(s.latency[w], time.Since(start))
			s.appends.Add(1)
			s.entriesSent.Add(int64(len(batch)))
			return res, true
		}
		if !eventlog.Retryable(err) {
			s.errorf("writer %d: append of %d entries (first %s): %v", w, len(batch), eventID(w, batch[0].n), err)
			return nil, false
		}
		if attempt >= maxAttempts {
			s.errorf("writer %d: still retryable after %d attempts: %v", w, attempt, err)
			return nil, false
		}
		s.retries.Add(1)
		s.noteRetryable(err)
		for i := range batch {
			batch[i].retried = !batch[i].acked
		}
		time.Sleep(backoff + time.Duration(rand.Int64N(int64(backoff))))
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// check compares an append's results with what each entry expects.
func (s *soak) check(w int, batch []pending, res []eventlog.Result) bool {
	if len(res) != len(batch) {
		s.errorf("writer %d: %d results for %d entries", w, len(res), len(batch))
		return false
	}
	var prev int64
	for i, p := range batch {
		r := res[i]
		id := eventID(w, p.n)
		switch {
		case r.Event.EventID != id:
			s.errorf("writer %d: result %d is event %q, want %q", w, i, r.Event.EventID, id)
			return false
		case p.acked && (!r.Duplicate || r.Event.Seq != p.seq):
			s.errorf("writer %d: re-sent %s (acknowledged at seq %d) came back duplicate=%v seq=%d",
				w, id, p.seq, r.Duplicate, r.Event.Seq)
			return false
		case !p.acked && !p.unsure && !p.retried && r.Duplicate:
			s.errorf("writer %d: new entry %s came back as a duplicate of seq %d", w, id, r.Event.Seq)
			return false
		case r.Event.Seq <= 0:
			s.errorf("writer %d: %s got seq %d", w, id, r.Event.Seq)
			return false
		}
		if r.Duplicate {
			s.dupDetected.Add(1)
			continue
		}
		s.newEvents.Add(1)
		if r.Event.Seq <= prev {
			s.errorf("writer %d: new entries got seqs out of entry order (%d after %d)", w, r.Event.Seq, prev)
			return false
		}
		prev = r.Event.Seq
	}
	return true
}

// vmHWM returns the process's peak resident set size in bytes, or 0 where
// /proc/self/status is missing.
func vmHWM(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Errorf("VmHWM %q: %v", rest, err)
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
