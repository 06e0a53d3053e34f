package eventlog_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
)

// followTimeout bounds waits on a follower. On PostgreSQL the horizon is
// server-wide: transactions of tests running in parallel (other packages
// too) delay followers, so waits are generous.
const followTimeout = 3 * time.Minute

func seqsOf(evs []eventlog.Event) []int64 {
	out := []int64{}
	for _, ev := range evs {
		out = append(out, ev.Seq)
	}
	return out
}

// pollUntil polls f until it has returned want events in total.
func pollUntil(t *testing.T, f *eventlog.Follower, want int) []eventlog.Event {
	t.Helper()
	ctx := context.Background()
	var got []eventlog.Event
	deadline := time.Now().Add(followTimeout)
	for len(got) < want {
		evs, err := f.Poll(ctx)
		require.NoError(t, err)
		got = append(got, evs...)
		if len(evs) == 0 {
			require.True(t, time.Now().Before(deadline), "follower delivered %d of %d events", len(got), want)
			time.Sleep(5 * time.Millisecond)
		}
	}
	return got
}

func TestFollow(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _ := setup(t, backend, nil)
		var entries []eventlog.Entry
		for i := range 25 {
			entries = append(entries, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: fmt.Sprint("h", i%2),
				Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		}
		res, err := log.AppendBatch(ctx, entries)
		require.NoError(t, err)

		t.Run("CatchUpInPages", func(t *testing.T) {
			f, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{PageSize: 10})
			require.NoError(t, err)
			got := pollUntil(t, f, 25)
			require.Len(t, got, 25)
			for i, ev := range got {
				require.Equal(t, res[i].Event.Seq, ev.Seq)
				require.JSONEq(t, string(entries[i].Payload), string(ev.Payload))
			}
			evs, err := f.Poll(ctx)
			require.NoError(t, err)
			require.Empty(t, evs)
		})

		t.Run("Filter", func(t *testing.T) {
			f, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{Filter: eventlog.Filter{HostID: "h1"}})
			require.NoError(t, err)
			got := pollUntil(t, f, 12)
			for _, ev := range got {
				require.Equal(t, "h1", ev.HostID)
			}
			// Caught up, the cursor moves past the events the filter
			// skipped, so the next poll does not read them again.
			evs, err := f.Poll(ctx)
			require.NoError(t, err)
			require.Empty(t, evs)
			if backend == "sqlite" {
				require.Equal(t, res[24].Event.Seq, f.Position().Seq) // an h0 event
			} else {
				require.Equal(t, int64(0), f.Position().Seq, "the cursor jumped to the horizon: %s", f.Position())
			}
		})

		t.Run("PositionAfterSeq", func(t *testing.T) {
			pos, err := log.PositionAfterSeq(ctx, res[19].Event.Seq)
			require.NoError(t, err)
			f, err := log.NewFollower(pos, nil)
			require.NoError(t, err)
			got := pollUntil(t, f, 5)
			require.Equal(t, seqsOf(resultsEvents(res[20:])), seqsOf(got))
			_, err = log.PositionAfterSeq(ctx, -1)
			require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
		})

		t.Run("ResumeFromPosition", func(t *testing.T) {
			// Stop after 7 events, resume from the saved position: every
			// event arrives exactly once across the two followers.
			var got []eventlog.Event
			f, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{PageSize: 4})
			require.NoError(t, err)
			for ev, err := range f.Events(ctx) {
				require.NoError(t, err)
				got = append(got, ev)
				if len(got) == 7 {
					break
				}
			}
			saved := f.Position()
			more, err := log.AppendBatch(ctx, entries[:3]) // new events while stopped
			require.NoError(t, err)
			f2, err := log.NewFollower(saved, nil)
			require.NoError(t, err)
			got = append(got, pollUntil(t, f2, 25-7+3)...)
			want := append(seqsOf(resultsEvents(res)), seqsOf(resultsEvents(more))...)
			require.Equal(t, want, seqsOf(got))
		})

		t.Run("Options", func(t *testing.T) {
			for _, o := range []eventlog.FollowOptions{
				{Filter: eventlog.Filter{AfterSeq: 3}},
				{Filter: eventlog.Filter{Limit: 3}},
				{PageSize: -1},
				{PageSize: eventlog.MaxPageSize + 1},
				{PollInterval: -time.Second},
				{Filter: eventlog.Filter{Kinds: []eventlog.Kind{"Bad"}}},
			} {
				_, err := log.NewFollower(eventlog.Position{}, &o)
				require.Error(t, err, "%+v", o)
			}
			_, err := log.NewFollower(eventlog.Position{Seq: -1}, nil)
			require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
			for _, err := range log.Follow(ctx, eventlog.Position{}, &eventlog.FollowOptions{PageSize: -1}) {
				require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
			}
		})
	})
}

func resultsEvents(res []eventlog.Result) []eventlog.Event {
	out := make([]eventlog.Event, len(res))
	for i, r := range res {
		out[i] = r.Event
	}
	return out
}

// TestFollowStopsOnCancel: cancelling the context ends Events promptly,
// also while it waits between polls, and leaves nothing running.
func TestFollowStopsOnCancel(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		log, _ := setup(t, backend, nil)
		ctx, cancel := context.WithCancel(context.Background())
		_, err := log.Append(ctx, entry("h", `{}`))
		require.NoError(t, err)
		// Wait until the event is readable (another transaction on the
		// server may hold the horizon back for a moment), so that the
		// hour-long interval below starts only after the first delivery.
		probe, err := log.NewFollower(eventlog.Position{}, nil)
		require.NoError(t, err)
		pollUntil(t, probe, 1)
		got := make(chan eventlog.Event, 10)
		done := make(chan error, 1)
		go func() {
			var ferr error
			for ev, err := range log.Follow(ctx, eventlog.Position{}, &eventlog.FollowOptions{PollInterval: time.Hour}) {
				if err != nil {
					ferr = err
					break
				}
				got <- ev
			}
			done <- ferr
		}()
		select {
		case <-got:
		case <-time.After(followTimeout):
			t.Fatal("the follower delivered nothing")
		}
		cancel() // the follower is now waiting out its hour-long interval
		select {
		case err := <-done:
			require.NoError(t, err, "cancellation ends the iteration without an error")
		case <-time.After(5 * time.Second):
			t.Fatal("the follower did not stop on cancel")
		}
	})
}

// TestFollowHeldTransaction is the reason the follower exists: on
// PostgreSQL a seq is assigned before its transaction commits, so an append
// held open while later appends commit makes "seq > last seen" skip it for
// ever. The follower must wait for it and deliver every event exactly once.
func TestFollowHeldTransaction(t *testing.T) {
	t.Parallel()
	dbtest.Admin(t) // skips (or fails) when PostgreSQL is unreachable
	ctx := context.Background()
	log, db := setup(t, "postgres", nil)

	a, err := log.Append(ctx, entry("a", `{"n":"a"}`))
	require.NoError(t, err)
	held, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = held.Rollback() })
	b, err := log.AppendTx(ctx, held, entry("b", `{"n":"b"}`))
	require.NoError(t, err)
	c, err := log.Append(ctx, entry("c", `{"n":"c"}`))
	require.NoError(t, err)
	d, err := log.Append(ctx, entry("d", `{"n":"d"}`))
	require.NoError(t, err)
	require.Less(t, b[0].Event.Seq, c.Event.Seq, "the held event took its seq first")

	// The hazard is real: a reader by seq sees c and d but not b, and
	// after d it would never look at b's seq again.
	naive, err := log.Query(ctx, eventlog.Filter{AfterSeq: a.Event.Seq})
	require.NoError(t, err)
	require.Equal(t, []int64{c.Event.Seq, d.Event.Seq}, seqsOf(naive))

	f, err := log.NewFollower(eventlog.Position{}, nil)
	require.NoError(t, err)
	got := pollUntil(t, f, 1)
	require.Equal(t, []int64{a.Event.Seq}, seqsOf(got))
	for range 5 {
		evs, err := f.Poll(ctx)
		require.NoError(t, err)
		require.Empty(t, evs, "c and d must wait for the held transaction")
	}

	require.NoError(t, held.Commit())
	got = append(got, pollUntil(t, f, 3)...)
	require.Equal(t, []int64{a.Event.Seq, b[0].Event.Seq, c.Event.Seq, d.Event.Seq}, seqsOf(got))

	// A held transaction that rolls back delivers nothing and then stops
	// holding the others back.
	held2, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = held2.Rollback() }) // a failure must not leave it blocking the schema's drop
	_, err = log.AppendTx(ctx, held2, entry("e", `{"n":"e"}`))
	require.NoError(t, err)
	g, err := log.Append(ctx, entry("g", `{"n":"g"}`))
	require.NoError(t, err)
	evs, err := f.Poll(ctx)
	require.NoError(t, err)
	require.Empty(t, evs)
	require.NoError(t, held2.Rollback())
	require.Equal(t, []int64{g.Event.Seq}, seqsOf(pollUntil(t, f, 1)))

	// Starting after a seq includes a held event with a higher seq that
	// commits later, even though a lower-tx event was already readable.
	held3, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = held3.Rollback() }) // a failure must not leave it blocking the schema's drop
	h, err := log.AppendTx(ctx, held3, entry("h", `{"n":"h"}`))
	require.NoError(t, err)
	i, err := log.Append(ctx, entry("i", `{"n":"i"}`))
	require.NoError(t, err)
	pos, err := log.PositionAfterSeq(ctx, g.Event.Seq)
	require.NoError(t, err)
	f2, err := log.NewFollower(pos, nil)
	require.NoError(t, err)
	require.NoError(t, held3.Commit())
	require.Equal(t, []int64{h[0].Event.Seq, i.Event.Seq}, seqsOf(pollUntil(t, f2, 2)))
}

// TestFollowConcurrentWriters: writers hold their transactions open for
// random times while others commit; the follower, running all along,
// delivers every committed event exactly once.
func TestFollowConcurrentWriters(t *testing.T) {
	t.Parallel()
	dbtest.Admin(t)
	ctx := context.Background()
	log, db := setup(t, "postgres", nil)

	const writers, perWriter = 4, 40
	var (
		mu        sync.Mutex
		committed = map[int64]bool{}
		wg        sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range perWriter {
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					t.Error(err)
					return
				}
				res, err := log.AppendTx(ctx, tx, entry(fmt.Sprint("w", w), fmt.Sprintf(`{"i":%d}`, i)))
				if err != nil {
					_ = tx.Rollback()
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				if rng.IntN(10) == 0 {
					_ = tx.Rollback() // an append that never lands
					continue
				}
				if err := tx.Commit(); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				committed[res[0].Event.Seq] = true
				mu.Unlock()
			}
		}()
	}

	// The follower polls all along; once the writers are done it is told
	// how many events committed and stops when it has them all.
	f, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{PageSize: 7})
	require.NoError(t, err)
	var target atomic.Int64
	target.Store(-1)
	delivered := map[int64]int{}
	followed := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(followTimeout)
		for {
			evs, err := f.Poll(ctx)
			if err != nil {
				followed <- err
				return
			}
			for _, ev := range evs {
				delivered[ev.Seq]++
			}
			if n := target.Load(); n >= 0 && int64(len(delivered)) >= n {
				followed <- nil
				return
			}
			if time.Now().After(deadline) {
				followed <- fmt.Errorf("follower delivered %d events, want %d", len(delivered), target.Load())
				return
			}
			if len(evs) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	wg.Wait()
	mu.Lock()
	target.Store(int64(len(committed)))
	mu.Unlock()
	require.NoError(t, <-followed)

	// Nothing more arrives: no event is delivered twice.
	for range 3 {
		evs, err := f.Poll(ctx)
		require.NoError(t, err)
		require.Empty(t, evs)
	}
	for seq, n := range delivered {
		require.Equal(t, 1, n, "seq %d delivered %d times", seq, n)
		require.True(t, committed[seq], "seq %d delivered but never committed", seq)
	}
	require.Len(t, delivered, len(committed))
}

// TestExplainFollow: the follower's page query reads the (tx_id, seq)
// index in order, with no Sort — which also proves it orders by the xid8
// column and not by its text form ("10" < "9"), a Sort the planner would
// otherwise need.
func TestExplainFollow(t *testing.T) {
	t.Parallel()
	dbtest.Admin(t)
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	fillLog(t, db, 20_000, true)

	rec := &recorder{}
	log, err := eventlog.New(recordingDB(t, b.URL, rec), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	f, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{PageSize: 100})
	require.NoError(t, err)
	// A transaction of another test on the server may hold the horizon
	// back for a moment: poll until the page is there.
	deadline := time.Now().Add(followTimeout)
	for {
		rec.reset()
		evs, err := f.Poll(context.Background())
		require.NoError(t, err)
		if len(evs) > 0 {
			require.Len(t, evs, 100)
			break
		}
		require.True(t, time.Now().Before(deadline), "the follower read nothing")
		time.Sleep(5 * time.Millisecond)
	}
	rec.mu.Lock()
	queries := rec.queries
	rec.mu.Unlock()
	require.Len(t, queries, 2, "a horizon read and a page read: %+v", queries)
	page := queries[1]
	require.Contains(t, page.sql, "ORDER BY tx_id, seq")
	plan := explain(t, db, page.sql, page.args)
	require.Empty(t, plan.find("Sort", "Seq Scan", "Bitmap Heap Scan"), "%s", plan)
	scans := plan.find("Index Scan")
	require.Len(t, scans, 1, "%s", plan)
	require.Equal(t, "event_log_tx_id_seq_idx", scans[0].IndexName, "%s", plan)
}

// startScenario is a log at the moment a start position is taken: events
// committed before it, and a held transaction that appended before it and
// commits after it.
type startScenario struct {
	log    *eventlog.Log
	db     *sqlx.DB
	before []eventlog.Event // committed before the start, in seq order
	held   []eventlog.Event // appended before the start, committed after it
	tx     *sqlx.Tx
}

// newStartScenario commits four events and opens a transaction that
// appends n events (a batch, or a single one) and stays open. On
// PostgreSQL one more event then commits, so the held events have seqs
// below the head: exactly the events a seq floor skips. SQLite's single
// writer rules that interleaving out (the later append would wait for the
// held transaction), which is why a floor is safe there.
func newStartScenario(t *testing.T, backend string, n int) *startScenario {
	t.Helper()
	ctx := context.Background()
	log, db := setup(t, backend, nil)
	s := &startScenario{log: log, db: db}
	var entries []eventlog.Entry
	for i := range 4 {
		entries = append(entries, entry("before", fmt.Sprintf(`{"before":%d}`, i)))
	}
	res, err := log.AppendBatch(ctx, entries)
	require.NoError(t, err)
	s.before = resultsEvents(res)

	s.tx, err = db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.tx.Rollback() }) // a failure must not leave it blocking the schema's drop
	entries = nil
	for i := range n {
		entries = append(entries, entry("held", fmt.Sprintf(`{"held":%d}`, i)))
	}
	res, err = log.AppendTx(ctx, s.tx, entries...)
	require.NoError(t, err)
	s.held = resultsEvents(res)

	if backend == "postgres" {
		mid, err := log.Append(ctx, entry("mid", `{"mid":true}`))
		require.NoError(t, err)
		s.before = append(s.before, mid.Event)
		require.Less(t, s.held[n-1].Seq, mid.Event.Seq, "the held events took their seqs before the head")
	}
	return s
}

// finish commits the held transaction and then one more event, the last
// to commit, and returns it.
func (s *startScenario) finish(t *testing.T) eventlog.Event {
	t.Helper()
	require.NoError(t, s.tx.Commit())
	late, err := s.log.Append(context.Background(), entry("late", `{"late":true}`))
	require.NoError(t, err)
	return late.Event
}

// followUntil polls f until it has delivered the event with seq last, and
// returns every event it delivered. On PostgreSQL a follower delivers in
// commit order, so when last is the last event to commit nothing can
// follow it.
func followUntil(t *testing.T, f *eventlog.Follower, last int64) []eventlog.Event {
	t.Helper()
	var got []eventlog.Event
	deadline := time.Now().Add(followTimeout)
	for {
		evs, err := f.Poll(context.Background())
		require.NoError(t, err)
		got = append(got, evs...)
		for _, ev := range evs {
			if ev.Seq == last {
				return got
			}
		}
		if len(evs) == 0 {
			require.True(t, time.Now().Before(deadline), "follower delivered %v, still waiting for seq %d", seqsOf(got), last)
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// roundTrip persists a position as JSON and reads it back, as a consumer
// that saves its position does.
func roundTrip(t *testing.T, pos eventlog.Position) eventlog.Position {
	t.Helper()
	b, err := json.Marshal(pos)
	require.NoError(t, err)
	var back eventlog.Position
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, pos, back, "%s", b)
	return back
}

// TestFollowStartPositions: a follower from a start position delivers
// every event that commits after the start — a batch or a single event
// appended before the start and committed after it included, however low
// their seqs — exactly once, and of the events committed before the start
// exactly those the position promises.
func TestFollowStartPositions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	starts := []struct {
		name string
		// take returns the start position and the events committed before
		// the start that a follower from it must deliver.
		take func(t *testing.T, s *startScenario) (eventlog.Position, []eventlog.Event)
	}{
		{"Head", func(t *testing.T, s *startScenario) (eventlog.Position, []eventlog.Event) {
			pos, err := s.log.PositionAtHead(ctx)
			require.NoError(t, err)
			return pos, nil
		}},
		{"AfterSeqOfHead", func(t *testing.T, s *startScenario) (eventlog.Position, []eventlog.Event) {
			pos, err := s.log.PositionAfterSeq(ctx, s.before[len(s.before)-1].Seq)
			require.NoError(t, err)
			return pos, nil
		}},
		{"AfterSeqInside", func(t *testing.T, s *startScenario) (eventlog.Position, []eventlog.Event) {
			pos, err := s.log.PositionAfterSeq(ctx, s.before[1].Seq)
			require.NoError(t, err)
			return pos, s.before[2:]
		}},
		{"AfterSeqBeyondHead", func(t *testing.T, s *startScenario) (eventlog.Position, []eventlog.Event) {
			// Nothing about a seq says when its event commits: events
			// committing later are delivered whatever their seqs.
			pos, err := s.log.PositionAfterSeq(ctx, s.before[len(s.before)-1].Seq+1000)
			require.NoError(t, err)
			return pos, nil
		}},
		{"Zero", func(t *testing.T, s *startScenario) (eventlog.Position, []eventlog.Event) {
			return eventlog.Position{}, s.before
		}},
	}
	for _, shape := range []struct {
		name string
		n    int
	}{{"Batch", 30}, {"Single", 1}} {
		for _, start := range starts {
			t.Run(start.name+"/"+shape.name, func(t *testing.T) {
				t.Parallel()
				dbtest.Run(t, func(t *testing.T, backend string) {
					s := newStartScenario(t, backend, shape.n)
					pos, wantBefore := start.take(t, s)
					late := s.finish(t)

					f, err := s.log.NewFollower(roundTrip(t, pos), &eventlog.FollowOptions{PageSize: 7})
					require.NoError(t, err)
					got := followUntil(t, f, late.Seq)
					want := append(append(append([]eventlog.Event{}, wantBefore...), s.held...), late)
					require.ElementsMatch(t, seqsOf(want), seqsOf(got), "from %s", pos)
					if backend == "postgres" {
						// Past every transaction of the start, the position
						// is a plain cursor again.
						require.Empty(t, f.Position().Snapshot, "%s", f.Position())
						require.Zero(t, f.Position().AfterSeq, "%s", f.Position())
					}
				})
			})
		}
	}
}

// TestFollowPositionAtHeadTx: the log's state read in a transaction plus a
// follower from PositionAtHeadTx of that transaction see every event
// exactly once — here the last two events read in it, then a batch that
// was running when the transaction began and commits before the position
// is taken, but after the transaction's snapshot.
func TestFollowPositionAtHeadTx(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		s := newStartScenario(t, backend, 30)
		read, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
		require.NoError(t, err)
		defer func() { _ = read.Rollback() }()
		all, err := s.log.QueryTx(ctx, read, eventlog.Filter{Limit: eventlog.MaxQueryLimit})
		require.NoError(t, err)
		require.Equal(t, seqsOf(s.before), seqsOf(all), "the transaction reads what had committed")
		last2 := all[len(all)-2:]

		late := s.finish(t) // commits after the transaction's snapshot
		pos, err := s.log.PositionAtHeadTx(ctx, read)
		require.NoError(t, err)
		require.NoError(t, read.Rollback())

		f, err := s.log.NewFollower(roundTrip(t, pos), nil)
		require.NoError(t, err)
		got := followUntil(t, f, late.Seq)
		require.ElementsMatch(t, seqsOf(append(append([]eventlog.Event{}, s.held...), late)), seqsOf(got))
		require.NotContains(t, seqsOf(got), last2[0].Seq)
		require.NotContains(t, seqsOf(got), last2[1].Seq)
	})
}

// TestFollowResumeFromStart: a position saved mid-way through what a start
// position promised, still holding the start's snapshot, keeps the promise
// after a JSON round trip: the rest of a held batch with seqs below the
// start's floor is delivered, each event once.
func TestFollowResumeFromStart(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		s := newStartScenario(t, backend, 30)
		pos, err := s.log.PositionAtHead(ctx)
		require.NoError(t, err)
		late := s.finish(t)

		f, err := s.log.NewFollower(pos, &eventlog.FollowOptions{PageSize: 5})
		require.NoError(t, err)
		got := pollUntil(t, f, 1)
		require.Equal(t, seqsOf(s.held[:5]), seqsOf(got), "the first page is the start of the held batch")
		saved := f.Position()
		if backend == "postgres" {
			require.NotEmpty(t, saved.Snapshot, "mid-way, the position still needs the start's snapshot: %s", saved)
			require.Positive(t, saved.AfterSeq, "%s", saved)
		}

		f2, err := s.log.NewFollower(roundTrip(t, saved), &eventlog.FollowOptions{PageSize: 5})
		require.NoError(t, err)
		got = append(got, followUntil(t, f2, late.Seq)...)
		require.ElementsMatch(t, seqsOf(append(append([]eventlog.Event{}, s.held...), late)), seqsOf(got))
	})
}

// TestFollowStartPositionRefused: malformed start positions and
// transactions that cannot hold one are refused with ErrInvalidFilter.
func TestFollowStartPositionRefused(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)
		_, err := log.Append(ctx, entry("h", `{}`))
		require.NoError(t, err)

		if backend == "sqlite" {
			_, err := log.NewFollower(eventlog.Position{AfterSeq: 1, Snapshot: "5:10:"}, nil)
			require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
			require.ErrorContains(t, err, "holds a PostgreSQL snapshot")
			return
		}
		for _, snap := range []string{"x", "5:10", "0:10:", "10:5:", "5:10:12", "5:10:4", "5:10:8,7", "5:10:a"} {
			_, err := log.NewFollower(eventlog.Position{TxID: 5, AfterSeq: 1, Snapshot: snap}, nil)
			require.ErrorIs(t, err, eventlog.ErrInvalidFilter, snap)
			require.ErrorContains(t, err, "snapshot", snap)
		}
		_, err = log.NewFollower(eventlog.Position{TxID: 5, AfterSeq: 1, Snapshot: "5:10:7,7,9"}, nil)
		require.NoError(t, err, "PostgreSQL accepts a repeated running transaction")

		committed, err := db.BeginTxx(ctx, nil) // READ COMMITTED: a snapshot per statement
		require.NoError(t, err)
		defer func() { _ = committed.Rollback() }()
		_, err = log.PositionAtHeadTx(ctx, committed)
		require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
		require.ErrorContains(t, err, "READ COMMITTED")

		wrote, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
		require.NoError(t, err)
		defer func() { _ = wrote.Rollback() }()
		_, err = log.AppendTx(ctx, wrote, entry("h", `{}`))
		require.NoError(t, err)
		_, err = log.PositionAtHeadTx(ctx, wrote)
		require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
		require.ErrorContains(t, err, "has written")
	})
}

// Read the log's current state, then follow what commits after it: the
// read and the follower share one snapshot, so every event is seen once.
func ExampleLog_PositionAtHeadTx() {
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		panic(err)
	}
	log, err := eventlog.New(db, &eventlog.Config{Clock: eventlogtest.NewFakeClock(t0)})
	if err != nil {
		panic(err)
	}
	for _, p := range []string{`{"n":1}`, `{"n":2}`} {
		if _, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(p)}); err != nil {
			panic(err)
		}
	}

	tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		panic(err)
	}
	state, err := log.QueryTx(ctx, tx, eventlog.Filter{})
	if err != nil {
		panic(err)
	}
	pos, err := log.PositionAtHeadTx(ctx, tx)
	if err != nil {
		panic(err)
	}
	_ = tx.Rollback()
	for _, ev := range state {
		fmt.Println("state:", string(ev.Payload))
	}

	if _, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{"n":3}`)}); err != nil {
		panic(err)
	}
	f, err := log.NewFollower(pos, nil)
	if err != nil {
		panic(err)
	}
	news, err := f.Poll(ctx)
	if err != nil {
		panic(err)
	}
	for _, ev := range news {
		fmt.Println("new:", string(ev.Payload))
	}
	// Output:
	// state: {"n":1}
	// state: {"n":2}
	// new: {"n":3}
}
