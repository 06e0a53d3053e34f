package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// Defaults of the rebuild-load scenario.
const (
	DefaultWriters      = 8
	DefaultLoadBaseline = 10 * time.Second
	MaxLoadBaseline     = time.Hour
)

// The cases of rebuild-load, in the order they run.
const (
	CaseBaseline       = "baseline"
	CaseOnlineRebuild  = "online-rebuild"
	CaseOfflineRebuild = "offline-rebuild"
	CaseVerify         = "verify"
)

const (
	// loadFillBatch is the size of the fill's AppendBatch calls.
	loadFillBatch = 1000
	// loadSettleMax bounds the pause before each case, in which the
	// writers run unmeasured: the previous case's backlog drains.
	loadSettleMax = 2 * time.Second
	// loadDrainMax bounds the wait, after a window, for the appends
	// still in flight (on SQLite one may wait out the busy timeout) and
	// then for the follower to deliver the window's events.
	loadDrainMax = time.Minute
	// lockSampleEvery is how often PostgreSQL's sessions are sampled for
	// writers waiting on a lock.
	lockSampleEvery = 20 * time.Millisecond
)

// appendRec is one append of a writer; times are since the scenario's
// start.
type appendRec struct {
	start, end time.Duration
	seq        int64 // 0 when it failed
	failed     bool
	busy       bool // failed with SQLITE_BUSY (or LOCKED)
}

// lockSample is, at t, the number of writer sessions waiting on a lock
// and how long the oldest transaction with a transaction id of a session
// not the run's had been running.
type lockSample struct {
	t       time.Duration
	waiting int
	foreign time.Duration
}

// loadRun is rebuild-load's state. Three pools stand for three
// processes: the service whose writers append (svc), the operator's
// `canonlog rebuild` or `verify` (op), and `canonlog tail -f` (tail).
type loadRun struct {
	r             *run
	svc, op, tail *benchDB
	appName       string // PostgreSQL: the writers' application_name
	start         time.Time

	next     atomic.Int64 // the number of the last event handed out
	stop     atomic.Bool
	inflight []atomic.Int64 // per writer: start of the append in flight, -1 when none

	mu        sync.Mutex
	appends   []appendRec
	delivered map[int64]time.Duration
	samples   []lockSample
	failure   error // the first unexpected error of a writer or the follower
}

func (l *loadRun) since() time.Duration { return time.Since(l.start) }

func (l *loadRun) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failure == nil {
		l.failure = err
	}
}

func (l *loadRun) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failure
}

// rebuildLoad runs the rebuild-load scenario: it fills a log of
// Config.Events mixed events, starts Config.Writers writers appending
// agent events one at a time and a follower at the head, and measures
// them in four windows: nothing else running, an online rebuild of
// probe_failures, an offline rebuild, a verify.
func (r *run) rebuildLoad(ctx context.Context) (*LoadResult, error) {
	sdb, err := r.set.Create(ctx)
	if err != nil {
		return nil, err
	}
	l := &loadRun{r: r, delivered: map[int64]time.Duration{}, inflight: make([]atomic.Int64, r.cfg.Writers)}
	// On PostgreSQL each pool names its sessions, so that the sampler
	// finds the writers, and tells the run's transactions from others on
	// the server.
	l.appName = r.set.Name() + "_writers"
	open := func(role string) (*benchDB, error) {
		if r.set.Dialect() != eventlog.Postgres {
			return r.open(ctx, sdb.URL)
		}
		u, err := url.Parse(sdb.URL)
		if err != nil {
			return nil, err
		}
		q := u.Query()
		q.Set("application_name", r.set.Name()+"_"+role)
		u.RawQuery = q.Encode()
		return r.open(ctx, u.String())
	}
	if l.svc, err = open("writers"); err != nil {
		return nil, err
	}
	if _, err := projection.Migrate(ctx, l.svc.log, l.svc.reg); err != nil {
		return nil, fmt.Errorf("migrate scratch database: %w", err)
	}
	if l.op, err = open("operator"); err != nil {
		return nil, err
	}
	if l.tail, err = open("tail"); err != nil {
		return nil, err
	}

	res := &LoadResult{Events: r.cfg.Events, Writers: r.cfg.Writers, WriteRate: r.cfg.WriteRate, GentleRebuild: r.cfg.GentleRebuild,
		PollIntervalMS: ms(eventlog.DefaultPollInterval), BaselineMS: ms(r.cfg.LoadBaseline)}
	began := time.Now()
	if err := l.fill(ctx); err != nil {
		return nil, err
	}
	res.FillSeconds = time.Since(began).Seconds()
	fmt.Fprintf(r.cfg.Progress, "bench: rebuild-load: filled %d events in %s\n", r.cfg.Events, time.Since(began).Round(time.Millisecond))

	l.start = time.Now()
	pos, err := l.tail.bare.PositionAtHead(ctx)
	if err != nil {
		return nil, err
	}
	l.next.Store(int64(r.cfg.Events))
	bg, stopBG := context.WithCancel(ctx)
	var followers sync.WaitGroup
	defer func() {
		stopBG()
		followers.Wait()
	}()
	f, err := l.tail.bare.NewFollower(pos, nil) // tail -f's defaults
	if err != nil {
		return nil, err
	}
	followers.Go(func() { l.follow(bg, f) })
	if r.set.Dialect() == eventlog.Postgres {
		followers.Go(func() { l.sampleLocks(bg) })
	}
	var writers sync.WaitGroup
	for w := range r.cfg.Writers {
		l.inflight[w].Store(-1)
		writers.Go(func() { l.write(ctx, w) })
	}
	stopWriters := sync.OnceFunc(func() {
		l.stop.Store(true)
		writers.Wait()
	})
	defer stopWriters()

	settle := min(r.cfg.LoadBaseline/5, loadSettleMax)
	opts := func(offline bool) *projection.RebuildOptions {
		return &projection.RebuildOptions{Names: []string{probefailures.Name}, Offline: offline, Gentle: !offline && r.cfg.GentleRebuild}
	}
	cases := []struct {
		name string
		op   func(context.Context, *LoadCase) error
	}{
		{CaseBaseline, func(ctx context.Context, _ *LoadCase) error { return sleep(ctx, r.cfg.LoadBaseline) }},
		{CaseOnlineRebuild, func(ctx context.Context, c *LoadCase) error { return l.rebuild(ctx, c, opts(false)) }},
		{CaseOfflineRebuild, func(ctx context.Context, c *LoadCase) error { return l.rebuild(ctx, c, opts(true)) }},
		{CaseVerify, l.verify},
	}
	for _, cs := range cases {
		if err := sleep(ctx, settle); err != nil {
			return nil, err
		}
		c, err := l.measure(ctx, cs.name, cs.op)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cs.name, err)
		}
		fmt.Fprintf(r.cfg.Progress, "bench: rebuild-load: %s: %d appends, p99 %.1f ms, max %.1f ms, tail lag max %.1f ms\n",
			c.Name, c.Appends, c.P99MS, c.MaxMS, c.Tail.MaxMS)
		res.Cases = append(res.Cases, c)
	}
	stopWriters()
	if err := l.failed(); err != nil {
		return nil, err
	}
	res.evaluate(r.set.Dialect())
	return res, nil
}

// fill appends events 1 to Config.Events of the run's history (with their
// event ids) in batches through the service's log, probe_failures applied
// inline, then leaves the database as a long-lived one would be:
// statistics fresh, checkpointed.
func (l *loadRun) fill(ctx context.Context) error {
	n := int64(l.r.cfg.Events)
	batch := make([]eventlog.Entry, 0, loadFillBatch)
	step := max(n/10, 100_000)
	for i := int64(1); i <= n; i++ {
		batch = append(batch, l.r.mix.all.Entry(i))
		if len(batch) < loadFillBatch && i < n {
			continue
		}
		if _, err := l.svc.log.AppendBatch(ctx, batch); err != nil {
			return fmt.Errorf("fill: %w", err)
		}
		batch = batch[:0]
		if i%step == 0 && i < n {
			fmt.Fprintf(l.r.cfg.Progress, "bench: rebuild-load: filled %d of %d events\n", i, n)
		}
	}
	post := []string{`VACUUM (ANALYZE) event_log`, `VACUUM (ANALYZE) probe_failures`, `CHECKPOINT`}
	if l.svc.d == eventlog.SQLite {
		post = []string{`ANALYZE`, `PRAGMA wal_checkpoint(TRUNCATE)`}
	}
	for _, q := range post {
		if _, err := l.svc.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// write is writer w: it appends one agent event at a time until stopped,
// each as soon as the one before returned, or, with Config.WriteRate, at
// most at its share of that rate (an append that returns late is followed
// by the next at once, but missed slots are not made up). A busy failure
// (SQLite) is counted and the writer goes on with the next event, as a
// service that does not retry would; any other failure stops the
// scenario.
func (l *loadRun) write(ctx context.Context, w int) {
	var (
		every time.Duration
		next  time.Time
	)
	if rate := l.r.cfg.WriteRate; rate > 0 {
		every = time.Duration(float64(l.r.cfg.Writers) / rate * float64(time.Second))
		next = time.Now().Add(every * time.Duration(w) / time.Duration(l.r.cfg.Writers))
	}
	for !l.stop.Load() && ctx.Err() == nil {
		if every > 0 {
			if wait := time.Until(next); wait > 0 {
				if sleep(ctx, wait) != nil {
					return
				}
			}
			if next = next.Add(every); next.Before(time.Now()) {
				next = time.Now()
			}
		}
		e := l.r.mix.agentEntry(l.next.Add(1), time.Now())
		rec := appendRec{start: l.since()}
		l.inflight[w].Store(int64(rec.start))
		res, err := l.svc.log.Append(ctx, e)
		rec.end = l.since()
		l.inflight[w].Store(-1)
		switch {
		case err == nil:
			rec.seq = res.Event.Seq
		case ctx.Err() != nil:
			return
		default:
			rec.failed, rec.busy = true, isBusy(err)
			if !rec.busy {
				l.fail(fmt.Errorf("writer %d: %w", w, err))
			}
		}
		l.mu.Lock()
		l.appends = append(l.appends, rec)
		l.mu.Unlock()
		if rec.failed && !rec.busy {
			return
		}
	}
}

// isBusy reports SQLite's busy timeout running out (or a table lock).
func isBusy(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	code := se.Code() & 0xff
	return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
}

// follow is `canonlog tail -f`: it records when each event is delivered.
func (l *loadRun) follow(ctx context.Context, f *eventlog.Follower) {
	for ev, err := range f.Events(ctx) {
		if err != nil {
			if ctx.Err() == nil {
				l.fail(fmt.Errorf("follower: %w", err))
			}
			return
		}
		t := l.since()
		l.mu.Lock()
		l.delivered[ev.Seq] = t
		l.mu.Unlock()
	}
}

// sampleLocks counts, every lockSampleEvery, the writers' sessions that
// wait on a lock (PostgreSQL): a projection's lock held exclusively by a
// rebuild shows here. It also notes the oldest transaction of another
// client of the server: while it runs, it holds every follower back.
func (l *loadRun) sampleLocks(ctx context.Context) {
	t := time.NewTicker(lockSampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var (
			n       int
			foreign float64
		)
		// Waits to extend a table or index are the writers' own contention,
		// not a lock another transaction holds.
		err := l.op.db.QueryRowxContext(ctx, `SELECT count(*) FILTER (WHERE application_name = $1 AND wait_event_type = 'Lock' AND wait_event <> 'extend'),
  COALESCE(EXTRACT(epoch FROM max(clock_timestamp() - xact_start) FILTER (WHERE backend_xid IS NOT NULL AND NOT starts_with(application_name, $2))), 0)
FROM pg_stat_activity`, l.appName, l.r.set.Name()+"_").Scan(&n, &foreign)
		if err != nil {
			if ctx.Err() == nil {
				l.fail(fmt.Errorf("lock sampler: %w", err))
			}
			return
		}
		l.mu.Lock()
		l.samples = append(l.samples, lockSample{t: l.since(), waiting: n, foreign: time.Duration(foreign * float64(time.Second))})
		l.mu.Unlock()
	}
}

func (l *loadRun) rebuild(ctx context.Context, c *LoadCase, opts *projection.RebuildOptions) error {
	rs, err := projection.Rebuild(ctx, l.op.log, l.op.reg, opts)
	if err != nil {
		return err
	}
	r := rs[0]
	c.Rebuild = &RebuildFigures{
		Online: r.Online, OfflineReason: r.OfflineReason, DurationMS: ms(r.Duration), Events: r.Events,
		EventsPerSecond: float64(r.Events) / r.Duration.Seconds(), LockHeldMS: ms(r.LockHeld),
		CatchUpRounds: r.CatchUpRounds, CatchUpEvents: r.CatchUpEvents, SwapEvents: r.SwapEvents, Rows: r.Rows,
	}
	return nil
}

func (l *loadRun) verify(ctx context.Context, c *LoadCase) error {
	began := time.Now()
	rs, err := projection.Verify(ctx, l.op.log, l.op.reg, []string{probefailures.Name})
	if err != nil {
		return err
	}
	d := time.Since(began)
	c.Verify = &VerifyFigures{DurationMS: ms(d), Events: rs[0].Events, EventsPerSecond: float64(rs[0].Events) / d.Seconds(), Equal: rs[0].Equal}
	return nil
}

// measure runs op in a window and returns the figures of the appends in
// flight during it (started before its end, ended after its start) and
// of their delivery to the follower.
func (l *loadRun) measure(ctx context.Context, name string, op func(context.Context, *LoadCase) error) (LoadCase, error) {
	c := LoadCase{Name: name}
	pool0 := l.svc.db.Stats()
	w0 := l.since()
	if err := op(ctx, &c); err != nil {
		return c, err
	}
	w1 := l.since()
	pool1 := l.svc.db.Stats()
	c.WindowMS = ms(w1 - w0)
	c.PoolWaits, c.PoolWaitMS = pool1.WaitCount-pool0.WaitCount, ms(pool1.WaitDuration-pool0.WaitDuration)
	if err := l.failed(); err != nil {
		return c, err
	}

	// The appends still in flight at w1 belong to the window: wait for
	// them, then for the follower to deliver the window's events.
	deadline := time.Now().Add(loadDrainMax)
	for !l.settled(w1) {
		if time.Now().After(deadline) {
			return c, fmt.Errorf("appends still in flight %s after the window", loadDrainMax)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return c, err
		}
	}
	var in []appendRec
	l.mu.Lock()
	for _, a := range l.appends {
		if a.start < w1 && a.end >= w0 {
			in = append(in, a)
		}
	}
	l.mu.Unlock()
	deadline = time.Now().Add(loadDrainMax)
	for l.undelivered(in) > 0 && time.Now().Before(deadline) {
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return c, err
		}
	}

	var lat, lag, own []time.Duration
	l.mu.Lock()
	for _, a := range in {
		lat = append(lat, a.end-a.start)
		switch {
		case a.busy:
			c.Failed++
			c.Busy++
		case a.failed:
			c.Failed++
		default:
			if a.end < w1 {
				c.Appends++
			}
			if t, ok := l.delivered[a.seq]; ok {
				lag = append(lag, max(t-a.end, 0))
				own = append(own, max(t-max(a.end, l.heldUntil(a.end, t)), 0))
			} else {
				c.Tail.Undelivered++
			}
		}
	}
	for _, s := range l.samples {
		if s.t >= w0 && s.t < w1 {
			c.LockSamples++
			if s.waiting > 0 {
				c.LockWaitSamples++
			}
			c.MaxLockWaiters = max(c.MaxLockWaiters, s.waiting)
			c.OtherTxMS = max(c.OtherTxMS, ms(s.foreign))
		}
	}
	l.mu.Unlock()
	c.Measured = len(lat)
	c.AppendsPerSecond = float64(c.Appends) / (w1 - w0).Seconds()
	c.P50MS, c.P99MS, c.MaxMS = percentiles(lat)
	c.Tail.Events = len(lag)
	c.Tail.P50MS, c.Tail.P99MS, c.Tail.MaxMS = percentiles(lag)
	_, c.Tail.OwnP99MS, c.Tail.OwnMaxMS = percentiles(own)
	return c, nil
}

// heldUntil returns the last time up to until at which the sampler saw a
// transaction of another client of the server that had begun before
// acked still running (PostgreSQL): until then it held the follower
// back from an event acknowledged at acked. It returns 0 when there was
// none. Call with l.mu held.
func (l *loadRun) heldUntil(acked, until time.Duration) time.Duration {
	var held time.Duration
	i, _ := slices.BinarySearchFunc(l.samples, acked, func(s lockSample, t time.Duration) int { return cmp.Compare(s.t, t) })
	for ; i < len(l.samples) && l.samples[i].t <= until; i++ {
		if s := l.samples[i]; s.foreign > 0 && s.t-s.foreign < acked {
			held = s.t
		}
	}
	return held
}

// settled reports whether no append that started before t is still in
// flight.
func (l *loadRun) settled(t time.Duration) bool {
	for i := range l.inflight {
		if s := l.inflight[i].Load(); s >= 0 && time.Duration(s) < t {
			return false
		}
	}
	return true
}

func (l *loadRun) undelivered(in []appendRec) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range in {
		if !a.failed {
			if _, ok := l.delivered[a.seq]; !ok {
				n++
			}
		}
	}
	return n
}

// percentiles returns the median, the 99th percentile (nearest rank) and
// the maximum of ds, in milliseconds; zeros when ds is empty.
func percentiles(ds []time.Duration) (p50, p99, maxMS float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return ms(rank(0.50)), ms(rank(0.99)), ms(s[len(s)-1])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
