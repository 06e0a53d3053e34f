package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
	"github.com/canonlog/canonlog/projectiontest"
)

// The kit, on every projection of this package, on both backends.
func TestProjectionKit(t *testing.T) {
	t.Parallel()
	statusGen := func(r *rand.Rand) eventlog.Entry {
		status := []string{"healthy", "degraded", "down"}[r.IntN(3)]
		return eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: fmt.Sprint("web-", r.IntN(5)),
			Payload: json.RawMessage(`{"status":"` + status + `"}`)}
	}
	mixedGen := func(r *rand.Rand) eventlog.Entry {
		kinds := []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindPlanAction, eventlog.KindEffect}
		payload := fmt.Sprintf(`{"n":%d}`, r.IntN(1000))
		if r.IntN(20) == 0 {
			payload = `{"poison":true}`
		}
		return eventlog.Entry{Kind: kinds[r.IntN(3)], HostID: fmt.Sprint("h", r.IntN(4)), Payload: json.RawMessage(payload)}
	}
	dbtest.Run(t, func(t *testing.T, backend string) {
		t.Run("host_status", func(t *testing.T) {
			projectiontest.RequireRebuildEquivalent(t, dbtest.New(t, backend).Open(t), hostStatus{}, statusGen, nil)
		})
		t.Run("host_reports", func(t *testing.T) { // ApplyBatch differs by backend
			projectiontest.RequireRebuildEquivalent(t, dbtest.New(t, backend).Open(t), hostReports{}, statusGen, nil)
		})
		t.Run("test_view", func(t *testing.T) {
			projectiontest.RequireRebuildEquivalent(t, dbtest.New(t, backend).Open(t), &testView{failOn: "poison"}, mixedGen, refusesPoison)
		})
		t.Run("test_view_kinds", func(t *testing.T) {
			v := &kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindEffect}, failOn: "poison"}}
			projectiontest.RequireRebuildEquivalent(t, dbtest.New(t, backend).Open(t), v, mixedGen, &projectiontest.Options{MaxBatch: 1, Refused: refusesPoison.Refused})
		})
		t.Run("test_view_markers", func(t *testing.T) {
			v := newMarkedView(`"n":1`, `"n":7`, "poison")
			v.kinds = []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindPlanAction}
			projectiontest.RequireRebuildEquivalent(t, dbtest.New(t, backend).Open(t), v, mixedGen, refusesPoison)
		})
	})
}

var refusesPoison = &projectiontest.Options{Refused: func(err error) bool { return errors.Is(err, errPoison) }}

// Contract 6 as a property: after any history of appends (single, batched,
// retried, refused) and rebuilds, the live view equals a fresh derivation,
// and a rebuild changes nothing.
func TestRebuildEquivalenceProperty(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		view := &testView{failOn: "poison"}
		status := hostStatus{}
		log, reg, db := setup(t, backend, view, status)
		rapid.Check(t, func(rt *rapid.T) {
			ops := rapid.SliceOfN(rapid.IntRange(0, 9), 1, 12).Draw(rt, "ops")
			for i, op := range ops {
				switch {
				case op < 6: // a batch of 1..6 entries
					n := rapid.IntRange(1, 6).Draw(rt, fmt.Sprint("n", i))
					batch := make([]eventlog.Entry, n)
					for j := range batch {
						host := rapid.SampledFrom([]string{"a", "b", "c"}).Draw(rt, "host")
						st := rapid.SampledFrom([]string{"up", "down", "poison"}).Draw(rt, "status")
						id := ""
						if rapid.Bool().Draw(rt, "withID") {
							id = fmt.Sprint("id-", rapid.IntRange(0, 30).Draw(rt, "id"), "-", host, "-", st)
						}
						batch[j] = eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: host, EventID: id,
							Payload: json.RawMessage(`{"status":"` + st + `"}`)}
					}
					_, err := log.AppendBatch(ctx, batch)
					if err != nil {
						require.ErrorIs(rt, err, errPoison) // the only refusal possible here
					}
				case op < 8:
					_, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: rapid.IntRange(1, 10).Draw(rt, "batch")})
					require.NoError(rt, err)
				default:
					_, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindPlanAction, Payload: json.RawMessage(`{}`)})
					require.NoError(rt, err)
				}
			}
			res, err := projection.Verify(ctx, log, reg, nil)
			require.NoError(rt, err)
			for _, r := range res {
				require.True(rt, r.Equal, "%s: %+v", r.Name, r)
			}
			var poisoned int
			require.NoError(rt, db.Get(&poisoned, `SELECT COUNT(*) FROM event_log WHERE CAST(payload AS TEXT) LIKE '%poison%'`))
			require.Zero(rt, poisoned, "refused appends leave no event")
		})
	})
}

// Rebuilds while writers append: nothing lost, nothing applied twice, and
// the view equals a fresh derivation afterwards. Offline, the writers
// wait for each rebuild; online they go on throughout, so they pause a
// little between appends for the rebuilds to finish (a rebuild that
// cannot outpace the appends applies the rest in its swap, appends
// waiting: correct, but slow).
func TestRebuildDuringConcurrentAppends(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name    string
		offline bool
		pause   time.Duration
		batch   int
	}{{"offline", true, 0, 7}, {"online", false, 5 * time.Millisecond, 50}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			rebuildDuringConcurrentAppends(t, mode.offline, mode.pause, mode.batch)
		})
	}
}

func rebuildDuringConcurrentAppends(t *testing.T, offline bool, pause time.Duration, batchSize int) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, reg, db := setup(t, backend, &testView{}, hostStatus{})
		stop := make(chan struct{})
		var (
			wg       sync.WaitGroup
			appended atomic.Int64
			retries  atomic.Int64
			errs     = make(chan error, 8)
		)
		// Each writer stops after maxAppends calls: an online rebuild
		// ends only once it outpaces the appends, which a loaded machine
		// may never let it do while they go on (a run spent 20 minutes in
		// one build, the log growing faster than it was read).
		const maxAppends = 400
		for w := range 6 {
			wg.Go(func() {
				for i := 0; i < maxAppends; i++ {
					select {
					case <-stop:
						return
					default:
					}
					size := 1
					if i%3 == 0 {
						size = 3
					}
					batch := make([]eventlog.Entry, size)
					for j := range batch {
						batch[j] = eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: fmt.Sprint("w", w),
							Payload: json.RawMessage(fmt.Sprintf(`{"status":"s%d"}`, i)), EventID: fmt.Sprintf("w%d-%d-%d", w, i, j)}
					}
					// The retry rule: on SQLite a writer can wait out its
					// busy timeout behind the others and the rebuilds on a
					// loaded machine; the same entries go again and land
					// once.
					res, err := log.AppendBatch(ctx, batch)
					for err != nil && eventlog.Retryable(err) {
						retries.Add(1)
						res, err = log.AppendBatch(ctx, batch)
					}
					if err != nil {
						errs <- err
						return
					}
					appended.Add(int64(len(res)))
					time.Sleep(pause)
				}
			})
		}
		for appended.Load() < 20 && len(errs) == 0 {
			time.Sleep(time.Millisecond) // let the writers begin
		}
		for range 5 {
			// A rebuild is atomic, so a retryable failure (on SQLite: the
			// busy timeout spent waiting behind six writers that never
			// pause) is retried like an append.
			opts := &projection.RebuildOptions{BatchSize: batchSize, Offline: offline}
			res, err := projection.Rebuild(ctx, log, reg, opts)
			for err != nil && eventlog.Retryable(err) {
				retries.Add(1)
				res, err = projection.Rebuild(ctx, log, reg, opts)
			}
			require.NoError(t, err)
			for _, r := range res {
				require.Equal(t, !offline, r.Online, "%+v", r)
			}
		}
		close(stop)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		n := appended.Load()
		require.Positive(t, n)
		require.EqualValues(t, n, count(t, db, "event_log"))
		require.EqualValues(t, n, count(t, db, "test_view"), "every event applied exactly once")
		res, err := projection.Verify(ctx, log, reg, nil)
		require.NoError(t, err)
		for _, r := range res {
			require.True(t, r.Equal, "%+v", r)
		}
		t.Logf("%s: %d events appended across 5 rebuilds, %d appends or rebuilds retried", backend, n, retries.Load())
	})
}

// On PostgreSQL an append that applies to a projection holds its lock in
// shared mode (taken in the insert statement), so it waits while a rebuild
// holds it exclusively; an append of a kind the projection ignores does
// not wait, and neither does one whose event id is already stored.
func TestAppendsWaitForTheRebuildLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	view := &kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}
	log, _, db := setup(t, "postgres", view)
	dup := ev(eventlog.KindAgentEvent, "h", `{"d":1}`)
	dup.EventID = "dup"
	_, err := log.Append(ctx, dup)
	require.NoError(t, err)

	holder, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	// However the test ends, release the lock, or a blocked append would
	// keep the schema from being dropped.
	t.Cleanup(func() { _ = holder.Rollback() })
	_, err = holder.Exec(`SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':' || 'canonlog:projection:test_view', 0))`)
	require.NoError(t, err)

	// Not waiting: another kind, and a duplicate.
	_, err = log.Append(ctx, ev(eventlog.KindPlanAction, "h", `{}`))
	require.NoError(t, err)
	res, err := log.Append(ctx, dup)
	require.NoError(t, err)
	require.True(t, res.Duplicate)

	for _, batch := range [][]eventlog.Entry{
		{ev(eventlog.KindAgentEvent, "h", `{"single":1}`)},
		{ev(eventlog.KindPlanAction, "h", `{}`), ev(eventlog.KindAgentEvent, "h", `{"batch":1}`)},
	} {
		done := make(chan error, 1)
		go func() { _, err := log.AppendBatch(ctx, batch); done <- err }()
		select {
		case err := <-done:
			t.Fatalf("append applying to test_view finished while its lock was held exclusively: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		// pg_locks is server-wide: count only waiters for this lock.
		var waiting int
		require.NoError(t, db.Get(&waiting, `SELECT COUNT(*) FROM pg_locks AS l,
	(SELECT hashtextextended(current_schema() || ':' || 'canonlog:projection:test_view', 0) AS k) AS key
WHERE l.locktype = 'advisory' AND NOT l.granted
  AND l.classid::bigint = (key.k >> 32) & 4294967295 AND l.objid::bigint = key.k & 4294967295`))
		require.Equal(t, 1, waiting)
		require.NoError(t, holder.Commit())
		require.NoError(t, <-done)
		holder, err = db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		_, err = holder.Exec(`SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':' || 'canonlog:projection:test_view', 0))`)
		require.NoError(t, err)
	}
	require.NoError(t, holder.Rollback())
	require.Equal(t, 3, count(t, db, "test_view"))
}
