package projection_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

var t0 = time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)

// setup returns a migrated log on a fresh database of backend with ps
// registered and installed.
func setup(t *testing.T, backend string, ps ...projection.Projection) (*eventlog.Log, *projection.Registry, *sqlx.DB) {
	t.Helper()
	return setupIn(t, dbtest.New(t, backend), ps...)
}

func ev(kind eventlog.Kind, host, payload string) eventlog.Entry {
	return eventlog.Entry{Kind: kind, HostID: host, Payload: json.RawMessage(payload)}
}

func viewRows(t *testing.T, db *sqlx.DB) []string {
	t.Helper()
	var rows []string
	require.NoError(t, db.Select(&rows, `SELECT CAST(event_log_seq AS TEXT) || ':' || kind || ':' || host_id FROM test_view ORDER BY event_log_seq`))
	return rows
}

func count(t *testing.T, db *sqlx.DB, table string) int {
	t.Helper()
	var n int
	require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM `+table))
	return n
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	reg, err := projection.NewRegistry()
	require.NoError(t, err)
	require.NoError(t, reg.Register(&named{name: "zeta"}))
	require.NoError(t, reg.Register(&named{name: "alpha"}))
	require.NoError(t, reg.Register(&named{name: "mid_1"}))
	require.Equal(t, []string{"alpha", "mid_1", "zeta"}, reg.Names())
	require.Len(t, reg.All(), 3)
	require.Equal(t, "alpha", reg.All()[0].Name())

	p, ok := reg.Get("mid_1")
	require.True(t, ok)
	require.Equal(t, "mid_1", p.Name())
	_, ok = reg.Get("nope")
	require.False(t, ok)

	require.ErrorIs(t, reg.Register(&named{name: "alpha"}), projection.ErrDuplicateName)
	for _, bad := range []projection.Projection{
		nil,
		&named{name: ""},
		&named{name: "Upper"},
		&named{name: "has-dash"},
		&named{name: "1digit"},
		&named{name: "x", version: -1},
		&named{name: "y", version: 0, zeroVersion: true},
	} {
		require.ErrorIs(t, reg.Register(bad), projection.ErrInvalidProjection, "%#v", bad)
	}
	require.ErrorIs(t, reg.Register(&kindView{testView{kinds: []eventlog.Kind{}}}), projection.ErrInvalidProjection)
	require.ErrorIs(t, reg.Register(&kindView{testView{kinds: []eventlog.Kind{"Bad"}}}), eventlog.ErrInvalidKind)
	require.Equal(t, []string{"alpha", "mid_1", "zeta"}, reg.Names(), "refused registrations change nothing")

	require.Panics(t, func() { reg.MustRegister(&named{name: "zeta"}) })
	_, err = projection.NewRegistry(&named{name: "a"}, &named{name: "a"})
	require.ErrorIs(t, err, projection.ErrDuplicateName)
}

// named is a projection that does nothing.
type named struct {
	name        string
	version     int
	zeroVersion bool
}

func (n *named) Name() string { return n.name }
func (n *named) Version() int {
	if n.version == 0 && !n.zeroVersion {
		return 1
	}
	return n.version
}
func (n *named) Apply(context.Context, *sqlx.Tx, eventlog.Event) error { return nil }
func (n *named) Reset(context.Context, *sqlx.Tx) error                 { return nil }

// Contract 2: an append and its projections commit together or not at all.
func TestDispatch(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()

		t.Run("SameTransaction", func(t *testing.T) {
			view := &testView{}
			log, _, db := setup(t, backend, view)
			res, err := log.Append(ctx, ev("k", "h1", `{"a":1}`))
			require.NoError(t, err)
			require.Equal(t, []string{fmt.Sprintf("%d:k:h1", res.Event.Seq)}, viewRows(t, db))

			// Inside the caller's transaction: the view row rolls back with it.
			tx, err := db.BeginTxx(ctx, nil)
			require.NoError(t, err)
			_, err = log.AppendTx(ctx, tx, ev("k", "h2", `{}`))
			require.NoError(t, err)
			require.NoError(t, tx.Rollback())
			require.Len(t, viewRows(t, db), 1)

			// A duplicate is not applied again.
			e := ev("k", "h3", `{}`)
			e.EventID = "once"
			_, err = log.Append(ctx, e)
			require.NoError(t, err)
			_, err = log.AppendBatch(ctx, []eventlog.Entry{e, e})
			require.NoError(t, err)
			require.Len(t, viewRows(t, db), 2)
			// Applied for h1, for h2 (then rolled back with the caller's
			// transaction) and for h3 once: not for the duplicates.
			require.EqualValues(t, 3, view.applied.Load())
		})

		t.Run("ErrorRollsBackTheAppend", func(t *testing.T) {
			view := &testView{failOn: "poison"}
			log, _, db := setup(t, backend, view)
			_, err := log.Append(ctx, ev("k", "h1", `{"ok":1}`))
			require.NoError(t, err)
			before := viewRows(t, db)
			last, err := log.LastSeq(ctx)
			require.NoError(t, err)

			for _, batch := range [][]eventlog.Entry{
				{ev("k", "h2", `{"poison":1}`)},
				{ev("k", "h2", `{"ok":2}`), ev("k", "h2", `{"poison":2}`), ev("k", "h2", `{"ok":3}`)},
			} {
				_, err := log.AppendBatch(ctx, batch)
				require.ErrorIs(t, err, errPoison)
				var ae *projection.ApplyError
				require.ErrorAs(t, err, &ae)
				require.Equal(t, "test_view", ae.Projection)
				require.True(t, ae.Appending)
				require.Greater(t, ae.Seq, last, "the error names the failing event's seq")
				// ... as one that no stored event has.
				require.Contains(t, err.Error(), fmt.Sprintf("projection test_view: event at seq %d (not stored: the append was rolled back): ", ae.Seq))
				require.Equal(t, 1, count(t, db, "event_log"), "the event is absent")
				require.Equal(t, before, viewRows(t, db), "the view is unchanged")
			}

			// Why the message says so: on SQLite the next event takes the
			// seq the failed append had.
			_, err = log.Append(ctx, ev("k", "h2", `{"poison":3}`))
			var ae *projection.ApplyError
			require.ErrorAs(t, err, &ae)
			next, err := log.Append(ctx, ev("k", "h3", `{"ok":4}`))
			require.NoError(t, err)
			if backend == "sqlite" {
				require.Equal(t, ae.Seq, next.Event.Seq)
			} else {
				require.Greater(t, next.Event.Seq, ae.Seq)
			}
		})

		t.Run("KindFilter", func(t *testing.T) {
			view := &kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}
			log, _, db := setup(t, backend, view)
			_, err := log.AppendBatch(ctx, []eventlog.Entry{
				ev(eventlog.KindAgentEvent, "h1", `{}`),
				ev(eventlog.KindPlanAction, "h1", `{}`),
				ev(eventlog.KindAgentEvent, "h2", `{}`),
			})
			require.NoError(t, err)
			_, err = log.Append(ctx, ev(eventlog.KindEffect, "h3", `{}`))
			require.NoError(t, err)
			require.Equal(t, []string{"1:agent_event:h1", "3:agent_event:h2"}, viewRows(t, db))
		})
	})
}

// An ApplyError names events by seq plainly only when they are stored
// (replayed by a rebuild); during an append it says the seq is not stored.
func TestApplyErrorMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  projection.ApplyError
		want string
	}{
		{projection.ApplyError{Projection: "v", Seq: 7, FirstSeq: 7, LastSeq: 7, Err: errPoison},
			"projection v: event 7: poisoned payload"},
		{projection.ApplyError{Projection: "v", FirstSeq: 7, LastSeq: 9, Err: errPoison},
			"projection v: events 7..9: poisoned payload"},
		{projection.ApplyError{Projection: "v", Seq: 8, FirstSeq: 7, LastSeq: 9, Appending: true, Err: errPoison},
			"projection v: event at seq 8 (not stored: the append was rolled back): poisoned payload"},
		{projection.ApplyError{Projection: "v", FirstSeq: 7, LastSeq: 9, Appending: true, Err: errPoison},
			"projection v: events at seqs 7..9 (not stored: the append was rolled back): poisoned payload"},
	} {
		require.Equal(t, tc.want, tc.err.Error())
		require.ErrorIs(t, &tc.err, errPoison)
	}
}

func TestRebuild(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()

		fill := func(t *testing.T, log *eventlog.Log, n int) {
			t.Helper()
			var batch []eventlog.Entry
			for i := range n {
				batch = append(batch, ev("k", fmt.Sprint("h", i%7), fmt.Sprintf(`{"i":%d}`, i)))
			}
			_, err := log.AppendBatch(ctx, batch)
			require.NoError(t, err)
		}

		t.Run("ReplaysFromSeqOne", func(t *testing.T) {
			view := &testView{}
			log, reg, db := setup(t, backend, view)
			fill(t, log, 250)
			want := viewRows(t, db)
			_, err := db.Exec(`DELETE FROM test_view WHERE event_log_seq % 3 = 0`)
			require.NoError(t, err)

			var progress []projection.Progress
			res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{
				BatchSize: 100,
				Offline:   true,
				Progress:  func(p projection.Progress) { progress = append(progress, p) },
			})
			require.NoError(t, err)
			require.Len(t, res, 1)
			require.Positive(t, res[0].LockHeld)
			require.Equal(t, projection.RebuildResult{Name: "test_view", Version: 1, Events: 250, Seq: 250, Rows: 250,
				Duration: res[0].Duration, LockHeld: res[0].LockHeld}, res[0])
			require.Equal(t, want, viewRows(t, db))
			require.Equal(t, []projection.Progress{
				{Projection: "test_view", Phase: projection.PhaseReplay, Done: 0, Total: 250},
				{Projection: "test_view", Phase: projection.PhaseReplay, Done: 100, Total: 250},
				{Projection: "test_view", Phase: projection.PhaseReplay, Done: 200, Total: 250},
				{Projection: "test_view", Phase: projection.PhaseReplay, Done: 250, Total: 250},
			}, progress)

			sts, err := projection.ReadStatus(ctx, log, reg)
			require.NoError(t, err)
			require.Equal(t, 1, sts[0].BuiltVersion)
			require.EqualValues(t, 250, sts[0].BuiltSeq)
			require.False(t, sts[0].Stale)
			require.False(t, sts[0].BuiltAt.IsZero())
		})

		t.Run("CancelledLeavesTheOldState", func(t *testing.T) {
			view := &testView{}
			log, reg, db := setup(t, backend, view)
			fill(t, log, 300)
			_, err := db.Exec(`DELETE FROM test_view WHERE event_log_seq > 290`) // a recognizably old state
			require.NoError(t, err)
			before := viewRows(t, db)
			cpBefore := checkpoints(t, db)

			cctx, cancel := context.WithCancel(ctx)
			_, err = projection.Rebuild(cctx, log, reg, &projection.RebuildOptions{
				BatchSize: 50,
				Progress: func(p projection.Progress) {
					if p.Done >= 100 {
						cancel()
					}
				},
			})
			require.ErrorIs(t, err, context.Canceled)
			require.Equal(t, before, viewRows(t, db))
			require.Equal(t, cpBefore, checkpoints(t, db))
		})

		t.Run("FailureOnEventKLeavesTheOldState", func(t *testing.T) {
			view := &testView{}
			log, reg, db := setup(t, backend, view)
			fill(t, log, 120)
			_, err := log.Append(ctx, ev("k", "h", `{"late":1}`))
			require.NoError(t, err)
			fill(t, log, 30)
			before := viewRows(t, db)
			cpBefore := checkpoints(t, db)

			view.failOn = "late" // the new logic chokes on event 121
			_, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 16})
			require.ErrorIs(t, err, errPoison)
			var ae *projection.ApplyError
			require.ErrorAs(t, err, &ae)
			require.EqualValues(t, 121, ae.Seq)
			// A replayed event is stored: the message names it plainly.
			require.False(t, ae.Appending)
			require.Contains(t, err.Error(), "projection test_view: event 121: ")
			require.Equal(t, before, viewRows(t, db))
			require.Equal(t, cpBefore, checkpoints(t, db))
		})

		t.Run("StaleOnly", func(t *testing.T) {
			a, b := &named{name: "a_view"}, &named{name: "b_view"}
			log, reg, _ := setup(t, backend, a, b)
			sts, err := projection.ReadStatus(ctx, log, reg)
			require.NoError(t, err)
			require.False(t, sts[0].Stale)
			require.False(t, sts[1].Stale)

			b.version = 2
			sts, err = projection.ReadStatus(ctx, log, reg)
			require.NoError(t, err)
			require.Equal(t, projection.Status{Name: "b_view", Installed: true, Registered: true, Version: 2, BuiltVersion: 1, BuiltAt: sts[1].BuiltAt, AllKinds: true, Stale: true}, sts[1])
			require.False(t, sts[0].Stale)

			res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{StaleOnly: true})
			require.NoError(t, err)
			require.Len(t, res, 1)
			require.Equal(t, "b_view", res[0].Name)
			require.EqualValues(t, -1, res[0].Rows, "no Tabler: rows unknown")
			sts, err = projection.ReadStatus(ctx, log, reg)
			require.NoError(t, err)
			require.False(t, sts[1].Stale)
			require.Equal(t, 2, sts[1].BuiltVersion)

			res, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{StaleOnly: true})
			require.NoError(t, err)
			require.Empty(t, res)
		})

		t.Run("BadOptions", func(t *testing.T) {
			log, reg, db := setup(t, backend, &testView{})
			fill(t, log, 3)
			cp := checkpoints(t, db)
			_, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Names: []string{"test_view", "nope"}})
			require.ErrorIs(t, err, projection.ErrUnknownProjection)
			_, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: -1})
			require.Error(t, err)
			require.Equal(t, cp, checkpoints(t, db))
		})
	})
}

func checkpoints(t *testing.T, db *sqlx.DB) []string {
	t.Helper()
	var out []string
	require.NoError(t, db.Select(&out, `SELECT name || ':' || CAST(version AS TEXT) || ':' || CAST(built_seq AS TEXT) || ':' || CAST(built_at AS TEXT) FROM canonlog_projections ORDER BY name`))
	return out
}

func TestVerify(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, reg, db := setup(t, backend, &testView{})
		for i := range 40 {
			_, err := log.Append(ctx, ev("k", fmt.Sprint("h", i%3), `{}`))
			require.NoError(t, err)
		}
		res, err := projection.Verify(ctx, log, reg, nil)
		require.NoError(t, err)
		require.Len(t, res, 1)
		require.True(t, res[0].Equal, "%+v", res[0])
		require.EqualValues(t, 40, res[0].Events)
		require.Equal(t, res[0].LiveChecksum, res[0].FreshChecksum)

		// Alter the view behind canonlog's back (as a careless operator
		// would; the view is not append-only).
		before := viewRows(t, db)
		_, err = db.Exec(`UPDATE test_view SET host_id = 'tampered' WHERE event_log_seq = 7`)
		require.NoError(t, err)
		_, err = db.Exec(`DELETE FROM test_view WHERE event_log_seq = 9`)
		require.NoError(t, err)
		res, err = projection.Verify(ctx, log, reg, []string{"test_view"})
		require.NoError(t, err)
		r := res[0]
		require.False(t, r.Equal)
		require.EqualValues(t, 2, r.Missing) // seq 7 as derived, seq 9
		require.EqualValues(t, 1, r.Extra)   // seq 7 tampered
		require.Len(t, r.Samples, 3)
		samples := make([]string, len(r.Samples))
		for i, s := range r.Samples {
			samples[i] = s.String()
		}
		require.Contains(t, samples, `extra test_view: (event_log_seq="7", kind="k", host_id="tampered", payload_len="2")`)
		require.Contains(t, samples, `missing test_view: (event_log_seq="9", kind="k", host_id="h2", payload_len="2")`)
		require.NotEqual(t, r.LiveChecksum, r.FreshChecksum)

		// Verify changed nothing; a rebuild repairs the view.
		require.Len(t, viewRows(t, db), 39)
		_, err = projection.Rebuild(ctx, log, reg, nil)
		require.NoError(t, err)
		require.Equal(t, before, viewRows(t, db))
		res, err = projection.Verify(ctx, log, reg, nil)
		require.NoError(t, err)
		require.True(t, res[0].Equal)

		_, err = projection.Verify(ctx, log, reg, []string{"nope"})
		require.ErrorIs(t, err, projection.ErrUnknownProjection)
	})
}

func TestVerifyNeedsTablesOrChecksum(t *testing.T) {
	t.Parallel()
	log, reg, _ := setup(t, "sqlite", &named{name: "opaque"})
	_, err := projection.Verify(context.Background(), log, reg, nil)
	require.ErrorIs(t, err, projection.ErrNotVerifiable)
}

func TestCheckStale(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		view := &testView{}
		log, reg, db := setup(t, backend, view)
		_, err := log.Append(ctx, ev("k", "h", `{}`))
		require.NoError(t, err)

		sts, err := projection.CheckStale(ctx, log, reg, projection.StaleRefuse)
		require.NoError(t, err, "installed on an empty log: built")
		require.False(t, sts[0].Stale)

		view.version = 2
		_, err = projection.CheckStale(ctx, log, reg, projection.StaleRefuse)
		require.ErrorIs(t, err, projection.ErrStale)
		var se *projection.StaleError
		require.ErrorAs(t, err, &se)
		require.Equal(t, "test_view", se.Stale[0].Name)
		require.Contains(t, err.Error(), "test_view (version 2, built at version 1)")

		sts, err = projection.CheckStale(ctx, log, reg, projection.StaleIgnore)
		require.NoError(t, err)
		require.True(t, sts[0].Stale)

		sts, err = projection.CheckStale(ctx, log, reg, projection.StaleRebuild)
		require.NoError(t, err)
		require.False(t, sts[0].Stale)
		require.Equal(t, 2, sts[0].BuiltVersion)
		require.Len(t, viewRows(t, db), 1)

		// A projection added to a log that already has events is never built.
		late := &kindView{testView{kinds: []eventlog.Kind{"k"}}}
		reg2, err := projection.NewRegistry(late)
		require.NoError(t, err)
		_, err = db.Exec(`DROP TABLE test_view`)
		require.NoError(t, err)
		_, err = db.Exec(`DROP TABLE canonlog_migrations_test_view`)
		require.NoError(t, err)
		_, err = db.Exec(`DELETE FROM canonlog_projections`)
		require.NoError(t, err)
		log2, err := eventlog.New(db, &eventlog.Config{Hook: reg2})
		require.NoError(t, err)
		_, err = projection.Migrate(ctx, log2, reg2)
		require.NoError(t, err)
		_, err = projection.CheckStale(ctx, log2, reg2, projection.StaleRefuse)
		require.ErrorContains(t, err, "test_view (version 1, never built)")

		for _, s := range []string{"refuse", "rebuild", "ignore"} {
			p, err := projection.ParseStalePolicy(s)
			require.NoError(t, err)
			require.Equal(t, s, p.String())
		}
		_, err = projection.ParseStalePolicy("maybe")
		require.Error(t, err)
	})
}

// Two rebuilds of one projection never interleave: the second waits for
// the first — offline, for its exclusive lock (PostgreSQL advisory lock;
// SQLite's single writer); online on PostgreSQL, for its session lock,
// since both would build in the same shadow schema. (Online on SQLite
// each builds in its own connection's temporary tables, and each swap
// installs a complete view: they need not wait for each other.)
func TestConcurrentRebuilds(t *testing.T) {
	t.Parallel()
	t.Run("offline", func(t *testing.T) {
		t.Parallel()
		dbtest.Run(t, func(t *testing.T, backend string) { concurrentRebuilds(t, backend, true) })
	})
	t.Run("online/postgres", func(t *testing.T) {
		t.Parallel()
		concurrentRebuilds(t, "postgres", false)
	})
}

func concurrentRebuilds(t *testing.T, backend string, offline bool) {
	{
		ctx := context.Background()
		log, reg, db := setup(t, backend, &testView{})
		var batch []eventlog.Entry
		for i := range 200 {
			batch = append(batch, ev("k", "h", fmt.Sprintf(`{"i":%d}`, i)))
		}
		_, err := log.AppendBatch(ctx, batch)
		require.NoError(t, err)

		firstHolding := make(chan struct{})
		releaseFirst := make(chan struct{})
		var once sync.Once
		var wg sync.WaitGroup
		var events sync.Map
		wg.Go(func() {
			_, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 50, Offline: offline, Progress: func(p projection.Progress) {
				if p.Done > 0 {
					once.Do(func() { close(firstHolding); <-releaseFirst })
				}
			}})
			events.Store("first", err)
		})
		<-firstHolding
		secondStarted := make(chan struct{})
		wg.Go(func() {
			_, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 50, Offline: offline, Progress: func(p projection.Progress) {
				select {
				case <-secondStarted:
				default:
					close(secondStarted)
				}
			}})
			events.Store("second", err)
		})
		select {
		case <-secondStarted:
			t.Fatal("second rebuild ran while the first held the projection")
		case <-time.After(300 * time.Millisecond):
		}
		close(releaseFirst)
		wg.Wait()
		for _, k := range []string{"first", "second"} {
			v, _ := events.Load(k)
			if v != nil {
				require.NoError(t, v.(error), k)
			}
		}
		require.Equal(t, 200, count(t, db, "test_view"))
	}
}
